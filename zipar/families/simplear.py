"""SimpleAR (Wang et al., 2025; wdrink/SimpleAR) as a ZipAR family.

A Qwen2 decoder (biases on the query/key/value projections, none on the output projection;
RMSNorm; plain rotary positions at the config's ``rope_theta``; the 0.5B and 1.5B releases tie
``lm_head`` to the input embedding) whose vocabulary was grown by the release's training code
to ``len(tokenizer) + 64000``: the Qwen tokenizer plus its added tokens (``<|t2i|>``,
``<|soi|>`` and five more the training script adds), then one id per code of NVIDIA's
Cosmos-Tokenizer DV8x16x16 (64000 codes, 16 pixels per code). Image token id =
``len(tokenizer) + code``, ``len`` counting the added tokens, as the official scripts compute it.

One image, as the official ``generate.py`` writes it (no row ends, no end token: it stops after
H * W tokens)::

    "<|t2i|>" "A highly realistic image of " prompt "<|soi|>"      (tokenized as one string)
    H rows of W image tokens                                        (square only: H = W = side / 16)

The unconditional branch is the official fixed negative prompt, written the same way
(``NEGATIVE_PROMPT``); a negative prompt given by the user replaces its text. The official code
runs that branch as its own sequence, so here it is left-padded with its own positions from 0.

Guidance and sampling, as the official code does them: its logits processor turns both
branches into log-softmax over the whole vocabulary and returns
``lsm_u + s * (lsm_c - lsm_u)``; transformers then divides by the temperature and applies
top-k, then top-p, over the whole vocabulary, and draws any id; the decode script subtracts
``len(tokenizer)`` and clamps to 0..63999 (a text id drawn would become code 0). Here only the
64000 image ids are sampled (the image rows of the output matrix), with guidance in logit
space, ``u + s * (c - u)``. Over the image ids the two agree exactly before filtering:
``lsm_x = x - logsumexp(x)`` subtracts one constant per branch, so the official guided scores
are ours plus one constant per row, which no softmax over any subset of ids (nor the
temperature, which scales that constant too) can see. Our distribution is therefore the
official one conditioned on drawing an image id. They differ only where the official
distribution puts mass on non-image ids (which it then clamps into codes 0 / 63999), and where
the filters are taken over a different set: the official top-k 64000 keeps the 64000 best ids
of the whole vocabulary, which can include text ids and drop as many image ids (here top-k 64000
keeps every code), and a top-p below 1 normalises over a different total. With the official
defaults (top-p 1.0) and a model that puts no mass on text ids inside an image, they are the
same distribution.

Sizes: square only, multiples of 16 px; the official script offers 256 / 512 / 768 / 1024
(16 / 32 / 48 / 64 codes per side) and defaults to 1024. Defaults from the official
``generate.py`` and ``docs/PLAY.md``: cfg 6.0, temperature 1.0, top-k 64000, top-p 1.0.

ZipAR's row-1 rule: SimpleAR has no official ZipAR code; like LlamaGen's official ZipAR code
(the paper's rule), row 1 waits until row 0 is complete (``row0_first = True``). Passes for
window < W (``zipar.core.loop.expected_passes``; H * W = NTP when window >= W):

    side (px)  grid    NTP     window 16   window 8   window 4
    256        16x16   256     256         144        88
    512        32x32   1024    544         304        184
    768        48x48   2304    832         464        280
    1024       64x64   4096    1120        624        376

Release folders (Daniel0724/SimpleAR-0.5B-SFT, -0.5B-RL, -1.5B-SFT, -1.5B-RL): the training
code saves with transformers' ``save_pretrained`` (model_type "qwen2"), so a folder is told from
a plain Qwen2 by its class name ``SimpARForCausalLM`` in ``architectures`` or, failing that, by
its tokenizer holding both ``<|t2i|>`` and ``<|soi|>``. The VQ is NVIDIA's
Cosmos-1.0-Tokenizer-DV8x16x16 folder (encoder.jit, decoder.jit).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io import hf_folder
from ..nets.llama_lm import LlamaConfig
from .base import Condition, SamplingDefaults
from .registry import register
from .sequence import VisualTokenGenerator, VisualTokenModel, special_ids, visual_token_generator

MODEL_TYPE = "qwen2"
ARCHITECTURE = "SimpARForCausalLM"
CODES = 64000  # Cosmos-Tokenizer DV8x16x16's codebook
DOWNSAMPLE = 16  # pixels per code
DEFAULT_SIZE = 1024
SIZES = (256, 512, 768, 1024)  # the official script's choices
TOKENS = {"t2i": "<|t2i|>", "soi": "<|soi|>"}
PREFIX = "A highly realistic image of "
NEGATIVE_PROMPT = ("An image of aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
                   "bad teeth, bad eyes, bad limbs, distortion")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json")
HINT = ("use a complete Daniel0724/SimpleAR-0.5B-SFT, -0.5B-RL, -1.5B-SFT or -1.5B-RL folder (config.json, the "
        "safetensors weights and the tokenizer files from one download)")
# The official generate.py / PLAY.md: cfg 6.0, temperature 1.0, top-k 64000, top-p 1.0.
DEFAULTS = SamplingDefaults(cfg=6.0, temperature=1.0, top_k=CODES, top_p=1.0)


def is_simplear_config(config: dict) -> bool:
    """A Qwen2 config whose class is the release's own (``SimpARForCausalLM``)."""
    arch = config.get("architectures") or []
    return config.get("model_type") == MODEL_TYPE and isinstance(arch, list) and ARCHITECTURE in arch


