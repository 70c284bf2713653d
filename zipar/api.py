"""The Python API the CLI, the ComfyUI nodes and the benchmarks share.

    model = load_ar_model("c2i_L_384.pt")              # any family: a LlamaGen file or a model folder
    vq = load_vq("vq_ds16_c2i.pt")
    request = prepare(model, class_condition([207, 360]), image_size=384, vq=vq)
    result = generate(model, request.condition, request.grid, window=8, seed=0)
    images = decode_tokens(vq, result.tokens)          # [N, 3, 384, 384] float in [0, 1]

``prepare`` is the one place a request is checked and sized: the condition against the model
(``ConditionMismatch`` names the kind it needs; each front end says how to give it), the VQ's
codebook against the model's, and the grid from the family (aspect ratio, size, the VQ's
pixels per token). Front ends hold no family knowledge.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dataclasses import dataclass

from .conditions import caption_condition, class_condition
from .core.loop import GenerationResult, check_memory, expected_passes, generate, request_bytes
from .core.plan import build_plan
from .core.sampling import CFG_SCHEDULES, SamplingOptions
from .errors import ZipARError, memory_guard
from .families import registry
from .families.base import Condition, Family, SamplingDefaults
from .families.llamagen import size_in_name, square_grid
from .io import outputs
from .vq import load_vq as _load_vq
from .nets.stored import WEIGHT_DTYPES, weight_dtype as weight_dtype_of
from .core.cache import KV_DTYPES, check_kv_dtype
from .vq.base import VQ

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "load_ar_model", "load_vq", "prepare", "Request", "generate", "decode_tokens", "class_condition",
    "caption_condition", "prompt_condition", "grid_for", "default_image_size", "check_pair", "save_images",
    "SamplingOptions", "GenerationResult", "resolve_device", "resolve_dtype", "expected_passes", "WEIGHT_DTYPES",
    "KV_DTYPES", "CFG_SCHEDULES",
    "request_bytes", "check_memory", "decode_bytes", "release_plans",
]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ZipARError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZipARError("CUDA was requested but this PyTorch sees no GPU; use the CPU device instead.")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on GPUs that support it (the official inference precision), else fp32."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if precision not in PRECISIONS:
        raise ZipARError(f"precision must be one of auto, {', '.join(PRECISIONS)} (got {precision!r}).")
    return PRECISIONS[precision]


def load_ar_model(path: str | os.PathLike, device: str | torch.device | None = None, precision: str = "auto",
                  weight_dtype: str = "default", runs_on: str | torch.device | None = None,
                  kv_dtype: str = "default") -> Family:
    """Load an AR model of any registered family: a LlamaGen GPT file (.pt/.pth/.safetensors) or a
    Janus-Pro / Emu3-Gen / Lumina-mGPT folder (``zipar.families``).

    ``precision`` is what the model computes in; ``weight_dtype`` what its decoder layers' matrices
    are kept in: ``default`` (the same), ``bf16``, ``fp16``, ``fp8_e4m3fn`` or ``fp8_e5m2`` (half the
    bytes of bf16; cast per layer at use, see ``zipar.nets.stored``); ``kv_dtype`` what its key/value
    cache keeps: ``default`` (the compute dtype) or ``int8`` (8-bit values with a scale per vector: about
    half the cache of bf16, logits within a small error; see ``zipar.core.cache``). Both hold for every
    request of the model (``Family.weight_dtype`` / ``Family.kv_dtype``).

    ``runs_on``: for a host that moves weights itself (ComfyUI): the weights are read onto
    ``device`` (its offload device), while ``auto`` precision and the compute follow ``runs_on``."""
    dev = resolve_device(device)
    target = dev if runs_on is None else resolve_device(runs_on)
    check_kv_dtype(kv_dtype)  # before reading gigabytes
    model = registry.load_ar_model(Path(path), dev, resolve_dtype(precision, target), weight_dtype_of(weight_dtype))
    if kv_dtype != "default":
        model.store_cache(kv_dtype)
    if target != dev:
        model.place(target)
    return model


def load_vq(path: str | os.PathLike, device: str | torch.device | None = None, precision: str = "fp32",
            runs_on: str | torch.device | None = None) -> VQ:
    """Load a VQ tokenizer: a LlamaGen file (vq_ds16_c2i.pt ...), the VQ of a Janus-Pro / Emu3 folder, or
    Meta's Chameleon VQGAN for Lumina-mGPT (vqgan.ckpt with vqgan.yaml beside it, or their folder).

    ``runs_on``: as for ``load_ar_model``, the device ``auto`` precision is chosen for (the host
    moves the decoder there before it runs)."""
    dev = resolve_device(device)
    return _load_vq(Path(path), dev, resolve_dtype(precision, dev if runs_on is None else resolve_device(runs_on)))


# Working memory of a VQ decoder per output pixel and per byte of its dtype: the full-resolution
# stages of the published decoders keep a few 128-256 channel maps alive at once.
DECODE_BYTES_PER_PIXEL = 1024


def decode_bytes(vq: VQ, images: int, grid: tuple[int, int]) -> int:
    """About what decoding ``images`` grids allocates besides the decoder's weights (an estimate
    for a memory manager to free first, on the high side)."""
    pixels = grid[0] * grid[1] * vq.downsample ** 2
    return images * pixels * DECODE_BYTES_PER_PIXEL * torch.finfo(vq.dtype).bits // 8


def release_plans() -> None:
    """Forget the cached pass plans (and the index tables built from them, on their device)."""
    build_plan.cache_clear()


@dataclass(frozen=True)
class Request:
    """A checked request: the condition, the grid it is drawn on and the family's sampling recipe."""

    model: Family
    condition: Condition
    grid: tuple[int, int]
    defaults: SamplingDefaults


