"""Lumina-mGPT 2.0 (Alpha-VLLM, 2025) as a ZipAR family.

A Chameleon-architecture decoder trained from scratch (7B: hidden 4096, 32 layers, per-head
query/key LayerNorms with gain and bias stored one row per model-parallel shard), with a
Qwen-style text tokenizer and an image vocabulary appended after it: image token id = code +
155000 for the 16384 codes of SBER-MoVQGAN-270M (8 pixels per code). Its release folder is the
same Hugging Face layout as Lumina-mGPT 1.0's (``ChameleonXLLMXForConditionalGeneration``,
model type "chameleon"); what tells them apart is a vocabulary large enough to hold the image
codes at that offset.

One image, as the official inference code writes it (tokens looked up by name in the
tokenizer's vocabulary):

    BOS "Generate an image of {W}x{H} according to the following prompt:\\n{prompt}" <reserved08706>
    <racm3:break> <reserved{8800+H/32:05d}> <reserved{8800+W/32:05d}>   (begin of image, height, width)
    H/8 rows of W/8 image tokens, each followed by <reserved08799>       (end of line, the last row too)
    <eoss>                                                                (end of image; generation stops)

BOS is the tokenizer's BOS token, or its EOS token when it names none (the release code's
rule for Qwen-style tokenizers). Upstream the model writes the begin-of-image and size tokens
itself; here they are placed from the requested size, and the row ends are placed, as the
official logits processor forces them. Inside the image the official processor allows only
the image ids; the loop samples exactly those (the image rows of ``lm_head``), so the
restriction holds by construction.

Guidance, as the official processor does it: the unconditional branch is the sequence from
begin-of-image on, without text, with its own positions from 0; guided logits are
``u + s * (c - u)``. Its scale ``s`` changes at every generated token (row ends included):
``s <- max(4.0, s * (1 - n / D))``, starting from the requested scale, where ``n`` counts the
tokens after begin-of-image already written (2 when the first code is drawn) and
``D = (H/16) * (W/16)`` (the processor's latent size, a quarter of the code grid). So the scale
never drops below 4.0 (a requested 3.0 is guided at 4.0) and a larger one decays to 4.0 over
the first tokens. That is the "official" CFG schedule; "constant" keeps the requested scale.
A scale of 1.0 turns guidance off in both.

Sizes: multiples of 32 pixels from the official crop walk (``lumina.crop_sizes``) at 768 px,
the released models' size. The sequence must fit the 10240 positions the model was trained on
(``max_position_embeddings``), which rules out 1024 x 1024 (128 rows of 129 tokens).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io import hf_folder
from ..nets.llama_lm import LlamaConfig
from .base import SamplingDefaults
from .lumina import LuminaMGPTModel, chameleon_generator, size_ids
from .registry import register
from .sequence import special_ids

MODEL_TYPE = "chameleon"
IMAGE_OFFSET = 155000  # vocabulary id of image code 0 (the official item processor's offset)
CODES = 16384  # SBER-MoVQGAN-270M's codebook
DOWNSAMPLE = 8  # pixels per image token
DEFAULT_SIZE = 768
MIN_SCALE = 4.0  # the official schedule never guides below this
HINT = ("use the complete Alpha-VLLM/Lumina-mGPT-2.0 (or -2.0-Omni) folder: config.json, the safetensors shards "
        "with their index and the tokenizer files from one download")
TOKENS = {"eot": "<reserved08706>", "boi": "<racm3:break>", "eoi": "<eoss>", "eol": "<reserved08799>"}
# The official README and sample script: cfg 4.0, top-k 4096 over the image codes, temperature 1.0.
DEFAULTS = SamplingDefaults(cfg=4.0, temperature=1.0, top_k=4096, top_p=1.0)


def detect(config: dict) -> bool:
    """A Chameleon folder whose vocabulary reaches past the image codes' offset (1.0's has 65536)."""
    try:
        vocab = int(config.get("vocab_size") or 0)
    except (TypeError, ValueError):
        return False
    return config.get("model_type") == MODEL_TYPE and vocab >= IMAGE_OFFSET + CODES


def official_scales(grid: tuple[int, int], cfg: float) -> torch.Tensor:
    """The official processor's guidance scale for every cell [H*W] (float32, raster order).

    It updates a running scale once per generated token, row ends included, from the requested
    one; the cell (r, c) is token r * (W + 1) + c of the image stream, drawn when n = 2 + that
    index tokens follow begin-of-image. Computed in float64 as Python floats, like the original."""
    rows, cols = grid
    latent = (rows // 2) * (cols // 2)  # (H/16) * (W/16): the processor's h_latent_dim * w_latent_dim
    scale, out = float(cfg), []
    for index in range(rows * (cols + 1)):
        scale = max(MIN_SCALE, scale * (1 - (2 + index) / latent))
        if index % (cols + 1) < cols:
            out.append(scale)
    return torch.tensor(out, dtype=torch.float32)


def load_lumina2(folder: str | Path, device: torch.device, dtype: torch.dtype,
                 config: dict | None = None) -> "LuminaMGPT2Model":
    folder = Path(folder)
    config = config or hf_folder.read_config(folder, HINT)
    if not detect(config):
        raise ZipARError(f"'{folder}' is not a Lumina-mGPT 2.0 folder (model_type {config.get('model_type')!r}, "
                         f"vocab_size {config.get('vocab_size')!r}: 2.0's holds the image codes from id {IMAGE_OFFSET}); "
                         f"{HINT}.")
    cfg = dataclasses.replace(LlamaConfig.from_dict(config, f"{folder}/config.json"), qk_norm=True)
    tokenizer = hf_folder.load_tokenizer(folder, HINT)
    vocab = dict(tokenizer.get_vocab())
    special = special_ids(vocab, TOKENS, folder, HINT)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ZipARError(f"the tokenizer in '{folder}' names neither a BOS nor an EOS token (the prompt starts with "
                         f"one); {HINT}.")
    special["bos"] = int(bos)
    special["pad"] = special["eot"]  # pads are never attended: any id will do
    sizes = size_ids(vocab)
    if not sizes:
        raise ZipARError(f"the tokenizer in '{folder}' has no size tokens (<reserved08801>...); {HINT}.")
    code_ids = torch.arange(IMAGE_OFFSET, IMAGE_OFFSET + CODES, dtype=torch.long)
    net = chameleon_generator(folder, cfg, code_ids, HINT, device, dtype)
    return LuminaMGPT2Model(net, tokenizer, special, sizes, str(folder), DEFAULT_SIZE)


@register
class LuminaMGPT2Model(LuminaMGPTModel):
    """Lumina-mGPT 2.0 for the decode loop: 8-pixel codes at a fixed offset, the official CFG schedule."""

    family = "lumina-mgpt-2"
    title = "Lumina-mGPT 2.0"
    # No official ZipAR code exists for 2.0; like ZipAR's code for Lumina-mGPT 1.0 (the same
    # architecture and row-end layout), row 1 starts once row 0 is `window` tokens ahead.
    row0_first = False
    closing = ("eoi",)  # the official generation stops at end-of-image
    pixels_per_token = DOWNSAMPLE  # MoVQGAN's 8: a 32-px size unit is 4 tokens (grid_for, image_prefix, prompt_ids)
    defaults = DEFAULTS
    vq_hint = "SBER-MoVQGAN-270M: movqgan_270M.ckpt from ai-forever/MoVQGAN"
    hint = "Lumina-mGPT 2.0 folders (Alpha-VLLM/Lumina-mGPT-2.0, with ai-forever's movqgan_270M.ckpt as the VQ)"

    load = staticmethod(load_lumina2)

    @classmethod
    def is_own_config(cls, config: dict) -> bool:
        return detect(config)

    def check_vq(self, vq) -> None:
        """16384 codes is also Janus-Pro's and LlamaGen's VQ size: only MoVQGAN draws this model's codes."""
        if getattr(vq, "vq_name", None) != "MoVQGAN":
            raise ZipARError(f"Lumina-mGPT 2.0's codes are SBER-MoVQGAN-270M codes, but the VQ given "
                             f"({getattr(vq, 'source_path', None) or type(vq).__name__}) is another tokenizer with as "
                             f"many codes; use the VQ released with the model: {self.vq_hint}.")

    def guidance_scales(self, grid: tuple[int, int], cfg: float, schedule: str) -> torch.Tensor | None:
        if schedule == "constant" or cfg == 1.0:
            return None
        return official_scales(grid, cfg)

