"""The key/value cache both transformer stacks use, addressed by slot.

ZipAR writes inputs into arbitrary slots (a stand-in and the real token share one, and rows
advance out of order), so the cache is a fixed tensor per layer that inputs write into by
index, never an append-only list; what a query may read is decided by the mask, not by how
far the cache is filled.
"""
from __future__ import annotations

import torch


class SlotCache:
    """Keys/values per layer, [rows, kv_heads, slots, head_dim]; inputs write their own slots."""

    def __init__(self, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device, dtype):
        shape = (rows, kv_heads, slots, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.slots = slots

    @staticmethod
    def bytes_for(layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, dtype: torch.dtype) -> int:
        """What the constructor would allocate (checked against free memory before allocating)."""
        return 2 * layers * rows * kv_heads * slots * head_dim * torch.empty(0, dtype=dtype).element_size()

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int):
        """Store ``k``/``v`` [rows, kv_heads, n, head_dim] at ``slots`` [n]; return the first ``kv_len`` slots."""
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        return self.k[layer][:, :, :kv_len], self.v[layer][:, :, :kv_len]
