"""The key/value cache both transformer stacks use, addressed by slot.

ZipAR writes inputs into arbitrary slots (a stand-in and the real token share one, and rows
advance out of order), so the cache is a fixed tensor per layer that inputs write into by
index, never an append-only list; what a query may read is decided by the mask, not by how
far the cache is filled.
"""
from __future__ import annotations

import torch

SCRATCH_SLOTS = 1  # every cache ends with a slot no query sees: a compiled step's padded inputs write there


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
        if kv_len >= self.slots:  # a compiled step attends over every slot (no slicing, one shape)
            return self.k[layer], self.v[layer]
        return self.k[layer][:, :, :kv_len], self.v[layer][:, :, :kv_len]


class CachePool:
    """The cache of the last request, kept for the next one of the same shape.

    A compiled step captured as a CUDA graph replays on fixed addresses; handing every
    request of a shape the same tensors (marked static for torch.compile) keeps them fixed,
    so the second image replays at once. One cache is kept: a request of another shape
    frees it before allocating its own. ``prompt_multiple`` rounds prompt lengths up
    (left padding that no query sees) so prompts of similar length share a shape.
    """

    prompt_multiple = 32

    def __init__(self):
        self._key: tuple | None = None
        self._cache: SlotCache | None = None
        self.extra_slots = 0  # branch slots a speculative request asks for (after the scratch slot)

    def get(self, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device, dtype) -> SlotCache:
        key = (layers, rows, kv_heads, slots, head_dim, str(device), dtype)
        if key != self._key:
            self._key, self._cache = None, None  # free the old one first
            cache = SlotCache(layers, rows, kv_heads, slots, head_dim, device, dtype)
            for t in cache.k + cache.v:
                torch._dynamo.mark_static_address(t, guard=False)
            self._key, self._cache = key, cache
        else:  # masks hide stale slots, but 0 x NaN is NaN: a request that overflowed must not poison the next
            for t in self._cache.k + self._cache.v:
                t.zero_()
        return self._cache

    def clear(self) -> None:
        self._key, self._cache = None, None


def new_cache(pool: CachePool | None, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device,
              dtype) -> SlotCache:
    """From the pool when a compiled step will run on it, else a fresh one."""
    if pool is not None:
        return pool.get(layers, rows, kv_heads, slots + pool.extra_slots, head_dim, device, dtype)
    return SlotCache(layers, rows, kv_heads, slots, head_dim, device, dtype)
