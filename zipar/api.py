"""The Python API the CLI, the ComfyUI nodes and the benchmarks share.

    model = load_ar_model("c2i_L_384.pt")              # LlamaGen GPT, config read off the weights
    vq = load_vq("vq_ds16_c2i.pt")
    result = generate(model, class_condition([207, 360]), grid_for(384, vq), window=8, seed=0)
    images = decode_tokens(vq, result.tokens)          # [N, 3, 384, 384] float in [0, 1]
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .io import outputs
from .io.checkpoint import read_state_dict
from .conditions import caption_condition, class_condition
from .core.loop import GenerationResult, expected_passes, generate
from .errors import ZipARError, memory_guard
from .families.base import Condition
from .nets.llamagen_gpt import gpt_from_state_dict
from .families.llamagen import LlamaGenModel, size_in_name
from .families.registry import checkpoint_kind, load_folder_model, load_folder_vq
from .vq.llamagen import VQModel, load_vq as _load_vq_file
from .core.sampling import SamplingOptions

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "load_ar_model", "load_vq", "generate", "decode_tokens", "class_condition", "caption_condition", "prompt_condition",
    "grid_for", "default_image_size", "check_pair", "save_images", "SamplingOptions", "GenerationResult",
    "resolve_device", "resolve_dtype", "expected_passes",
]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ZipARError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZipARError("CUDA was requested but this PyTorch sees no GPU; use --device cpu.")
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


def load_ar_model(
    path: str | os.PathLike, device: str | torch.device | None = None, precision: str = "auto", n_head: int | None = None
) -> LlamaGenModel:
    """Load an AR model: a LlamaGen GPT file (.pt/.pth/.safetensors) or a Janus-Pro / Emu3-Gen / Lumina-mGPT folder."""
    dev = resolve_device(device)
    if Path(path).is_dir():
        return load_folder_model(Path(path), dev, resolve_dtype(precision, dev))
    from .vq.chameleon import is_chameleon_vq_source

    if is_chameleon_vq_source(path):
        raise ZipARError(f"{Path(path).name} is Meta's Chameleon VQGAN, the image decoder of Lumina-mGPT, not an AR "
                         "model. Use it as the VQ model and pick the Lumina-mGPT folder as the AR model.")
    sd = read_state_dict(path)
    kind = checkpoint_kind(sd)
    if kind == "llamagen-vq":
        raise ZipARError(
            f"{Path(path).name} is a VQ image tokenizer, not an AR model. Use it as the VQ model and pick a "
            "LlamaGen GPT checkpoint (e.g. c2i_L_384.pt) as the AR model."
        )
    gpt = gpt_from_state_dict(sd, dev, resolve_dtype(precision, dev), n_head)
    return LlamaGenModel(gpt, str(path))


def load_vq(path: str | os.PathLike, device: str | torch.device | None = None, precision: str = "fp32") -> VQModel:
    """Load a VQ tokenizer: a LlamaGen file (vq_ds16_c2i.pt ...), the VQ of a Janus-Pro / Emu3 folder, or
    Meta's Chameleon VQGAN for Lumina-mGPT (vqgan.ckpt with vqgan.yaml beside it, or their folder)."""
    dev = resolve_device(device)
    if Path(path).is_dir():
        return load_folder_vq(Path(path), dev, resolve_dtype(precision, dev))
    from .vq.chameleon import is_chameleon_vq_source, load_chameleon_vq

    if is_chameleon_vq_source(path):
        return load_chameleon_vq(path, dev, resolve_dtype(precision, dev))
    return _load_vq_file(path, device=dev, dtype=resolve_dtype(precision, dev))


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


def grid_for(image_size: int, vq_or_downsample: VQModel | int) -> tuple[int, int]:
    ds = vq_or_downsample if isinstance(vq_or_downsample, int) else vq_or_downsample.downsample
    if ds < 1:
        raise ZipARError(f"the VQ downsampling factor must be a positive number of pixels per token (got {ds}); "
                         "LlamaGen's VQ-16 tokenizers use 16.")
    if image_size <= 0 or image_size % ds:
        raise ZipARError(
            f"image size {image_size} is not a multiple of the VQ downsampling factor {ds}; "
            f"use e.g. {max(ds, image_size // ds * ds)} or {(image_size // ds + 1) * ds}."
        )
    return image_size // ds, image_size // ds


def llamagen_grid(model: LlamaGenModel, image_size: int, vq_or_downsample: VQModel | int) -> tuple[int, int]:
    """The token grid of a LlamaGen GPT at ``image_size``, within the sizes the model supports."""
    model.check_image_size(image_size)
    return grid_for(image_size, vq_or_downsample)


def check_pair(model: LlamaGenModel, vq: VQModel) -> None:
    """A GPT and a VQ must agree on the codebook, or the decoded image is noise."""
    if model.vocab_size != vq.codebook_size:
        raise ZipARError(
            f"the AR model predicts {model.vocab_size} codes but the VQ has a codebook of {vq.codebook_size}; "
            "use the VQ released with the model (vq_ds16_c2i.pt for c2i models, vq_ds16_t2i.pt for t2i)."
        )


def check_token_grids(shape: tuple[int, ...]) -> None:
    """Token grids [N, H, W] or [H, W] with something in them (an empty grid decodes to nothing)."""
    if len(shape) not in (2, 3):
        raise ZipARError(f"token grids must have the shape [images, height, width] or [height, width]; got {tuple(shape)}.")
    if 0 in shape:
        raise ZipARError(f"the token grids are empty (shape {tuple(shape)}): there is nothing to decode; give at least "
                         "one image of at least 1 x 1 tokens.")


def decode_tokens(vq: VQModel, tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Token grids [N, H, W] (or [H, W]) -> float32 images [N, 3, H*ds, W*ds] in [0, 1]."""
    tokens = torch.as_tensor(np.asarray(tokens) if isinstance(tokens, np.ndarray) else tokens).long()
    check_token_grids(tuple(tokens.shape))
    if tokens.ndim == 2:
        tokens = tokens[None]
    with memory_guard("decoding the token grids", "decode fewer images at a time, or a smaller grid"):
        return vq.decode_codes(tokens)


def output_paths(out: str | os.PathLike, count: int) -> list[Path]:
    """out.png for one image; out_0.png, out_1.png ... for several (the format must be one we write)."""
    return [o.path for o in outputs.numbered_images(out, count, "output")]


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
