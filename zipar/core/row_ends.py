"""The physical layout of a plan when every grid row ends with a fixed end-of-line token.

Emu3 and Lumina-mGPT read an image as rows of W codes each followed by an end-of-line (EOL)
token that counts as a position. The schedule speaks in grid cells; here each pass's inputs
are mapped to physical slots (stride W + 1) and every feed of a row's last cell, real or
stand-in, is followed by that row's EOL in the same pass. Derived once per plan on the host
(``Plan.row_end_layout``) and stored flat, so it grows linearly with the grid and no pass
reads its cells back from the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .plan import Plan


@dataclass(frozen=True)
class PassLayout:
    """Index tensors that turn one logical step (cells) into the physical one (cells + EOLs).

    Independent of the prompt length P (slots are counted after the prompt), so one table
    serves every prompt of a plan.
    """

    offsets: torch.Tensor  # [n + e] physical slot = position offset after the prompt
    eol_rows: torch.Tensor  # [e] which inputs are followed by an EOL
    queries: torch.Tensor  # [m] physical query index
    grid_len: int  # G': physical slots after the prompt up to the furthest input


@dataclass(frozen=True)
class RowEndColumns:
    """Per grid shape, for every physical slot after the prompt (stride W + 1), the logical cell
    whose visibility it copies: its own, or for an EOL the row's last cell. One table of
    H * (W + 1) entries; each pass reads a prefix of it."""

    columns: torch.Tensor  # [H * (W + 1)] long

    @classmethod
    def build(cls, height: int, width: int, device) -> "RowEndColumns":
        slots = torch.arange(height * (width + 1), device=device)
        r, c = slots // (width + 1), slots % (width + 1)
        return cls(r * width + c.clamp(max=width - 1))


def physical_cells(cells: torch.Tensor, width: int, stride: int) -> torch.Tensor:
    return (cells // width) * stride + cells % width


def expand_pass(cells: torch.Tensor, queries: torch.Tensor, grid_len: int, width: int) -> tuple[torch.Tensor, ...]:
    """The physical layout of one pass with row ends (stride W + 1), from host tensors:
    (offsets [n + e], eol_rows [e], physical queries [m], physical grid length)."""
    stride = width + 1
    phys = physical_cells(cells, width, stride)
    row_end = cells % width == width - 1
    eol_rows = row_end.nonzero().flatten()
    last = grid_len - 1
    phys_len = int(physical_cells(torch.tensor(last), width, stride)) + 1 + int(last % width == width - 1)
    rank = torch.cumsum(row_end.long(), 0) - 1
    phys_queries = torch.where(row_end[queries], len(cells) + rank[queries], queries)
    offsets = torch.cat([phys, phys[eol_rows] + 1])
    return offsets, eol_rows, phys_queries, phys_len


@dataclass(frozen=True)
class RowEndLayout:
    """Every pass of a plan in the physical layout, as flat tensors (linear in the grid size):
    derived once per plan on the host, so no pass reads its cells back from the device."""

    offsets: torch.Tensor
    eol_rows: torch.Tensor
    queries: torch.Tensor
    offset_start: tuple[int, ...]
    eol_start: tuple[int, ...]
    query_start: tuple[int, ...]
    grid_lens: tuple[int, ...]

    @classmethod
    def from_plan(cls, plan: "Plan", device) -> "RowEndLayout":
        sched, width = plan.schedule, plan.schedule.width
        parts: tuple[list, list, list] = ([], [], [])
        starts: tuple[list, list, list] = ([0], [0], [0])
        grid_lens = [0]
        for sp in sched.passes[1:]:
            cells = torch.tensor([f.cell for f in sp.feeds], dtype=torch.long)
            queries = torch.tensor(sp.queries, dtype=torch.long)
            *pieces, phys_len = expand_pass(cells, queries, int(cells.max()) + 1, width)
            for part, start, piece in zip(parts, starts, pieces):
                part.append(piece)
                start.append(start[-1] + len(piece))
            grid_lens.append(phys_len)

        def flat(pieces):
            return torch.cat(pieces).to(device) if pieces else torch.empty(0, dtype=torch.long, device=device)

        # index p of the starts is pass p + 1 (pass 0, the prefill, has no row-end layout)
        return cls(*(flat(part) for part in parts), *(tuple(start) for start in starts), tuple(grid_lens))

    def pass_(self, s: int) -> PassLayout:
        i = s - 1
        return PassLayout(self.offsets[self.offset_start[i]:self.offset_start[i + 1]],
                          self.eol_rows[self.eol_start[i]:self.eol_start[i + 1]],
                          self.queries[self.query_start[i]:self.query_start[i + 1]], self.grid_lens[i + 1])
