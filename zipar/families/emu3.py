"""Emu3-Gen (BAAI) as a ZipAR family, from either published folder layout.

Emu3 is one Llama-style model over a text vocabulary that also holds 32768 visual tokens
named ``<|visual token NNNNNN|>``. An image is written as rows of W visual tokens, each row
closed by an end-of-line token ``<|extra_200|>``, then ``<|extra_201|>`` (end of frame),
``<|image end|>`` and ``<|extra_204|>`` (end). Positions are the index in that sequence,
row ends included, which ``SequenceSession`` reproduces; row ends and the closing tokens
are placed, never sampled, and sampling is restricted to the visual tokens (only their
rows of the output matrix are kept).

Prompt (baaivision/Emu3's generation example): BOS ``<|extra_203|>`` + prompt + the quality
suffix, then ``<|image start|>`` + ``"{H}*{W}"`` (token rows, token columns) + ``<|image token|>``.
The suffix is the example's user code, not the model's or its processor's, so a condition may
switch it off (``Condition.quality_suffix``); it is never added to a prompt that already ends
with it. The unconditional branch is a negative prompt built the same way as in the official
repository (BOS + text + the same image prefix, no suffix); its length differs, so it is
left-padded and masked, with its own positions from 0. Defaults: CFG 3, top-k 2048.
Sizes: the folder's ``image_area`` (720 x 720 pixels, 90 x 90 tokens, in the release) at any
aspect ratio, as the official processor computes them.

Folders: ``BAAI/Emu3-Gen-hf`` (model_type "emu3": language model under ``text_model``
plus the VQ) and the original ``BAAI/Emu3-Gen`` (model_type "Emu3": ``model.*`` and
``lm_head``; its VQ is the separate ``BAAI/Emu3-VisionTokenizer`` folder).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io import hf_folder
from ..nets.llama_lm import LlamaConfig
from .base import Condition, SamplingDefaults, parse_aspect_ratio
from .registry import register
from ..vq.emu3 import HF_MODEL_TYPE, ORIGINAL_LM_MODEL_TYPE
from .sequence import VisualTokenGenerator, VisualTokenModel, code_ids_by_name, special_ids, visual_token_generator

HF_TYPE, ORIGINAL_TYPE = HF_MODEL_TYPE, ORIGINAL_LM_MODEL_TYPE
HINT = ("use the complete BAAI/Emu3-Gen-hf folder, or the original BAAI/Emu3-Gen folder (with BAAI/Emu3-VisionTokenizer "
        "as the VQ), with config.json, the weights and the tokenizer files from one download")
ORIGINAL_TOKENIZER_HINT = (
    "the original BAAI/Emu3-Gen folder's tokenizer is remote code (tiktoken), which ZipAR never runs: copy "
    "tokenizer.json, tokenizer_config.json and special_tokens_map.json from BAAI/Emu3-Gen-hf into this folder")
TOKENS = {"bos": "<|extra_203|>", "boi": "<|image start|>", "img": "<|image token|>", "eol": "<|extra_200|>",
          "eof": "<|extra_201|>", "eoi": "<|image end|>", "eos": "<|extra_204|>"}
VISUAL = re.compile(r"^<\|visual token (\d+)\|>$")
POSITIVE_SUFFIX = " masterpiece, film grained, best quality."
NEGATIVE_PROMPT = ("lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
                   "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.")
IMAGE_AREA = 720 * 720  # pixels, when the folder's config states none (the release's value)
DOWNSAMPLE = 8
MAX_RATIO = 4.0
DEFAULTS = SamplingDefaults(cfg=3.0, temperature=1.0, top_k=2048, top_p=1.0)


def detect(config: dict) -> str | None:
    kind = config.get("model_type")
    if kind == HF_TYPE:
        return "hf"
    if kind == ORIGINAL_TYPE:
        return "original"
    return None


def visual_code(name: str) -> int | None:
    """Code of a visual token name (``<|visual token 000123|>`` -> 123), None for other tokens."""
    m = VISUAL.match(name)
    return None if m is None else int(m.group(1))


def split_state_dict(keys: set[str], fmt: str, folder: Path) -> tuple[dict[str, str], str]:
    """Our language-model names -> file keys, and the file key of the output matrix."""
    if fmt == "hf":
        candidates = ("text_model.model.", "model.text_model.", "text_model.")
        heads = ("lm_head.weight", "text_model.lm_head.weight")
    else:
        candidates = ("model.",)
        heads = ("lm_head.weight",)
    prefix = next((p for p in candidates if any(k.startswith(p + "layers.") for k in keys)), None)
    if prefix is None:
        raise ZipARError(f"'{folder}' has no Emu3 language-model weights (keys like {candidates[0]}layers.0...); {HINT}.")
    lm = {k[len(prefix):]: k for k in keys if k.startswith(prefix) and not k[len(prefix):].startswith(("vqmodel.", "text_model."))}
    head = next((h for h in heads if h in keys), None) or f"{prefix}embed_tokens.weight"  # tied output
    return lm, head


def load_emu3(folder: str | Path, device: torch.device, dtype: torch.dtype, config: dict | None = None) -> "Emu3GenModel":
    folder = Path(folder)
    config = config or hf_folder.read_config(folder, HINT)
    fmt = detect(config)
    if fmt is None:
        raise ZipARError(f"'{folder}' is not an Emu3-Gen folder (model_type {config.get('model_type')!r}); {HINT}.")
    text = config.get("text_config", config) if fmt == "hf" else config
    cfg = LlamaConfig.from_dict(text, f"{folder}/config.json")
    tokenizer = hf_folder.load_tokenizer(folder, HINT if fmt == "hf" else ORIGINAL_TOKENIZER_HINT)
    vocab = tokenizer.get_vocab()
    if fmt == "hf" and isinstance(config.get("vocabulary_map"), dict):
        vocab = {**config["vocabulary_map"], **vocab}
    code_ids = code_ids_by_name(vocab, visual_code, "visual tokens (<|visual token NNNNNN|>)", folder, HINT)
    special = special_ids(vocab, TOKENS, folder, HINT)
    special["pad"] = special["eos"]
    keys = hf_folder.keys_by_file(folder, HINT)
    lm_keys, head_key = split_state_dict(hf_folder.all_keys(keys), fmt, folder)
    net = visual_token_generator(cfg, keys, lm_keys, head_key, code_ids, folder, HINT, device, dtype)
    mult = config.get("vq_config", {}).get("channel_multiplier") if fmt == "hf" else None
    downsample = 2 ** (len(mult) - 1) if isinstance(mult, list) and mult else DOWNSAMPLE
    return Emu3GenModel(net, tokenizer, special, str(folder), fmt, image_area(folder, config), downsample)


def image_area(folder: Path, config: dict) -> int:
    """The pixel area the folder's own config states (the original release's ``image_area``; a
    transformers folder may carry it in its processor config), else the release's 720 x 720."""
    sources = [config]
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (folder / name).is_file():
            sources.append(hf_folder.read_json(folder / name, "processor config"))
    for source in sources:
        area = source.get("image_area")
        if isinstance(area, (int, float)) and not isinstance(area, bool) and area > 0:
            return int(area)
    return IMAGE_AREA


