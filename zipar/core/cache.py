"""The key/value cache both transformer stacks use, addressed by slot.

ZipAR writes inputs into arbitrary slots (a stand-in and the real token share one, and rows
advance out of order), so the cache is a fixed tensor per layer that inputs write into by
index, never an append-only list; what a query may read is decided by the mask, not by how
far the cache is filled.

Two kinds (``KV_DTYPES``, chosen per model: ``Family.store_cache``): ``default`` keeps keys and
values in the compute dtype; ``int8`` keeps them in 8 bits with one scale per (row, head, slot)
vector (``QuantizedSlotCache``), about half the bytes of bf16. A scale per vector, never per
block of slots, keeps what a slot reads a function of what was written into that slot alone:
a stand-in overwritten by its real token, a draft overwritten by its correction, or another
image of the batch cannot change how any other slot is stored.
"""
from __future__ import annotations

import torch

from ..errors import ZipARError

SCRATCH_SLOTS = 1  # every cache ends with a slot no query sees: a compiled step's padded inputs write there
KV_DTYPES = ("default", "int8")  # "default": the compute dtype; "int8": 8-bit values, a scale per vector
INT8_MAX = 127


def check_kv_dtype(name: str) -> str:
    """``name`` when it is a cache kind this engine keeps, else one clear error listing them."""
    if name not in KV_DTYPES:
        raise ZipARError(f"kv dtype (the key/value cache's format) must be one of {', '.join(KV_DTYPES)} "
                         f"(got {name!r}).")
    return name


def quantize(x: torch.Tensor, scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors along the last dim -> (int8 values, one scale per vector [..., 1] in ``scale_dtype``).

    The scale is the vector's largest magnitude / 127 (rounded to ``scale_dtype`` first, and the
    values divided by the rounded scale), so every element comes back within scale / 2 =
    absmax / 254 (with a float32 scale; a 16-bit one adds its own rounding, a fraction of that), before
    the dequantized value is rounded to the compute dtype. A zero vector gets scale 0 and values 0, and
    reads back as zeros (no NaN)."""
    x32 = x.float()
    scale = (x32.abs().amax(dim=-1, keepdim=True) / INT8_MAX).to(scale_dtype)
    divisor = scale.float().clamp_min(torch.finfo(torch.float32).tiny)
    q = (x32 / divisor).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 values and their per-vector scales -> vectors in ``dtype``."""
    return q.to(dtype).mul_(scale.to(dtype))  # in place on the fresh copy: much faster on the CPU than ``*``


class SlotCache:
    """Keys/values per layer, [rows, kv_heads, slots, head_dim]; inputs write their own slots."""

    kind = "default"

    def __init__(self, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device, dtype):
        shape = (rows, kv_heads, slots, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.slots = slots

    @staticmethod
    def bytes_for(layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, dtype: torch.dtype,
                  kv: str = "default") -> int:
        """What the constructor of the ``kv`` kind would allocate (checked against free memory before
        allocating). An int8 cache also dequantizes one layer's keys and values at a time while it
        is read, a transient the size of 1/layers of the default cache, not counted here."""
        size = torch.empty(0, dtype=dtype).element_size()
        per_vector = head_dim * size if check_kv_dtype(kv) == "default" else head_dim + size  # int8 values + a scale
        return 2 * layers * rows * kv_heads * slots * per_vector

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache holds (a pool marks them static and zeroes them for the next request)."""
        return self.k + self.v

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int):
        """Store ``k``/``v`` [rows, kv_heads, n, head_dim] at ``slots`` [n]; return the first ``kv_len`` slots."""
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        if kv_len >= self.slots:  # a compiled step attends over every slot (no slicing, one shape)
            return self.k[layer], self.v[layer]
        return self.k[layer][:, :, :kv_len], self.v[layer][:, :, :kv_len]


class QuantizedSlotCache(SlotCache):
    """The same cache with int8 keys/values and one scale per (row, head, slot) vector.

    Scales are kept in the compute dtype; ``write`` quantizes what it stores and returns the
    slots read dequantized to the compute dtype (the inputs' own keys and values included, so a
    slot reads the same whether written in this pass or an earlier one). The same code runs
    eager and under torch.compile: tensor operations only, no branching on values."""

    kind = "int8"

    def __init__(self, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device, dtype):
        shape, scales = (rows, kv_heads, slots, head_dim), (rows, kv_heads, slots, 1)
        self.k = [torch.zeros(shape, device=device, dtype=torch.int8) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=torch.int8) for _ in range(layers)]
        self.k_scale = [torch.zeros(scales, device=device, dtype=dtype) for _ in range(layers)]
        self.v_scale = [torch.zeros(scales, device=device, dtype=dtype) for _ in range(layers)]
        self.slots, self.dtype = slots, dtype

    def tensors(self) -> list[torch.Tensor]:
        return self.k + self.v + self.k_scale + self.v_scale

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_len: int):
        for values, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            q, scale = quantize(x, self.dtype)
            values[layer].index_copy_(2, slots, q)
            scales[layer].index_copy_(2, slots, scale)
        n = min(kv_len, self.slots)  # a compiled step attends over every slot (one shape)
        return tuple(dequantize(values[layer][:, :, :n], scales[layer][:, :, :n], self.dtype)
                     for values, scales in ((self.k, self.k_scale), (self.v, self.v_scale)))


CACHES: dict[str, type[SlotCache]] = {"default": SlotCache, "int8": QuantizedSlotCache}


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

    def get(self, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device, dtype,
            kv: str = "default") -> SlotCache:
        key = (layers, rows, kv_heads, slots, head_dim, str(device), dtype, kv)
        if key != self._key:
            self._key, self._cache = None, None  # free the old one first
            cache = CACHES[check_kv_dtype(kv)](layers, rows, kv_heads, slots, head_dim, device, dtype)
            for t in cache.tensors():
                torch._dynamo.mark_static_address(t, guard=False)
            self._key, self._cache = key, cache
        else:  # masks hide stale slots, but 0 x NaN is NaN: a request that overflowed must not poison the next
            for t in self._cache.tensors():
                t.zero_()
        return self._cache

    def clear(self) -> None:
        self._key, self._cache = None, None


def new_cache(pool: CachePool | None, layers: int, rows: int, kv_heads: int, slots: int, head_dim: int, device,
              dtype, kv: str = "default") -> SlotCache:
    """From the pool when a compiled step will run on it, else a fresh one; ``kv``: the kind (``KV_DTYPES``)."""
    if pool is not None:
        return pool.get(layers, rows, kv_heads, slots + pool.extra_slots, head_dim, device, dtype, kv)
    return CACHES[check_kv_dtype(kv)](layers, rows, kv_heads, slots, head_dim, device, dtype)
