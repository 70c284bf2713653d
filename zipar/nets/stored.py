"""Weights stored in a narrower dtype than the model computes in, cast per layer at use.

A 7-8B model in bf16 is 14-16 GB, more than most cards ComfyUI users have. Storing the
decoder layers' matrices in 8 bits halves that; each layer casts its weight to the compute
dtype (bf16 on GPUs, fp32 on the CPU) when it runs, so only one layer's weight exists in 16
bits at a time (and under torch.compile the cast fuses into the product). fp8 keeps one
scale per output row (the row's largest magnitude maps to the format's largest value):
language-model weights of ~0.02 would otherwise fall among e4m3's subnormals and lose most
of their precision. Embeddings, norms and the output heads stay in the compute dtype: they
are a small share of the bytes and what every token passes through.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZipARError
from .castable import CastsWeights

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,  # the compute precision
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
EIGHT_BIT = (torch.float8_e4m3fn, torch.float8_e5m2)


def weight_dtype(name: str) -> torch.dtype | None:
    if name not in WEIGHT_DTYPES:
        raise ZipARError(f"weight dtype must be one of {', '.join(WEIGHT_DTYPES)} (got {name!r}).")
    return WEIGHT_DTYPES[name]


class StoredLinear(CastsWeights, nn.Module):
    """``F.linear`` with a weight kept in ``weight.dtype`` (and, for fp8, a scale per output row)."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype) -> "StoredLinear":
        w = linear.weight.detach()
        if dtype in EIGHT_BIT:
            top = torch.finfo(dtype).max
            scale = w.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / top
            stored = (w.float() / scale).clamp(-top, top).to(dtype)
        else:
            scale, stored = None, w.to(dtype)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(stored, scale, bias)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight.to(dtype)
        return w if self.scale is None else w * self.scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weights_at(x, x.dtype)  # on x's device (and dtype) only when a host asks
        scale = self.buffer_at("scale", x)
        w = weight.to(x.dtype)
        return F.linear(x, w if scale is None else w * scale.to(x.dtype), bias)


def store_linears(module: nn.Module, dtype: torch.dtype) -> int:
    """Replace every nn.Linear inside ``module`` by a StoredLinear in ``dtype``; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, StoredLinear.from_linear(child, dtype))
            count += 1
        else:
            count += store_linears(child, dtype)
    return count


def parameter_bytes(*modules: nn.Module) -> int:
    """Bytes of the parameters and buffers (what the weights take in memory)."""
    seen, total = set(), 0
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total
