"""A fifth model family written the way the checklist in docs/engine.md says: one module.

"ZipAR-Toy" is a tiny class-conditional model: a Llama decoder (``zipar.nets.llama_lm``)
whose prompt is one class token, image codes embedded by a table of their own and read out
by a head of their own, saved as a folder (``config.json`` with model_type "zipar-toy" and
``model.safetensors``). Importing this module registers the family; nothing else in the
pack is edited for it, which ``tests/families/test_toy_family.py`` checks end to end through
the API, the command line and the ComfyUI nodes.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from zipar.errors import ZipARError
from zipar.families.base import Condition, Family, SamplingDefaults
from zipar.families.registry import register
from zipar.families.sequence import PromptBatch, SequenceSession
from zipar.io import hf_folder
from zipar.nets.llama_lm import LlamaConfig, LlamaLM, lm_from_state_dict

MODEL_TYPE = "zipar-toy"
HINT = "ZipAR-Toy folders (config.json with model_type 'zipar-toy' and model.safetensors)"


class ToyNet(nn.Module):
    """The language model plus an image-code embedding and an image-code head."""

    def __init__(self, cfg: LlamaConfig, codes: int):
        super().__init__()
        self.lm = LlamaLM(cfg)
        self.code_embed = nn.Embedding(codes, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, codes, bias=False)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.code_embed(codes)

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).float()


@register
class ToyModel(Family):
    family = "zipar-toy"
    title = "ZipAR-Toy"
    reads = "class_ids"
    row0_first = True
    defaults = SamplingDefaults(cfg=2.0, temperature=1.0, top_k=0, top_p=1.0)
    hint = HINT

    def __init__(self, net: ToyNet, classes: int, side: int, source_path: str):
        self.net, self.classes, self.side, self.source_path = net, classes, side, source_path
        self.vocab_size = net.head.out_features

    @classmethod
    def detect(cls, path: Path) -> bool:
        config = hf_folder.folder_config(path)
        return config is not None and config.get("model_type") == MODEL_TYPE

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "ToyModel":
        config = hf_folder.read_config(path, HINT)
        cfg = LlamaConfig.from_dict(config, f"{path}/config.json")
        raw = hf_folder.read_tensors(hf_folder.keys_by_file(path, HINT), lambda k: True)
        lm = lm_from_state_dict(cfg, {k[3:]: v for k, v in raw.items() if k.startswith("lm.")}, str(path), device, dtype)
        with torch.device("meta"):
            net = ToyNet(cfg, raw["head.weight"].shape[0])
        net.lm = lm
        net.load_state_dict({k: v.to(dtype) for k, v in raw.items() if not k.startswith("lm.")}, strict=False, assign=True)
        net = net.to(device).eval().requires_grad_(False)
        return cls(net, int(config["num_classes"]), int(config["image_size"]), str(path))

    @property
    def device(self) -> torch.device:
        return self.net.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.head.weight.dtype

    @property
    def native_image_size(self) -> int:
        return self.side

    def describe(self) -> str:
        return f"ZipAR-Toy ({self.classes} classes, {self.vocab_size} codes)"

    def code_embeddings(self) -> torch.Tensor:
        return self.net.code_embed.weight

    def check_condition(self, cond: Condition) -> None:
        self.check_condition_kind(cond)
        bad = [i for i in cond.class_ids if not 0 <= int(i) < self.classes]
        if bad:
            raise ZipARError(f"class id {bad[0]} is out of range: this model knows classes 0..{self.classes - 1}.")

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        side = (image_size or self.side) // (downsample or 16)
        return side, side

    def start(self, cond: Condition, grid: tuple[int, int], guidance: bool, pool=None) -> SequenceSession:
        self.check_condition(cond)
        rows = [[int(c)] for c in cond.class_ids] + ([[self.classes]] * len(cond) if guidance else [])
        return SequenceSession(self.net, PromptBatch.left_padded(rows, 0, self.device, pool), grid, None, pool)

    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        return self.net.lm.config.cache_bytes(rows, 1 + grid[0] * grid[1], self.dtype, self.kv_dtype)


def write_toy_folder(folder: Path, codes: int = 64, classes: int = 4, seed: int = 0, image_size: int = 64) -> Path:
    """A ZipAR-Toy folder with random weights (the class table has a null row for guidance)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": MODEL_TYPE, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": classes + 1, "num_classes": classes,
              "image_size": image_size, "max_position_embeddings": 4096}
    torch.manual_seed(seed)
    net = ToyNet(LlamaConfig.from_dict(config), codes)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
