"""Lumina-mGPT (Alpha-VLLM, Chameleon architecture) as a ZipAR family.

Lumina-mGPT is Meta's Chameleon (a Llama decoder with a LayerNorm per head on queries and
keys) fine-tuned to draw. Its 65536-token vocabulary holds the 8192 VQGAN codes as tokens
named ``IMGIMG<digits as letters A-J>Z``; the id order is not the code order, so codes map
to ids by name (the release's ``config.json`` carries the whole ``vocabulary_map``).

One image, as the official code writes it:

    BOS "Generate an image of {W}x{H} according to the following prompt:\\n{prompt}" <reserved08706>
    <racm3:break> <reserved{8800+H/32:05d}> <reserved{8800+W/32:05d}>  (begin of image, height, width)
    H/16 rows of W/16 image tokens, each followed by <reserved08799>   (end of line, the last row too)
    <eoss> <reserved08706>                                             (end of image, end of turn)

Upstream samples the begin-of-image and size tokens; here they are placed from the requested
size, as the row ends are. Positions are the index in that sequence (``SequenceSession``).
The unconditional CFG branch is the official one: the sequence from begin-of-image on, no
text, its own positions from 0. Sizes are multiples of 32 pixels from the official crop list
(``crop_sizes``): 512 -> 32x32 tokens, 768 -> 48x48, 1024 -> 64x64, other shapes up to 4:1.

Stock transformers masks every image-token logit in ``ChameleonForConditionalGeneration``
and ships no VQ decoder; the layers here are our own (``LlamaLM`` with ``qk_norm``) under the
same parameter names, and the image logits are the image rows of ``lm_head``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io import hf_folder
from ..nets.llama_lm import LlamaConfig
from .base import Condition, SamplingDefaults, parse_aspect_ratio
from .registry import register
from ..vq.chameleon import LUMINA_MODEL_TYPE
from .sequence import VisualTokenGenerator, VisualTokenModel, code_ids_by_name, special_ids, visual_token_generator

MODEL_TYPE = LUMINA_MODEL_TYPE
HINT = ("use a complete Alpha-VLLM/Lumina-mGPT-7B-512, -7B-768, -7B-768-Omni or -7B-1024 folder (config.json, the "
        "safetensors shards and the tokenizer files from one download)")
TOKENS = {"eot": "<reserved08706>", "boi": "<racm3:break>", "eoi": "<eoss>", "eol": "<reserved08799>"}
IMAGE_TOKEN = re.compile(r"^IMGIMG([A-J]+)Z$")
PROMPT = "Generate an image of {width}x{height} according to the following prompt:\n{prompt}"
PATCH = 32  # pixels per size-token unit: image sides are multiples of it
DOWNSAMPLE = 16  # pixels per image token (the Chameleon VQGAN)
MAX_RATIO = 4.0
DEFAULT_SIZE = 768
# The official README runs cfg 4.0 with image top-k 2000 at temperature 1 (its processor's default cfg is 3.0).
DEFAULTS = SamplingDefaults(cfg=4.0, temperature=1.0, top_k=2000, top_p=1.0)


def detect(config: dict) -> bool:
    """A Chameleon folder that is not Lumina-mGPT 2.0's (the same model type, a far larger vocabulary)."""
    from .lumina2 import detect as is_lumina2

    return config.get("model_type") == MODEL_TYPE and not is_lumina2(config)


def size_token(n: int) -> str:
    """The token that says "n x 32 pixels" (id 8804 + n in the release)."""
    return f"<reserved{8800 + n:05d}>"


def image_code(name: str) -> int | None:
    """Code of an image token name (IMGIMGBCDZ -> 123), None for other tokens."""
    m = IMAGE_TOKEN.match(name)
    return None if m is None else int("".join(str(ord(c) - ord("A")) for c in m.group(1)))


