"""The plan: a schedule turned into flat index tensors on the model's device, once per shape.

The schedule is pure Python; the decode loop needs, per pass, which cells to feed (and from
which source cell), which to emit and from which input, and what each input may see. The
plan stores the first three as flat tensors sliced per pass and one per-cell table (the
pass that first writes each slot); what an input may see is derived from those on the
device for each pass. It thus grows linearly with the grid (storing every pass's mask
would grow with its fourth power), and adapters that need more per-pass layout (the row
ends of Emu3 and Lumina-mGPT) get it from the plan, derived once (``row_end_layout``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from .row_ends import RowEndLayout
from .schedule import Schedule, build_schedule


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
    device: str
    derived: dict = field(default_factory=dict, compare=False, repr=False)  # layouts derived on demand, kept with the plan

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

    def row_end_layout(self) -> RowEndLayout:
        """Every pass in the physical layout of the families whose rows end with a fixed token."""
        if "row_ends" not in self.derived:
            self.derived["row_ends"] = RowEndLayout.from_plan(self, self.device)
        return self.derived["row_ends"]


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
                tensor(sched.emit_step(), "cpu"), device)
