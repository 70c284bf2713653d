"""Counter-based random numbers: one uniform per (seed, image, cell, stream), from integer hashing.

A generator's stream depends on how many numbers were drawn before, so an image would
change with the batch it sits in, the padding of a pass or the order kernels run in. Here
a draw is a pure function of its key, computed with tensor ops that compile and run inside
a captured graph (no host state, no host synchronisation): a seed gives the same image
eager or compiled, alone or in a batch, on one process or many.

The hash is a chain of 32-bit xor-shift-multiply rounds (the "lowbias32" finaliser) kept
in int64 arithmetic that never overflows: values stay below 2**32 and multiplications are
split into 16-bit halves of the constant.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
_C1, _C2 = 0x7FEB352D, 0x846CA68B
_GOLDEN = 0x9E3779B9  # separates the key fields before they are mixed in
STREAM_SAMPLE = 0  # the draw that picks a cell's token; later uses (speculative acceptance) take others


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32 without int64 overflow (signed overflow is undefined in C++)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit finaliser: every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


def seed_words(seed: int) -> tuple[int, int]:
    """A seed of up to 64 bits as two 32-bit words (front ends pass seeds as large as 2**64 - 1)."""
    seed = int(seed) % (1 << 64)
    return seed & MASK32, seed >> 32


def seed_tensor(seed: int, device) -> torch.Tensor:
    """[2] int64 (low word, high word): a seed as data, so changing it never recompiles a step."""
    return torch.tensor(seed_words(seed), dtype=torch.long, device=device)


def uniforms(seed: torch.Tensor, images: torch.Tensor, cells: torch.Tensor, stream: int = STREAM_SAMPLE) -> torch.Tensor:
    """[len(images), len(cells)] float32 uniforms in (0, 1), one per key.

    ``seed`` [2] int64 from ``seed_tensor``; ``images`` [N] and ``cells`` [M] int64 keys
    (the image's index in its request and the raster cell). 24 bits of resolution.
    """
    tag = (_GOLDEN * (stream + 1)) & MASK32
    h = mix32(seed[1] ^ tag)
    h = mix32(h ^ seed[0])
    h = mix32(((h ^ (images & MASK32)) + _GOLDEN) & MASK32)  # [N]
    h = mix32(h[:, None] ^ (cells[None, :] & MASK32))  # [N, M]
    return ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))


def uniforms_streams(seed: torch.Tensor, images: torch.Tensor, cells: torch.Tensor, streams) -> torch.Tensor:
    """[len(streams), N, M]: ``uniforms`` for several streams in one pass of kernels (the same
    numbers as one call per stream). ``streams``: a list of ints, or an int64 tensor (data inside
    a compiled step)."""
    if isinstance(streams, torch.Tensor):
        tag = (_GOLDEN * (streams + 1)) & MASK32
    else:
        tag = torch.tensor([(_GOLDEN * (s + 1)) & MASK32 for s in streams], dtype=torch.long, device=seed.device)
    h = mix32(seed[1] ^ tag)
    h = mix32(h ^ seed[0])  # [S]
    h = mix32(((h[:, None] ^ (images[None, :] & MASK32)) + _GOLDEN) & MASK32)  # [S, N]
    h = mix32(h[:, :, None] ^ (cells[None, None, :] & MASK32))  # [S, N, M]
    return ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))