def crop_sizes(image_size: int, max_ratio: float = MAX_RATIO) -> list[tuple[int, int]]:
    """(width, height) in pixels of every shape the official list allows at ``image_size``.

    The official rule, in units of 32 px with a budget of (image_size/32)^2 units: walk the
    edge of the area budget from (budget, 1): grow the height while the area still fits,
    otherwise narrow by one column; every cell visited whose sides are at most ``max_ratio``
    apart is a shape (so some shapes use less than the whole budget, e.g. 2x1 at budget 4).
    """
    if image_size <= 0 or image_size % PATCH:
        raise ZipARError(f"Lumina-mGPT image size must be a positive multiple of {PATCH} pixels, got {image_size}; "
                         "use 512, 768 or 1024 (the released models' sizes).")
    budget = (image_size // PATCH) ** 2
    sizes, w, h = [], budget, 1
    while w:
        if max(w, h) <= max_ratio * min(w, h):
            sizes.append((w * PATCH, h * PATCH))
        w, h = (w, h + 1) if w * (h + 1) <= budget else (w - 1, h)
    return sizes


def size_for(ratio: str, image_size: int) -> tuple[int, int]:
    """(height, width) in pixels: the listed shape nearest to "W:H" (larger area on ties)."""
    w, h = parse_aspect_ratio(ratio, "Lumina-mGPT", MAX_RATIO)
    target = math.log(w / h)
    cw, ch = min(crop_sizes(image_size), key=lambda s: (round(abs(math.log(s[0] / s[1]) - target), 9), -s[0] * s[1]))
    return ch, cw


def native_size(folder: Path | str) -> int:
    """The resolution a release's folder name states (Lumina-mGPT-7B-768-Omni -> 768), else 768."""
    match = re.search(r"(?:^|[-_])(512|768|1024)(?:$|[-_])", Path(folder).name)
    return int(match.group(1)) if match else DEFAULT_SIZE


def load_lumina(folder: str | Path, device: torch.device, dtype: torch.dtype, config: dict | None = None) -> "LuminaMGPTModel":
    folder = Path(folder)
    config = config or hf_folder.read_config(folder, HINT)
    if not detect(config):
        raise ZipARError(f"'{folder}' is not a Lumina-mGPT folder (model_type {config.get('model_type')!r}); {HINT}.")
    cfg = dataclasses.replace(LlamaConfig.from_dict(config, f"{folder}/config.json"), qk_norm=True)
    tokenizer = hf_folder.load_tokenizer(folder, HINT)
    vocab = dict(tokenizer.get_vocab())
    if isinstance(config.get("vocabulary_map"), dict):
        vocab.update({k: int(v) for k, v in config["vocabulary_map"].items()})
    code_ids = code_ids_by_name(vocab, image_code, "image tokens (IMGIMG...Z)", folder, HINT)
    special = special_ids(vocab, TOKENS, folder, HINT)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else vocab.get("<s>")
    if bos is None:
        raise ZipARError(f"the tokenizer in '{folder}' names no BOS token; {HINT}.")
    special["bos"] = int(bos)
    special["pad"] = special["eot"]  # pads are never attended: any id will do
    net = chameleon_generator(folder, cfg, code_ids, HINT, device, dtype)
    return LuminaMGPTModel(net, tokenizer, special, size_ids(vocab), str(folder), native_size(folder))


def size_ids(vocab: dict[str, int]) -> dict[int, int]:
    """Units of 32 px -> the vocabulary id of the token that says them."""
    return {n: int(vocab[size_token(n)]) for n in range(1, 1000) if size_token(n) in vocab}


def chameleon_generator(folder: Path, cfg: LlamaConfig, code_ids: torch.Tensor, hint: str, device,
                        dtype) -> VisualTokenGenerator:
    """The Chameleon language model of a Lumina-mGPT (1.0 or 2.0) folder and the image rows of its
    output matrix; VQ tensors a folder may carry (``model.vqmodel.*``) are left unread."""
    keys = hf_folder.keys_by_file(folder, hint)
    names = hf_folder.all_keys(keys)
    if not any(k.startswith("model.layers.") for k in names):
        raise ZipARError(f"'{folder}' has no Chameleon language-model weights (keys like model.layers.0...); {hint}.")
    lm_keys = {k[len("model."):]: k for k in names if k.startswith("model.") and not k.startswith("model.vqmodel.")}
    head_key = "lm_head.weight" if "lm_head.weight" in names else "model.embed_tokens.weight"
    return visual_token_generator(cfg, keys, lm_keys, head_key, code_ids, folder, hint, device, dtype)


@register
class LuminaMGPTModel(VisualTokenModel):
    """Lumina-mGPT for the decode loop: sized prompts, placed size and row-end tokens, image-token logits."""

    family = "lumina-mgpt"
    title = "Lumina-mGPT"
    row0_first = False  # ZipAR's official Lumina-mGPT code starts row 1 once row 0 is `window` tokens ahead
    closing = ("eoi", "eot")
    pixels_per_token = DOWNSAMPLE  # the Chameleon VQGAN's 16; size tokens count units of 32 px
    defaults = DEFAULTS
    vq_hint = "Meta's Chameleon VQGAN: vqgan.ckpt with vqgan.yaml beside it, or the folder holding both"
    hint = ("Lumina-mGPT folders (Alpha-VLLM/Lumina-mGPT-7B-512/-768/-768-Omni/-1024, with Meta's Chameleon VQGAN "
            "vqgan.ckpt + vqgan.yaml as the VQ)")

    def __init__(self, net: VisualTokenGenerator, tokenizer, special: dict[str, int], size_ids: dict[int, int],
                 source_path: str, image_size: int = DEFAULT_SIZE):
        super().__init__(net, tokenizer, special, source_path)
        self.size_ids = size_ids
        self.image_size = image_size

    load = staticmethod(load_lumina)

    @classmethod
    def is_own_config(cls, config: dict) -> bool:
        return detect(config)

    def describe(self) -> str:
        c = self.config
        return f"{self.title} ({c.layers} layers, width {c.hidden}, {self.vocab_size} image tokens, {self.image_size} px native)"

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        """The listed shape nearest the condition's ratio at ``image_size``; sized by the family's own
        tokens (``pixels_per_token``: the VQ released with it, whose downsampling the VQ argument would
        only repeat)."""
        ratio = self.ratio_of(cond)
        height, width = size_for(ratio, image_size or self.image_size)
        grid = height // self.pixels_per_token, width // self.pixels_per_token
        self.image_prefix(grid)  # a size the vocabulary cannot say fails here, at loading time in ComfyUI
        self.check_image_length(grid)  # and so does one beyond the trained sequence length
        return grid

    def image_prefix(self, grid: tuple[int, int]) -> list[int]:
        """Begin-of-image and the two size tokens (height first, in units of 32 pixels), as the official
        layout places them."""
        rows, cols = grid
        unit = PATCH // self.pixels_per_token  # tokens per size unit
        if rows <= 0 or cols <= 0 or rows % unit or cols % unit:
            need = "an even number of rows and columns" if unit == 2 else f"rows and columns that are multiples of {unit}"
            raise ZipARError(f"{self.title} draws in steps of {PATCH} pixels ({unit} tokens), so the grid needs "
                             f"{need}; got {rows}x{cols}. Use grid_for() or a size from crop_sizes().")
        out = [self.special["boi"]]
        for n in (rows // unit, cols // unit):
            if n not in self.size_ids:
                raise ZipARError(f"the vocabulary has no size token {size_token(n)} for {n * PATCH} pixels; "
                                 f"pick a size of at most {max(self.size_ids, default=0) * PATCH} pixels per side.")
            out.append(self.size_ids[n])
        return out

    def prompt_ids(self, prompt: str, grid: tuple[int, int]) -> list[int]:
        text = PROMPT.format(width=grid[1] * self.pixels_per_token, height=grid[0] * self.pixels_per_token,
                             prompt=prompt)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return [self.special["bos"], *ids, self.special["eot"], *self.image_prefix(grid)]

    def prompt_rows(self, cond: Condition, guidance: bool, grid: tuple[int, int] | None = None) -> list[list[int]]:
        """Conditional rows, then (with guidance) the unconditional ones: the image prefix alone, or,
        where a negative prompt is given, that prompt laid out like a positive one (our extension)."""
        grid = tuple(grid or self.grid_for(cond))
        rows = [self.prompt_ids(p, grid) for p in cond.prompts]
        if guidance:
            negatives = cond.negative_prompts or [""] * len(cond.prompts)
            rows += [self.prompt_ids(n.strip(), grid) if n.strip() else self.image_prefix(grid) for n in negatives]
        return rows
