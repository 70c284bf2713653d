"""Turning logits into tokens: classifier-free guidance, temperature, top-k, top-p.

All emitting cells of a pass are sampled in one batched call from one generator, so a
seed fixes the whole image and sampling costs the same whether one row or twelve emit.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass

import torch

from ..errors import ZipARError


@dataclass(frozen=True)
class SamplingOptions:
    cfg: float = 4.0
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filtering
    top_p: float = 1.0  # 1.0: no nucleus filtering
    greedy: bool = False  # arg-max instead of sampling (deterministic)

    @property
    def guidance(self) -> bool:
        """Whether the unconditional branch is run at all (a scale of 1 is the conditional model)."""
        return self.cfg != 1.0

    def validate(self) -> None:
        for name, value in (("CFG scale", self.cfg), ("temperature", self.temperature), ("top-p", self.top_p)):
            finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not finite:
                raise ZipARError(f"{name} must be a finite number (got {value!r}); NaN and infinity would give "
                                 "a garbage image.")
        try:
            operator.index(self.top_k)
        except TypeError:
            raise ZipARError(f"top-k must be a whole number (got {self.top_k!r}); 0 turns it off.") from None
        if self.temperature <= 0 and not self.greedy:
            raise ZipARError(f"temperature must be above 0 (got {self.temperature}); use greedy for arg-max decoding.")
        if self.top_k < 0:
            raise ZipARError(f"top-k must be 0 (off) or a positive count (got {self.top_k}).")
        if not 0.0 < self.top_p <= 1.0:
            raise ZipARError(f"top-p must be in (0, 1] (got {self.top_p}); 1.0 turns it off.")
        if self.cfg < 0:
            raise ZipARError(f"CFG scale must be 0 or more (got {self.cfg}); 1.0 turns guidance off.")


def combine_guidance(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """[2N, ...] rows ordered (conditional, unconditional) -> guided [N, ...]."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf (the most likely token always survives)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the mass of the tokens ranked before it exceeds top_p.
        drop_sorted = (probs.cumsum(dim=-1) - probs) > top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """logits [..., V] (already guided) -> token ids [...] (int64)."""
    if opts.greedy:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / opts.temperature, opts.top_k, opts.top_p)
    probs = logits.softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) % (2**64))
    return gen
