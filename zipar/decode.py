"""The decode loop: run a schedule against a model adapter and sample the token grid.

The schedule is turned once into index tensors (which cells to feed, which to emit, what
each input may see), so a pass is a handful of gathers, one forward and one batched
sampling call, with no host-device synchronisation unless a progress callback asks for it.
"""
from __future__ import annotations

import operator
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from .errors import ZipARError
from .models.base import ARModel, Condition
from .sampling import SamplingOptions, combine_guidance, make_generator, sample_tokens
from .schedule import PREFIX, Schedule, build_schedule, num_passes


@dataclass(frozen=True)
class PassTensors:
    sources: torch.Tensor  # [n] grid cells whose tokens are fed (a stand-in's source differs from its cell)
    cells: torch.Tensor  # [n] grid cells whose slots they fill
    queries: torch.Tensor  # [m] index into the inputs whose logits predict each emitted cell
    emits: torch.Tensor  # [m] grid cells emitted
    visible: torch.Tensor  # [n, kv_len - prefix] which grid slots each input may attend to
    grid_len: int  # kv_len - prefix: slots up to the furthest cell fed


@dataclass(frozen=True)
class Plan:
    schedule: Schedule
    passes: tuple[PassTensors, ...]  # passes[0] is the prefill and is empty
    filled_after: torch.Tensor  # [num_passes, H*W] bool, CPU: cells emitted once each pass is done
    # What adapters derive from the plan (e.g. the 1D families' row-end layout), kept as long as the plan
    adapter_cache: dict = field(default_factory=dict, compare=False, repr=False)


@lru_cache(maxsize=32)
def build_plan(height: int, width: int, window: int, device: str, row0_first: bool = True) -> Plan:
    """Index tensors for every pass; cached because a schedule only depends on its shape and rule."""
    sched = build_schedule(height, width, window, row0_first)
    fill_step = torch.tensor(sched.fill_step())
    cells_all = torch.arange(height * width)
    passes = [PassTensors(*(torch.empty(0, dtype=torch.long),) * 5, 0)]
    for s, p in enumerate(sched.passes[1:], start=1):
        cells = torch.tensor([f.cell for f in p.feeds])
        grid_len = int(cells.max()) + 1
        # A query sees a slot iff it lies at or before the query in raster order and some
        # pass up to this one has written it: never an empty slot, never a later cell.
        visible = (cells_all[None, :grid_len] <= cells[:, None]) & (fill_step[None, :grid_len] <= s)
        passes.append(
            PassTensors(
                torch.tensor([f.source for f in p.feeds], device=device),
                cells.to(device),
                torch.tensor(p.queries, device=device),
                torch.tensor(p.emits, device=device),
                visible.to(device),
                grid_len,
            )
        )
    emit_step = torch.tensor(sched.emit_step())
    filled_after = emit_step[None, :] <= torch.arange(sched.num_passes)[:, None]
    return Plan(sched, tuple(passes), filled_after)


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
    if batch < 1:
        raise ZipARError(f"batch must be at least 1 (got {batch}).")
    if len(cond) == 0:
        raise ZipARError("nothing to generate: the condition is empty (give at least one class id or prompt).")
    window = _as_int(window, "window")
    if row0_first is None:
        row0_first = model.row0_first
    plan = build_plan(height, width, window, str(model.device), bool(row0_first))
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
    if trace is not None:
        trace(0, torch.zeros(1, dtype=torch.long), first)
    tokens[:, 0] = _sample(first, options, generator)[:, 0]
    _report(callback, plan, 0, tokens, grid)
    for s in range(1, len(plan.passes)):
        p = plan.passes[s]
        n = p.cells.shape[0]
        ids = tokens[:, p.sources]
        if options.guidance:
            ids = torch.cat([ids, ids])
        mask = torch.cat([prefix_mask.expand(rows, 1, n, prefix.length), p.visible.expand(rows, 1, n, p.grid_len)], dim=-1)
        logits = session.step(ids, p.cells, mask, prefix.length + p.grid_len, p.queries)
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
        callback(Progress(step + 1, plan.schedule.num_passes, tokens.view(-1, *grid), plan.filled_after[step].view(grid)))


def expected_passes(grid: tuple[int, int], window: int, row0_first: bool = True) -> int:
    return num_passes(grid[0], grid[1], window, row0_first)


__all__ = ["generate", "GenerationResult", "Progress", "build_plan", "expected_passes", "PREFIX"]
