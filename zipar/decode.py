"""The decode loop: run a schedule against a model adapter and sample the token grid.

The schedule is turned once into flat index tensors (which cells each pass feeds and emits)
plus one per-cell table (the pass that first writes each slot); what an input may see is
derived from those on the device for each pass. The plan thus grows linearly with the grid
(storing every pass's mask would grow with its fourth power), and a pass is a handful of
gathers, one forward and one batched sampling call, with no host-device synchronisation
unless a progress callback asks for it.
"""
from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from .errors import ZipARError, free_bytes, memory_guard
from .models.base import ARModel, Condition
from .sampling import SamplingOptions, combine_guidance, make_generator, sample_tokens
from .schedule import PREFIX, Schedule, build_schedule, num_passes


@dataclass(frozen=True)
class PassTensors:
    """One pass's slices of the plan (views, no copies)."""

    index: int  # the pass number
    sources: torch.Tensor  # [n] grid cells whose tokens are fed (a stand-in's source differs from its cell)
    cells: torch.Tensor  # [n] grid cells whose slots they fill
    queries: torch.Tensor  # [m] index into the inputs whose logits predict each emitted cell
    emits: torch.Tensor  # [m] grid cells emitted
    grid_len: int  # kv_len - prefix: slots up to the furthest cell fed


@dataclass(frozen=True)
class Plan:
    """A schedule as flat index tensors on the model's device; ``pass_tensors(s)`` slices pass s.

    ``feed_start`` / ``emit_start`` (host lists, one entry per pass plus one) delimit each
    pass's feeds and emits; ``fill_step`` says, per cell, the first pass whose inputs write
    its cache slot, which with raster order decides everything a query may see.
    """

    schedule: Schedule
    sources: torch.Tensor  # [feeds] all passes' fed sources, pass after pass
    cells: torch.Tensor  # [feeds]
    queries: torch.Tensor  # [H*W] per emitted cell, in emission order: index into its pass's feeds
    emits: torch.Tensor  # [H*W] cells in emission order
    feed_start: tuple[int, ...]
    emit_start: tuple[int, ...]
    grid_lens: tuple[int, ...]
    fill_step: torch.Tensor  # [H*W] long, on the device
    slot_cells: torch.Tensor  # [H*W] 0..H*W-1, on the device
    emit_step: torch.Tensor  # [H*W] long, CPU: the pass that emits each cell
    # What adapters derive from the plan (e.g. the 1D families' row-end layout), kept as long as the plan
    adapter_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_passes(self) -> int:
        return self.schedule.num_passes

    def pass_tensors(self, s: int) -> PassTensors:
        f0, f1 = self.feed_start[s], self.feed_start[s + 1]
        e0, e1 = self.emit_start[s], self.emit_start[s + 1]
        return PassTensors(s, self.sources[f0:f1], self.cells[f0:f1], self.queries[e0:e1], self.emits[e0:e1],
                           self.grid_lens[s])

    def visible(self, p: PassTensors) -> torch.Tensor:
        """[n, grid_len] bool: a query sees a slot iff it lies at or before the query in raster order
        and some pass up to this one has written it (never an empty slot, never a later cell)."""
        g = p.grid_len
        return (self.slot_cells[None, :g] <= p.cells[:, None]) & (self.fill_step[None, :g] <= p.index)

    def filled_after(self, s: int) -> torch.Tensor:
        """[H*W] bool, CPU: the cells emitted once pass s is done."""
        return self.emit_step <= s


