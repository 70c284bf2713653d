"""flan-t5-xl caption features for LlamaGen's text-to-image models, through transformers.

LlamaGen's t2i models were trained on the encoder's last hidden states of 120 tokens
(padded to that length, truncated beyond it); anything else shifts the prefix they expect.
The official sampler's caption cleaning needs extra packages; we apply its fallback
(lower-case and strip), which leaves ordinary prompts unchanged in practice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .io.checkpoint import load_error_detail
from .errors import ZipARError
from .conditions import caption_condition
from .families.base import Condition

MAX_TOKENS = 120


class T5TextEncoder:
    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ZipARError(
                f"{folder} is not a Hugging Face model folder (no config.json). Download google/flan-t5-xl "
                "into a folder and point the text encoder at it."
            )
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as exc:
            raise ZipARError("text-to-image needs the transformers package: pip install transformers sentencepiece") from exc
        fix = (f"download google/flan-t5-xl completely into '{folder}' (config.json, the tokenizer files and "
               "the weights)")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ZipARError(f"the config.json in '{folder}' is not readable JSON ({exc}); {fix}.") from exc
        if not isinstance(config, dict):
            raise ZipARError(f"the config.json in '{folder}' is not a JSON object; {fix}.")
        model_type = config.get("model_type", "t5")
        if model_type != "t5":  # transformers would load it with random or mismatched weights, or fail obscurely
            raise ZipARError(f"'{folder}' holds a {model_type!r} model, not the T5 text encoder; {fix}.")
        try:  # local files only: a broken folder must never turn into a download from the internet
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True)
        except ImportError as exc:  # e.g. a slow (sentencepiece) tokenizer without the package
            raise ZipARError(f"loading the T5 text encoder from '{folder}' needs a missing package ({exc}); "
                             "pip install transformers sentencepiece") from exc
        except Exception as exc:  # transformers raises OSError, ValueError, RuntimeError ... for broken folders
            detail = load_error_detail(exc)
            raise ZipARError(f"cannot load the T5 text encoder from '{folder}' ({detail}); {fix}.") from exc
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> features [N, 120, hidden] float32 and mask [N, 120] bool (right-padded, as T5 gives them)."""
        batch = self.tokenizer(
            [p.lower().strip() for p in prompts], max_length=MAX_TOKENS, padding="max_length",
            truncation=True, return_tensors="pt",
        )
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        feats = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return feats.float().cpu(), mask.bool().cpu()

    def condition(self, prompts: list[str]) -> Condition:
        feats, mask = self.encode(prompts)
        return caption_condition(feats, mask, labels=list(prompts))


def load_caption_embeddings(path: str | os.PathLike) -> Condition:
    """A .safetensors file with ``features`` [N, 120, C] and optionally ``mask`` [N, 120]."""
    from .io.checkpoint import read_state_dict

    sd = read_state_dict(path)
    if "features" not in sd:
        raise ZipARError(f"{path} has no 'features' tensor; expected caption features [images, 120, 2048] (and 'mask').")
    return caption_condition(sd["features"].float(), sd.get("mask"))