def prepare(model: Family, condition: Condition, image_size: int | None = None, vq: VQ | None = None,
            downsample: int | None = None) -> Request:
    """Check a request and size its grid, for the CLI and the nodes alike.

    ``image_size`` None (or 0) is the model's own size; the grid uses the VQ's pixels per token
    (``vq``, else ``downsample``, else the family's usual VQ). Raises ConditionMismatch when the
    condition is of the wrong kind and ZipARError for anything else that does not fit.
    """
    if vq is not None:
        check_pair(model, vq)
        downsample = vq.downsample
    model.check_condition(condition)
    grid = model.grid_for(condition, image_size or None, downsample)
    return Request(model, condition, grid, model.defaults)


def prompt_condition(prompts: list[str], negative_prompt: str | None = None, aspect_ratio: str | None = None,
                     quality_suffix: bool = True, labels: list[str] | None = None) -> Condition:
    """Text prompts for the families that read text themselves (Janus-Pro, Emu3-Gen, Lumina-mGPT).

    ``negative_prompt`` None or empty: the family's own unconditional branch. ``quality_suffix``:
    Emu3-Gen's official example appends " masterpiece, film grained, best quality." to every
    prompt (never twice here); False sends the prompt as written. Other families ignore it.
    """
    prompts = [str(p) for p in prompts]
    return Condition(prompts=prompts, labels=labels or list(prompts), negative_prompts=[negative_prompt or ""] * len(prompts),
                     aspect_ratio=aspect_ratio, quality_suffix=bool(quality_suffix))


def default_image_size(path: str | os.PathLike) -> int | None:
    """The resolution a published file name states (c2i_L_384.pt -> 384), if any."""
    return size_in_name(path)


def grid_for(image_size: int, vq_or_downsample: VQ | int) -> tuple[int, int]:
    """The square grid of ``image_size`` pixels at the VQ's pixels per token (LlamaGen's sizing)."""
    ds = vq_or_downsample if isinstance(vq_or_downsample, int) else vq_or_downsample.downsample
    return square_grid(image_size, ds)


def check_pair(model: Family, vq: VQ) -> None:
    """A GPT and a VQ must agree on the codebook, or the decoded image is noise."""
    if model.vocab_size != vq.codebook_size:
        raise ZipARError(
            f"the AR model predicts {model.vocab_size} codes but the VQ has a codebook of {vq.codebook_size}; "
            f"use the VQ released with the model: {model.vq_hint}."
        )
    model.check_vq(vq)


def check_token_grids(shape: tuple[int, ...]) -> None:
    """Token grids [N, H, W] or [H, W] with something in them (an empty grid decodes to nothing)."""
    if len(shape) not in (2, 3):
        raise ZipARError(f"token grids must have the shape [images, height, width] or [height, width]; got {tuple(shape)}.")
    if 0 in shape:
        raise ZipARError(f"the token grids are empty (shape {tuple(shape)}): there is nothing to decode; give at least "
                         "one image of at least 1 x 1 tokens.")


def decode_tokens(vq: VQ, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Token grids [N, H, W] (or [H, W]) -> float32 images [N, 3, H*ds, W*ds] in [0, 1]."""
    tokens = torch.as_tensor(np.asarray(tokens) if isinstance(tokens, np.ndarray) else tokens).long()
    check_token_grids(tuple(tokens.shape))
    if tokens.ndim == 2:
        tokens = tokens[None]
    with memory_guard("decoding the token grids", "decode fewer images at a time, or a smaller grid"):
        return vq.decode_codes(tokens)


def save_images(images: torch.Tensor, out: str | os.PathLike | list, overwrite: bool = False,
                truncate: bool = False) -> list[Path]:
    """Write [N, 3, H, W] images in [0, 1]; refuse to replace existing files unless asked.

    ``out`` is one name (numbered when there are several images) or a list of names, one per
    image. Every name is checked before the first file is written, and each file appears
    only when complete (``zipar.io.outputs``). 8-bit values are rounded, as LlamaGen's sampler
    does; ``truncate`` floors them instead, as Janus-Pro's, Emu3's and Lumina-mGPT's
    official code does (a VQ says which through its ``truncates_to_uint8`` attribute).
    """
    from PIL import Image

    if isinstance(out, (list, tuple)):
        planned = [outputs.image_output(p, "output") for p in out]
        if len(planned) != images.shape[0]:
            raise ZipARError(f"{images.shape[0]} images but {len(planned)} file names.")
    else:
        planned = outputs.numbered_images(out, images.shape[0], "output")
    outputs.plan_outputs(planned, overwrite)
    paths = []
    for img, target in zip(images, planned):
        scaled = img.float().clamp(0, 1) * 255
        pixels = (scaled if truncate else scaled.round()).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        paths.append(outputs.write_image(target.path, Image.fromarray(pixels), overwrite))
    return paths
