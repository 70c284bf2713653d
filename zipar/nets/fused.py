"""Stacking linear layers that read the same input into one, at load time.

A decode pass on a GPU is bound by kernel launches and weight reads, not arithmetic: one
product for queries, keys and values (or gate and up) is one launch instead of three and
reads the input once. The checkpoints keep their separate tensors; the loaders fuse after
loading, so files, key names and tests stay those of the official layout.
"""
from __future__ import annotations

import torch
from torch import nn


def fused_linear(*parts: nn.Linear) -> nn.Linear:
    """Linear layers reading the same input, stacked into one (outputs in the given order)."""
    w = parts[0].weight
    fused = nn.Linear(w.shape[1], sum(p.out_features for p in parts), bias=parts[0].bias is not None,
                      device="meta", dtype=w.dtype)
    fused.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
    if parts[0].bias is not None:
        fused.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
    return fused
