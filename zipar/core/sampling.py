"""Turning logits into tokens: classifier-free guidance, temperature, top-k, top-p.

All emitting cells of a pass are sampled in one batched call. Each draw takes its
uniform from a counter-based hash of (seed, image, cell) (``rng.py``), by inverting the
cumulative distribution, so a seed fixes each image whatever the batch, the padding of a
pass, or whether the step runs eager or compiled. Everything here is tensor arithmetic
with no host reads: the options may be Python numbers (eager) or 0-d tensors (a compiled
step, so changing them never recompiles).
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass

import torch

from ..errors import ZipARError
from .rng import STREAM_SAMPLE, seed_tensor, uniforms


@dataclass(frozen=True)
class SamplingOptions:
    cfg: float = 4.0
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filtering
    top_p: float = 1.0  # 1.0: no nucleus filtering
    greedy: bool = False  # arg-max instead of sampling (deterministic)
    # How the scale may vary over the image: "official" follows the family's own code (a constant
    # scale for every family but Lumina-mGPT 2.0, whose code lowers it to 4.0 over the first
    # tokens and never goes below 4.0); "constant" uses ``cfg`` for every cell.
    cfg_schedule: str = "official"

    @property
    def mode(self) -> str:
        """Which sampler code a step needs: 'greedy', 'plain' (no filter) or 'filtered'."""
        if self.greedy:
            return "greedy"
        return "filtered" if self.top_k > 0 or self.top_p < 1.0 else "plain"

    def as_tensors(self, device, scales: torch.Tensor | None = None) -> "SamplingTensors":
        """The numeric options as 0-d tensors (inputs of a compiled step); ``scales``: the family's
        per-cell guidance table [H*W] in place of the constant ``cfg``."""
        f = lambda v: torch.tensor(float(v), dtype=torch.float32, device=device)  # noqa: E731
        cfg = f(self.cfg) if scales is None else scales.to(device=device, dtype=torch.float32)
        return SamplingTensors(cfg, f(self.temperature if not self.greedy else 1.0),
                               torch.tensor(int(self.top_k), dtype=torch.long, device=device), f(self.top_p))

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
        if self.cfg_schedule not in CFG_SCHEDULES:
            raise ZipARError(f"CFG schedule must be one of {', '.join(CFG_SCHEDULES)} (got {self.cfg_schedule!r}).")


CFG_SCHEDULES = ("official", "constant")


def cell_scales(scale, cells: torch.Tensor | None):
    """A guidance scale as it applies to the cells ``cells`` [m]: a number or 0-d tensor as it is,
    a per-cell table [H*W] (a family's schedule) read at the cells as [m, 1], to broadcast over
    the vocabulary. Padded emits of a compiled step point past the table: they read its last
    entry (their draws are thrown away)."""
    if isinstance(scale, torch.Tensor) and scale.ndim == 1:
        return scale.index_select(0, cells.clamp(max=scale.shape[0] - 1))[:, None]
    return scale


def combine_guidance(logits: torch.Tensor, scale, cells: torch.Tensor | None = None) -> torch.Tensor:
    """[2N, m, V] rows ordered (conditional, unconditional) -> guided [N, m, V]; ``scale`` a number,
    or a per-cell table read at ``cells`` [m] (``cell_scales``)."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + cell_scales(scale, cells) * (cond - uncond)


@dataclass(frozen=True)
class SamplingTensors:
    """SamplingOptions' numbers as 0-d tensors on the device."""

    cfg: torch.Tensor  # 0-d, or [H*W] per cell (a family's guidance schedule)
    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor


def filter_logits(logits: torch.Tensor, top_k, top_p) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf (the most likely token always survives).

    ``top_k`` 0 and ``top_p`` 1 switch a filter off; both may be 0-d tensors. One sort serves
    both filters, with the nucleus measured over the tokens top-k kept.
    """
    vocab = logits.shape[-1]
    ranked, order = logits.sort(dim=-1, descending=True)
    k = torch.as_tensor(top_k, device=logits.device)
    k = torch.where((k > 0) & (k < vocab), k, vocab)
    kth = ranked.index_select(-1, (k - 1).reshape(1))
    keep = ranked >= kth
    probs = ranked.masked_fill(~keep, float("-inf")).softmax(dim=-1)
    # Drop a token once the mass of the tokens ranked before it exceeds top_p.
    keep = keep & ~((probs.cumsum(dim=-1) - probs) > top_p)
    return logits.masked_fill(~keep.scatter(-1, order, keep), float("-inf"))


def draw(logits: torch.Tensor, u: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, filtered: bool = True) -> torch.Tensor:
    """logits [..., V] (already guided), uniforms ``u`` [...] -> token ids [...] by inverting the CDF.

    The token is the first whose cumulative probability exceeds ``u`` times the total, so a
    token of probability 0 is never picked.
    """
    return invert_cdf(probabilities(logits, temperature, top_k, top_p, filtered), u)


def probabilities(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, filtered: bool = True) -> torch.Tensor:
    """Guided logits [..., V] -> the distribution a token is drawn from (temperature, then the filters)."""
    x = logits.float() / temperature
    if filtered:
        x = filter_logits(x, top_k, top_p)
    return x.softmax(dim=-1)


def invert_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Non-negative weights [..., V] (need not sum to 1), uniforms [...] -> the first index whose
    cumulative weight exceeds ``u`` times the total; an index of weight 0 is never picked."""
    cdf = cumulative(weights)
    below = cdf <= u[..., None] * cdf[..., -1:]
    return below.sum(dim=-1).clamp(max=weights.shape[-1] - 1)


SCAN_BLOCK = 128


def cumulative(weights: torch.Tensor) -> torch.Tensor:
    """Cumulative sums along the vocabulary, as two short scans (within blocks of 128, then over
    the block totals) when the vocabulary splits evenly. A single scan over 16384 codes for one
    or two cells is what torch.compile (inductor, torch 2.11 on CUDA) turns into a split scan it
    then fails to generate code for; short scans are plain ones. Same order everywhere, so eager
    and compiled draws agree."""
    vocab = weights.shape[-1]
    if vocab <= 8 * SCAN_BLOCK or vocab % SCAN_BLOCK:
        return weights.cumsum(dim=-1)
    inner = weights.unflatten(-1, (vocab // SCAN_BLOCK, SCAN_BLOCK)).cumsum(dim=-1)
    totals = inner[..., -1]
    before = totals.cumsum(dim=-1) - totals  # the sum of the blocks before each block
    return (inner + before[..., None]).flatten(-2)


def target_probs(logits: torch.Tensor, opts: SamplingOptions, params: SamplingTensors | SamplingOptions,
                 cells: torch.Tensor | None = None) -> torch.Tensor:
    """Raw logits [rows, m, V] of ``cells`` [m] -> what each cell's token must be distributed as
    [images, m, V] (guidance, temperature, filters). Greedy: the guided logits (only their arg-max counts)."""
    if opts.guidance:
        logits = combine_guidance(logits, params.cfg, cells)
    if opts.greedy:
        return logits
    return probabilities(logits, params.temperature, params.top_k, params.top_p, opts.mode == "filtered")


def sample_cells(logits: torch.Tensor, opts: SamplingOptions, params: SamplingTensors | SamplingOptions,
                 seed: torch.Tensor, images: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Raw logits [rows, m, V] (both CFG branches when guided) -> tokens [images, m].

    ``opts`` decides the code path (guidance on or off, greedy, filtered); ``params`` holds
    the numbers (``opts`` itself eager, ``opts.as_tensors`` in a compiled step). ``images``
    [images] and ``cells`` [m] key each draw (see ``rng.uniforms``).
    """
    if opts.guidance:
        logits = combine_guidance(logits, params.cfg, cells)
    if opts.greedy:
        return logits.argmax(dim=-1)
    u = uniforms(seed, images, cells, STREAM_SAMPLE)
    return draw(logits, u, params.temperature, params.top_k, params.top_p, opts.mode == "filtered")


def sample_tokens(logits: torch.Tensor, opts: SamplingOptions, seed: int = 0, images: torch.Tensor | None = None,
                  cells: torch.Tensor | None = None) -> torch.Tensor:
    """logits [N, M, V] or [N, V] (already guided) -> token ids (int64); keys default to 0..N-1 x 0..M-1."""
    if opts.greedy:
        return logits.argmax(dim=-1)
    flat = logits.reshape(logits.shape[0], -1, logits.shape[-1])
    images = torch.arange(flat.shape[0], device=logits.device) if images is None else images
    cells = torch.arange(flat.shape[1], device=logits.device) if cells is None else cells
    u = uniforms(seed_tensor(seed, logits.device), images, cells)
    return draw(flat, u, opts.temperature, opts.top_k, opts.top_p, opts.mode == "filtered").view(logits.shape[:-1])