def generate_size(ratio: str, area: int, downsample: int = DOWNSAMPLE) -> tuple[int, int]:
    """Token rows and columns for an aspect ratio "W:H" at a pixel area (transformers' and Emu3's rule)."""
    w, h = parse_aspect_ratio(ratio, "Emu3-Gen", MAX_RATIO)
    scale = (area / (w * h)) ** 0.5
    return int(round(h * scale / downsample)), int(round(w * scale / downsample))


def with_suffix(prompt: str, suffix: str) -> str:
    """``prompt + suffix``, unless the prompt already ends with the suffix (spaces aside)."""
    if suffix and prompt.rstrip().endswith(suffix.strip()):
        return prompt
    return prompt + suffix


@register
class Emu3GenModel(VisualTokenModel):
    """Emu3-Gen for the decode loop: size-tagged prompts, row-end tokens, visual-token logits."""

    family = "emu3"
    title = "Emu3-Gen"
    row0_first = True  # no official ZipAR code for Emu3: the paper's rule (LlamaGen's), row 0 first
    closing = ("eof", "eoi", "eos")
    defaults = DEFAULTS
    vq_hint = ("the Emu3-Gen-hf folder itself (its VQ is read from it), or the BAAI/Emu3-VisionTokenizer folder "
               "for the original BAAI/Emu3-Gen")
    hint = "Emu3-Gen folders (BAAI/Emu3-Gen-hf with its VQ, or BAAI/Emu3-Gen with BAAI/Emu3-VisionTokenizer as the VQ)"

    def __init__(self, net: VisualTokenGenerator, tokenizer, special: dict[str, int], source_path: str, fmt: str,
                 area: int = IMAGE_AREA, downsample: int = DOWNSAMPLE):
        super().__init__(net, tokenizer, special, source_path)
        self.format = fmt
        self.image_area = area  # native pixel area, kept exactly (it need not be a square number)
        self.downsample = downsample  # its own VQ's pixels per token, when the folder says (else the release's 8)

    load = staticmethod(load_emu3)

    @classmethod
    def is_own_config(cls, config: dict) -> bool:
        return detect(config) is not None

    @property
    def image_size(self) -> int:
        """The side of the native area, as the nodes show sizes; setting it sets the area to its square."""
        return round(self.image_area ** 0.5)

    @image_size.setter
    def image_size(self, side: int) -> None:
        self.image_area = int(side) * int(side)

    def describe(self) -> str:
        c = self.config
        return (f"Emu3-Gen ({c.layers} layers, width {c.hidden}, {self.vocab_size} visual tokens, "
                f"{'transformers' if self.format == 'hf' else 'original'} folder)")

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        """Token rows and columns at the condition's aspect ratio; ``image_size`` None, 0 or the native
        side means the folder's own pixel area, exactly as the official processor is given it;
        ``downsample`` is the VQ's pixels per token (None: the folder's own VQ's)."""
        ratio = self.ratio_of(cond)
        area = self.image_area if image_size in (None, 0, self.image_size) else image_size * image_size
        grid = generate_size(ratio, area, downsample or self.downsample)
        self.check_image_length(grid)  # a size beyond the trained sequence fails here, at loading time in ComfyUI
        return grid

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def prompt_ids(self, prompt: str, grid: tuple[int, int], suffix: str = POSITIVE_SUFFIX) -> list[int]:
        sp = self.special
        return [sp["bos"], *self._encode(with_suffix(prompt, suffix)), sp["boi"],
                *self._encode(f"{grid[0]}*{grid[1]}"), sp["img"]]

    def prompt_rows(self, cond: Condition, guidance: bool, grid: tuple[int, int] | None = None) -> list[list[int]]:
        grid = grid or self.grid_for(cond)
        suffix = POSITIVE_SUFFIX if getattr(cond, "quality_suffix", True) else ""
        rows = [self.prompt_ids(p, grid, suffix) for p in cond.prompts]
        if guidance:
            negatives = cond.negative_prompts or [""] * len(cond.prompts)
            rows += [self.prompt_ids(n.strip() or NEGATIVE_PROMPT, grid, suffix="") for n in negatives]
        return rows
