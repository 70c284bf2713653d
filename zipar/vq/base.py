"""What every VQ image tokenizer promises, and what every VQ format declares to the loader.

The decode loop only produces grids of codebook ids, and the API, the CLI and the nodes only
ever turn such grids into pixels (or images back into grids) and write 8-bit files. So any
tokenizer that offers the few members of ``VQ`` works everywhere, whatever network it runs;
nothing outside a format module asks which format it is.

A wrong grid reaching a VQ usually means a wiring mistake in a workflow (LM token ids instead
of codebook ids, a [H, W] grid without its batch axis, a resized image), so the input checks
shared by all formats name the VQ, the bad value and the fix rather than letting a conv or an
index fail deep inside.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, runtime_checkable

import torch

from ..errors import ZipARError


@runtime_checkable
class VQ(Protocol):
    """A frozen image tokenizer: code grids <-> images in [0, 1]."""

    codebook_size: int  # codes 0..codebook_size-1
    downsample: int  # pixels per code along each side
    # How 8-bit files are written from [0, 1] pixels, as the family's official code does:
    # True floors pixel * 255 (Janus-Pro, Emu3, Lumina-mGPT), False rounds (LlamaGen, Lumina-mGPT 2.0's MoVQGAN).
    truncates_to_uint8: bool
    source_path: str | None  # the file or folder it was read from, for messages and UIs

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, h, w] long codebook ids -> float32 images [B, 3, h*ds, w*ds] in [0, 1]."""
        ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> long codebook ids [B, H/ds, W/ds]."""
        ...

    # Optional: ``code_vectors() -> [codes, dim]``, what the decoder reads per code. With it the
    # nodes' live preview draws each code in the colour the decoder gives it (``nodes/preview``).


@dataclass(frozen=True)
class VQFormat:
    """One published VQ format, as ``zipar.vq.load_vq`` sees it."""

    name: str  # what such a path is, in words that follow "is" ("Meta's Chameleon VQGAN, ...")
    files: str  # which published files or folders this format reads, for "unknown path" messages
    detect: Callable[[Path], bool]  # cheap: reads at most a small config file, never weights
    load: Callable[[Path, str | torch.device, torch.dtype], VQ]
    # Claims every file: tried after the others, and its loader says what a file is when it is
    # not this format (so it names nothing when describing paths).
    catch_all: bool = False
    # Language-model folders of the same family that hold no VQ: config.json model_type -> what
    # to tell the user, as a sentence that follows the folder's name.
    no_vq_folders: Mapping[str, str] = field(default_factory=dict)


def weights_prefix(keys: Iterable[str], candidates: Iterable[str]) -> str | None:
    """The first of ``candidates`` that some key starts with: a folder that saves one model
    inside another puts the VQ under one of a few prefixes, depending on the tool that wrote it."""
    keys = list(keys)
    return next((p for p in candidates if any(k.startswith(p) for k in keys)), None)


def key_sample(keys: list[str]) -> str:
    """The first of many offending tensor names, for a one-line message."""
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"'{keys[0]}'{more}"


# ----------------------------------------------------------------------------- input checks
def _labels(name: str | None) -> tuple[str, str]:
    """("Chameleon VQ", "the Chameleon VQ") for a named VQ, ("VQ", "a VQ") for a generic one
    (LlamaGen's network also serves Janus-Pro, so it names no family)."""
    return (f"{name} VQ", f"the {name} VQ") if name else ("VQ", "a VQ")


def check_code_grid(codes: torch.Tensor, codebook_size: int, name: str | None = None) -> None:
    """[batch, rows, cols] integer codebook ids, each in 0..codebook_size-1."""
    label, which = _labels(name)
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ZipARError(f"{label} decode expects codes shaped [batch, rows, cols]; got {shape}.")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ZipARError(f"{label} decode expects integer token ids; got dtype {codes.dtype}.")
    if codes.numel() == 0:
        raise ZipARError(f"{label} decode got an empty code grid {tuple(codes.shape)}; pass at least one code.")
    for bad in (int(codes.min()), int(codes.max())):
        if not 0 <= bad < codebook_size:
            raise ZipARError(f"token id {bad} out of range for {which} with {codebook_size} codes "
                             f"(valid 0..{codebook_size - 1}); map LM token ids to codebook ids first.")


def check_image_batch(images: torch.Tensor, downsample: int, name: str | None = None) -> None:
    """[batch, 3, H, W] float images whose sides are positive multiples of the downsampling."""
    label, _ = _labels(name)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ZipARError(f"{label} encode expects images shaped [batch, 3, height, width]; got {shape}.")
    if not images.is_floating_point():
        raise ZipARError(f"{label} encode expects float images in [0, 1]; got dtype {images.dtype}.")
    h, w = images.shape[-2:]
    if h == 0 or w == 0 or h % downsample or w % downsample:
        raise ZipARError(f"image size {h}x{w} is not a positive multiple of the {label} downsampling factor "
                         f"{downsample}; resize or crop it to multiples of {downsample}.")