def tokenizer_names_tokens(folder: Path) -> bool:
    """Whether the folder's tokenizer files name both ``<|t2i|>`` and ``<|soi|>`` (read as text, nothing loaded)."""
    found = set()
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            found.update(t for t in TOKENS.values() if t in text)
    return found == set(TOKENS.values())


def detect_folder(path: Path) -> bool:
    config = hf_folder.folder_config(path)
    if config is None or config.get("model_type") != MODEL_TYPE:
        return False
    return is_simplear_config(config) or tokenizer_names_tokens(Path(path))


def load_simplear(folder: str | Path, device: torch.device, dtype: torch.dtype,
                  config: dict | None = None) -> "SimpleARModel":
    folder = Path(folder)
    config = config or hf_folder.read_config(folder, HINT)
    if config.get("model_type") != MODEL_TYPE:
        raise ZipARError(f"'{folder}' is not a SimpleAR folder (model_type {config.get('model_type')!r}, SimpleAR's "
                         f"is {MODEL_TYPE!r}); {HINT}.")
    if config.get("use_sliding_window"):
        raise ZipARError(f"{folder}/config.json turns on sliding-window attention, which SimpleAR's releases do not "
                         f"use and ZipAR does not run; {HINT}.")
    cfg = dataclasses.replace(LlamaConfig.from_dict(config, f"{folder}/config.json"), qkv_bias=True)
    tokenizer = hf_folder.load_tokenizer(folder, HINT)
    vocab = dict(tokenizer.get_vocab())
    special = special_ids(vocab, TOKENS, folder, HINT)
    offset = len(tokenizer)  # the official scripts' image offset: the whole tokenizer, added tokens included
    if cfg.vocab < offset + CODES:
        raise ZipARError(f"'{folder}': the model's vocabulary ({cfg.vocab} ids) does not hold {CODES} image codes "
                         f"after the tokenizer's {offset} tokens (SimpleAR's is len(tokenizer) + {CODES}); the "
                         f"tokenizer and the weights do not belong together; {HINT}.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    special["pad"] = int(pad) if pad is not None else special["t2i"]  # pads are never attended: any id will do
    special["eol"] = None  # no row ends

    keys = hf_folder.keys_by_file(folder, HINT)
    names = hf_folder.all_keys(keys)
    if not any(k.startswith("model.layers.") for k in names):
        raise ZipARError(f"'{folder}' has no Qwen2 language-model weights (keys like model.layers.0...); {HINT}.")
    lm_keys = {k[len("model."):]: k for k in names if k.startswith("model.")}
    if "lm_head.weight" in names:
        head_key = "lm_head.weight"
    elif config.get("tie_word_embeddings", True):  # tied (the releases): save_pretrained writes the matrix once
        head_key = "model.embed_tokens.weight"
    else:
        raise ZipARError(f"'{folder}' has no lm_head.weight and its config does not tie it to the embedding; {HINT}.")
    code_ids = torch.arange(offset, offset + CODES, dtype=torch.long)
    net = visual_token_generator(cfg, keys, lm_keys, head_key, code_ids, folder, HINT, device, dtype)
    return SimpleARModel(net, tokenizer, special, str(folder), offset)


@register
class SimpleARModel(VisualTokenModel):
    """SimpleAR for the decode loop: the official text recipe, square grids of Cosmos codes, no row ends."""

    family = "simplear"
    title = "SimpleAR"
    row0_first = True  # no official ZipAR code for SimpleAR: the paper's rule (LlamaGen's code), row 0 first
    closing = ()  # the official generation simply stops after H * W tokens
    defaults = DEFAULTS
    max_ratio = 1.0  # square only
    vq_hint = "NVIDIA's Cosmos-1.0-Tokenizer-DV8x16x16 folder (encoder.jit, decoder.jit)"
    hint = ("SimpleAR folders (Daniel0724/SimpleAR-0.5B-SFT/-0.5B-RL/-1.5B-SFT/-1.5B-RL, with NVIDIA's "
            "Cosmos-1.0-Tokenizer-DV8x16x16 as the VQ)")

    def __init__(self, net: VisualTokenGenerator, tokenizer, special: dict, source_path: str, offset: int,
                 image_size: int = DEFAULT_SIZE):
        super().__init__(net, tokenizer, special, source_path)
        self.image_offset = offset
        self.image_size = image_size

    load = staticmethod(load_simplear)

    @classmethod
    def is_own_config(cls, config: dict) -> bool:
        return is_simplear_config(config)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return detect_folder(Path(path))

    def describe(self) -> str:
        c = self.config
        return (f"SimpleAR ({c.layers} layers, width {c.hidden}, {self.vocab_size} image tokens from id "
                f"{self.image_offset}, {self.image_size} px native)")

    def image_positions(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1]  # no row ends

    def check_image_length(self, grid: tuple[int, int]) -> None:
        self.config.check_length(0, self.image_positions(grid), f"a {grid[0]}x{grid[1]} image")

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        """A square of ``image_size / 16`` codes per side (Cosmos DV8x16x16's 16 pixels per code,
        whatever the VQ argument says); 1024 px (64 x 64) when no size is given."""
        side = image_size or self.image_size
        if self.ratio_of(cond) != "1:1":
            raise ZipARError(f"SimpleAR draws square images only (it was trained on them); got aspect ratio "
                             f"{self.ratio_of(cond)}. Use 1:1.")
        if side <= 0 or side % DOWNSAMPLE:
            raise ZipARError(f"SimpleAR image size must be a positive multiple of {DOWNSAMPLE} pixels, got {side}; "
                             f"the official sizes are {', '.join(map(str, SIZES))}.")
        grid = side // DOWNSAMPLE, side // DOWNSAMPLE
        self.check_image_length(grid)
        return grid

    def check_condition(self, cond) -> None:
        self.check_condition_kind(cond)
        if self.ratio_of(cond) != "1:1":
            raise ZipARError(f"SimpleAR draws square images only; got aspect ratio {self.ratio_of(cond)}. Use 1:1.")

    def prompt_text(self, prompt: str) -> str:
        return TOKENS["t2i"] + PREFIX + prompt + TOKENS["soi"]

    def negative_text(self, negative: str = "") -> str:
        return TOKENS["t2i"] + (negative.strip() or NEGATIVE_PROMPT) + TOKENS["soi"]

    def prompt_ids(self, prompt: str, grid: tuple[int, int] | None = None) -> list[int]:
        """The official call: the tokenizer on the whole formatted string (a Qwen tokenizer adds no BOS)."""
        return list(self.tokenizer(self.prompt_text(prompt))["input_ids"])

    def prompt_rows(self, cond: Condition, guidance: bool, grid: tuple[int, int] | None = None) -> list[list[int]]:
        """Conditional rows, then (with guidance) the official negative prompt per row, or the user's own
        negative text in its place."""
        rows = [self.prompt_ids(p) for p in cond.prompts]
        if guidance:
            negatives = cond.negative_prompts or [""] * len(cond.prompts)
            rows += [list(self.tokenizer(self.negative_text(n))["input_ids"]) for n in negatives]
        return rows
