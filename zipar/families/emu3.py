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
import torch.nn as nn

from ..errors import ZipARError
from ..io import hf_folder
from .base import ASPECT_RATIOS, Condition, parse_aspect_ratio
from .janus import load_tokenizer
from ..nets.llama_lm import LlamaConfig, lm_from_state_dict
from .sequence import VisualTokenGenerator, VisualTokenModel

HF_TYPE, ORIGINAL_TYPE = "emu3", "Emu3"
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
DEFAULTS = {"cfg": 3.0, "temperature": 1.0, "top_k": 2048, "top_p": 1.0}


def detect(config: dict) -> str | None:
    kind = config.get("model_type")
    if kind == HF_TYPE:
        return "hf"
    if kind == ORIGINAL_TYPE:
        return "original"
    return None


def visual_ids(vocab: dict[str, int], folder: Path) -> torch.Tensor:
    """Vocabulary id of each visual code, by token name (code n = ``<|visual token n|>``)."""
    found = {int(m.group(1)): i for name, i in vocab.items() if (m := VISUAL.match(name))}
    if not found:
        raise ZipARError(f"the tokenizer in '{folder}' has no <|visual token NNNNNN|> entries; {HINT}.")
    codes = len(found)
    if sorted(found) != list(range(codes)):
        raise ZipARError(f"the tokenizer in '{folder}' numbers its visual tokens with gaps; {HINT}.")
    return torch.tensor([found[c] for c in range(codes)], dtype=torch.long)


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
    tokenizer = load_tokenizer(folder, HINT if fmt == "hf" else ORIGINAL_TOKENIZER_HINT)
    vocab = tokenizer.get_vocab()
    if fmt == "hf" and isinstance(config.get("vocabulary_map"), dict):
        vocab = {**config["vocabulary_map"], **vocab}
    code_ids = visual_ids(vocab, folder)
    special = {}
    for name, token in TOKENS.items():
        if token not in vocab:
            raise ZipARError(f"the tokenizer in '{folder}' lacks {token}; {HINT}.")
        special[name] = int(vocab[token])
    special["pad"] = special["eos"]
    keys = hf_folder.keys_by_file(folder, HINT)
    lm_keys, head_key = split_state_dict(hf_folder.all_keys(keys), fmt, folder)
    wanted = set(lm_keys.values()) | {head_key}
    raw = hf_folder.read_tensors(keys, lambda k: k in wanted)
    lm = lm_from_state_dict(cfg, {ours: raw[theirs] for ours, theirs in lm_keys.items()}, str(folder), device, dtype)
    if int(code_ids.max()) >= raw[head_key].shape[0]:
        raise ZipARError(f"'{folder}': the tokenizer's visual ids exceed the model's vocabulary; {HINT}.")
    with torch.device("meta"):
        net = VisualTokenGenerator(cfg, len(code_ids))
    net.lm = lm
    net.image_head.weight = nn.Parameter(raw[head_key][code_ids].to(device=device, dtype=dtype), requires_grad=False)
    net.code_ids = code_ids.to(device)
    net = net.eval().requires_grad_(False)
    model = Emu3GenModel(net, tokenizer, special, str(folder), fmt, image_area(folder, config))
    mult = config.get("vq_config", {}).get("channel_multiplier") if fmt == "hf" else None
    if isinstance(mult, list) and mult:
        model.downsample = 2 ** (len(mult) - 1)
    return model


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


class Emu3GenModel(VisualTokenModel):
    """Emu3-Gen for the decode loop: size-tagged prompts, row-end tokens, visual-token logits."""

    family = "emu3"
    row0_first = True  # no official ZipAR code for Emu3: the paper's rule (LlamaGen's), row 0 first
    title = "Emu3-Gen"
    closing = ("eof", "eoi", "eos")
    defaults = DEFAULTS
    aspect_ratios = ASPECT_RATIOS

    def __init__(self, net: VisualTokenGenerator, tokenizer, special: dict[str, int], source_path: str, fmt: str,
                 area: int = IMAGE_AREA):
        super().__init__(net, tokenizer, special, source_path)
        self.format = fmt
        self.image_area = area  # native pixel area, kept exactly (it need not be a square number)
        self.downsample = DOWNSAMPLE

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

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None) -> tuple[int, int]:
        """Token rows and columns at the condition's aspect ratio; ``image_size`` None, 0 or the native
        side means the folder's own pixel area, exactly as the official processor is given it."""
        ratio = self.ratio_of(cond)
        area = self.image_area if image_size in (None, 0, self.image_size) else image_size * image_size
        grid = generate_size(ratio, area, self.downsample)
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
