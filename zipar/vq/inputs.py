"""Input checks shared by the VQ decoders that read other families' codes (Emu3, Chameleon).

A wrong grid reaching a VQ usually means a wiring mistake in a workflow (LM token ids instead
of codebook ids, a [H, W] grid without its batch axis, a resized image), so each check names
the VQ, the bad value and the fix rather than letting a conv or an index fail deep inside.
"""
from __future__ import annotations

import torch

from ..errors import ZipARError


def check_code_grid(codes: torch.Tensor, codebook_size: int, name: str) -> None:
    """[batch, rows, cols] integer codebook ids, each in 0..codebook_size-1."""
    if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ZipARError(f"{name} VQ decode expects codes shaped [batch, rows, cols]; got {shape}.")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ZipARError(f"{name} VQ decode expects integer token ids; got dtype {codes.dtype}.")
    if codes.numel() == 0:
        raise ZipARError(f"{name} VQ decode got an empty code grid {tuple(codes.shape)}; pass at least one code.")
    for bad in (int(codes.min()), int(codes.max())):
        if not 0 <= bad < codebook_size:
            raise ZipARError(f"token id {bad} out of range for the {name} VQ with {codebook_size} codes "
                             f"(valid 0..{codebook_size - 1}); map LM token ids to codebook ids first.")


def check_image_batch(images: torch.Tensor, downsample: int, name: str) -> None:
    """[batch, 3, H, W] float images whose sides are positive multiples of the downsampling."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ZipARError(f"{name} VQ encode expects images shaped [batch, 3, height, width]; got {shape}.")
    if not images.is_floating_point():
        raise ZipARError(f"{name} VQ encode expects float images in [0, 1]; got dtype {images.dtype}.")
    h, w = images.shape[-2:]
    if h == 0 or w == 0 or h % downsample or w % downsample:
        raise ZipARError(f"image size {h}x{w} is not a positive multiple of the {name} VQ downsampling factor "
                         f"{downsample}; resize or crop it to multiples of {downsample}.")