@lru_cache(maxsize=32)
def build_plan(height: int, width: int, window: int, device: str, row0_first: bool = True) -> Plan:
    """Flat index tensors for every pass; cached because a schedule only depends on its shape and rule."""
    sched = build_schedule(height, width, window, row0_first)
    sources, cells, queries, emits = [], [], [], []
    feed_start, emit_start, grid_lens = [0], [0], []
    for p in sched.passes:
        sources += [f.source for f in p.feeds]
        cells += [f.cell for f in p.feeds]
        queries += [max(q, 0) for q in p.queries]  # pass 0's query is the prefix (read by the loop itself)
        emits += p.emits
        feed_start.append(len(cells))
        emit_start.append(len(emits))
        grid_lens.append(max((f.cell for f in p.feeds), default=-1) + 1)

    def tensor(values, on=device):
        return torch.tensor(values, dtype=torch.long, device=on)

    return Plan(sched, tensor(sources), tensor(cells), tensor(queries), tensor(emits), tuple(feed_start),
                tuple(emit_start), tuple(grid_lens), tensor(sched.fill_step()), torch.arange(height * width, device=device),
                tensor(sched.emit_step(), "cpu"))


@dataclass
class Progress:
    """Handed to a callback after every pass (for progress bars, previews, interrupts)."""

    step: int  # passes done
    total: int
    tokens: torch.Tensor  # [images, H, W] on the model's device; only ``filled`` cells are final
    filled: torch.Tensor  # [H, W] bool (CPU)


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # [images, H, W] int64 on the CPU
    forward_passes: int
    seconds: float
    grid: tuple[int, int]
    window: int
    device: str = ""
    dtype: str = ""
    labels: list[str] = field(default_factory=list)

    @property
    def next_token_passes(self) -> int:
        return self.grid[0] * self.grid[1]

    def stats(self) -> dict:
        return {
            "forward_passes": self.forward_passes,
            "next_token_passes": self.next_token_passes,
            "grid": list(self.grid),
            "window": self.window,
            "images": int(self.tokens.shape[0]),
            "seconds": round(self.seconds, 4),
            "device": self.device,
            "dtype": self.dtype,
        }

    def report(self) -> str:
        """One line for people, e.g. '224 forward passes instead of 576 (-61%), 1.9 s'."""
        saved = 100.0 * (1 - self.forward_passes / self.next_token_passes)
        if self.forward_passes == self.next_token_passes:
            head = f"{self.forward_passes} forward passes (next-token prediction)"
        else:
            head = f"{self.forward_passes} forward passes instead of {self.next_token_passes} (-{saved:.0f}%)"
        return f"{head}, {self.seconds:.1f} s"


ProgressCallback = Callable[[Progress], None]
TraceCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@torch.inference_mode()
def generate(
    model: ARModel,
    cond: Condition,
    grid: tuple[int, int],
    window: int,
    options: SamplingOptions = SamplingOptions(),
    seed: int = 0,
    batch: int = 1,
    callback: ProgressCallback | None = None,
    trace: TraceCallback | None = None,
    row0_first: bool | None = None,
) -> GenerationResult:
    """Generate ``len(cond) * batch`` token grids with ZipAR (window < width) or NTP.

    ``trace(pass_index, emitted_cells, raw_logits)`` sees the unguided logits of both CFG
    branches for every emitted cell; tests use it to check them against uncached forwards.
    ``row0_first`` overrides when row 1 starts; None follows the family's official code
    (``model.row0_first``).
    """
    height, width = grid
    options.validate()
    batch = _as_int(batch, "batch")
    if batch < 1:
        raise ZipARError(f"batch must be at least 1 (got {batch}).")
    if len(cond) == 0:
        raise ZipARError("nothing to generate: the condition is empty (give at least one class id or prompt).")
    window = _as_int(window, "window")
    if row0_first is None:
        row0_first = model.row0_first
    check_memory(model, len(cond), batch, grid, options.guidance)
    with memory_guard(f"generating {len(cond) * batch} image(s) of {height}x{width} tokens",
                      "lower the batch size or the image size"):
        return _generate(model, cond, grid, window, options, seed, batch, callback, trace, bool(row0_first))


def check_memory(model: ARModel, conditions: int, batch: int, grid: tuple[int, int], guidance: bool) -> None:
    """Refuse a request whose key/value cache cannot fit before allocating anything, naming the
    largest batch that would (a huge batch typed into a UI must not take the host down)."""
    images = conditions * batch
    per_image = model.cache_bytes(2 if guidance else 1, grid) + grid[0] * grid[1] * 8
    free = free_bytes(model.device)
    if free is None or images * per_image <= free:
        return
    fit = int(free // per_image) // conditions
    advice = (f"lower the batch size to at most {fit}" if fit >= 1 else
              "even a batch of 1 does not fit: lower the image size or use a device with more memory")
    raise ZipARError(f"{images} image(s) of {grid[0]}x{grid[1]} tokens need about {images * per_image / 1e9:.3g} GB "
                     f"for the key/value cache, but only {free / 1e9:.3g} GB is free on {model.device}; {advice}.")


def _generate(model, cond, grid, window, options, seed, batch, callback, trace, row0_first) -> GenerationResult:
    height, width = grid
    plan = build_plan(height, width, window, str(model.device), row0_first)
    cond = cond.repeat(batch)
    images = len(cond)
    device = model.device
    generator = None if options.greedy else make_generator(seed, device)
    tokens = torch.zeros(images, height * width, dtype=torch.long, device=device)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    session = model.start(cond, grid, options.guidance)
    prepare = getattr(session, "prepare", None)
    if prepare is not None:  # adapters that derive per-pass layouts do it here, once per plan, on the host
        prepare(plan)
    prefix = session.prefix
    rows = prefix.visible.shape[0]
    prefix_mask = prefix.visible[:, None, None, :]
    first = prefix.logits[:, None, :]
    if not bool(torch.isfinite(first).all()):  # one check, on the first pass: the rest would be garbage too
        raise ZipARError("the model's first logits are NaN or infinite: its weights are corrupt, or half precision "
                         "overflowed; try bf16 or fp32 precision, or re-download the model.")
    if trace is not None:
        trace(0, torch.zeros(1, dtype=torch.long), first)
    tokens[:, 0] = _sample(first, options, generator)[:, 0]
    _report(callback, plan, 0, tokens, grid)
    for s in range(1, plan.num_passes):
        p = plan.pass_tensors(s)
        n = p.cells.shape[0]
        ids = tokens[:, p.sources]
        if options.guidance:
            ids = torch.cat([ids, ids])
        visible = plan.visible(p)
        mask = torch.cat([prefix_mask.expand(rows, 1, n, prefix.length), visible.expand(rows, 1, n, p.grid_len)], dim=-1)
        logits = session.step(ids, p.cells, mask, prefix.length + p.grid_len, p.queries, pass_index=s)
        if trace is not None:
            trace(s, p.emits, logits)
        tokens[:, p.emits] = _sample(logits, options, generator)
        _report(callback, plan, s, tokens, grid)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return GenerationResult(
        tokens.view(images, height, width).cpu(),
        plan.schedule.num_passes,
        seconds,
        (height, width),
        window,
        str(device),
        str(model.dtype).removeprefix("torch."),
        list(cond.labels),
    )


def _as_int(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ZipARError(f"{name} must be a whole number (got {value!r}).") from None


def _sample(logits: torch.Tensor, options: SamplingOptions, generator) -> torch.Tensor:
    if options.guidance:
        logits = combine_guidance(logits, options.cfg)
    return sample_tokens(logits, options, generator)


def _report(callback, plan: Plan, step: int, tokens: torch.Tensor, grid) -> None:
    if callback is not None:
        callback(Progress(step + 1, plan.num_passes, tokens.view(-1, *grid), plan.filled_after(step).view(grid)))


def expected_passes(grid: tuple[int, int], window: int, row0_first: bool = True) -> int:
    return num_passes(grid[0], grid[1], window, row0_first)


__all__ = ["generate", "GenerationResult", "Progress", "build_plan", "expected_passes", "PREFIX"]
