"""Which speculative results are final: per-cell commits over a plan's inputs (host bookkeeping).

A plan fixes, for every input (a cell's token fed into its cache slot, a stand-in, a row's
end-of-line token), the pass it belongs to, and so exactly which slots it may see: those at
or before it in raster order that a pass up to its own has written. The image's distribution
is the product over cells of the model's distribution given that context. A speculative
forward may feed any inputs at all, with drafts where tokens are missing; what it computes
for an input is only *right* when every slot the input may see holds, at that moment, the
final token of the feed the plan has there at the input's pass, itself computed right. So:

- an input is right iff the token it feeds is final (committed earlier, or kept in this very
  forward) and every slot it may see is right, with the plan's version of the slot (a stand-in
  until the pass that writes the real token, the real token from then on);
- a cell's verdict (kept draft or redrawn token) is final iff the input it is read at is
  right; that cell is then committed, whatever happens to any other cell.

Rows never see lower rows, so a refusal in row r stops the commits of row r (its later cells
see the redrawn cell's slot, which held the refused draft) and of the rows that may see it,
never of the rows above; each row commits up to its own first refusal, bounded by what the
plan lets it see of the rows above. Since whether a cell commits depends only on the cells its
context holds (never on the cell's own draft or on lower rows), every committed token is
distributed as the model's ``p`` given exactly its plan context (docs/engine.md gives the
argument), and the images follow the plan's distribution.

A slot fed twice by the plan (a stand-in, then its real token) holds one value at a time: the
real token is only fed once every input that must see the stand-in is right in every image
(``gate_open``), so no plan context is ever lost.

Pure numpy on the host: the forward itself knows nothing of this.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .static_step import StaticTables


@dataclass(frozen=True)
class PlanInputs:
    """Every input of a plan after the prefix, flat (index = input id), and every emitted cell."""

    passes: np.ndarray  # [K] the pass each input belongs to
    sources: np.ndarray  # [K] the cell whose token it feeds (a stand-in: another cell's)
    offsets: np.ndarray  # [K] the physical slot it writes (= its raster order)
    row_end: np.ndarray  # [K] bool: a row's end-of-line token (its token is fixed)
    rows: np.ndarray  # [K] the grid row of its slot
    slot_row: np.ndarray  # [S] the grid row of each slot
    cell_slot: np.ndarray  # [H*W] the slot of each cell (row ends shift the slots of later rows)
    emit_of: np.ndarray  # [K] the cell its query predicts, -1 if none
    query_of: np.ndarray  # [H*W] the input each cell is read at (-1: cell 0, read at the prefix)
    slot_order: np.ndarray  # [S] raster order per slot (the scratch slot last, never seen)
    slot_fill: np.ndarray  # [S] first pass that writes each slot
    first_feed: np.ndarray  # [S] the input that writes each slot first (-1: none)
    second_feed: np.ndarray  # [S] the input that writes it again (a stand-in's real token), -1: none
    second_pass: np.ndarray  # [S] that input's pass (a huge number: none)
    gate_deps: dict  # second feed -> inputs of earlier passes that see its slot (they need the first value)

    @property
    def count(self) -> int:
        return len(self.passes)

    def visible(self, k: int) -> np.ndarray:
        """Slots input ``k`` may see, itself excluded."""
        vis = (self.slot_order <= self.offsets[k]) & (self.slot_fill <= self.passes[k])
        vis[self.offsets[k]] = False
        return np.flatnonzero(vis)

    def expected(self, slots: np.ndarray, at_pass: int) -> np.ndarray:
        """Which feed the plan has in each slot at a pass: the first, or the second from its pass on."""
        second = self.second_feed[slots]
        return np.where((second >= 0) & (self.second_pass[slots] <= at_pass), second, self.first_feed[slots])


def plan_inputs(tables: StaticTables, width: int) -> PlanInputs:
    passes, sources, offsets, row_end, emit_of = [], [], [], [], []
    cells = len(tables.slot_fill) - 1  # image slots
    emits_q = []
    for s, seg in enumerate(tables.segments):
        if seg is None:
            continue
        base = len(passes)
        passes += seg.passes
        sources += seg.sources
        offsets += seg.offsets
        row_end += seg.row_end
        emit_of += [-1] * len(seg.passes)
        for q, e in zip(seg.queries, seg.emits):
            emit_of[base + q] = e
            emits_q.append((e, base + q))
    grid_cells = tables.dummy
    query_of = np.full(grid_cells, -1, dtype=np.int64)
    for e, k in emits_q:
        query_of[e] = k
    offsets_a = np.asarray(offsets, dtype=np.int64)
    passes_a = np.asarray(passes, dtype=np.int64)
    stride = tables.image_slots // (grid_cells // width)
    slot_order = tables.slot_order.cpu().numpy()
    slot_fill = tables.slot_fill.cpu().numpy()
    first = np.full(cells + 1, -1, dtype=np.int64)
    second = np.full(cells + 1, -1, dtype=np.int64)
    second_pass = np.full(cells + 1, np.iinfo(np.int64).max, dtype=np.int64)
    for k in np.argsort(passes_a, kind="stable"):
        o = offsets_a[k]
        if first[o] < 0:
            first[o] = k
        elif second[o] < 0:
            second[o], second_pass[o] = k, passes_a[k]
        else:
            raise AssertionError(f"slot {o} is fed three times by the plan")
    gate_deps = {}
    for o in np.flatnonzero(second >= 0):
        b = second[o]
        sees = (offsets_a >= slot_order[o]) & (passes_a >= slot_fill[o]) & (passes_a < second_pass[o])
        gate_deps[int(b)] = np.flatnonzero(sees)
    return PlanInputs(passes_a, np.asarray(sources, dtype=np.int64), offsets_a,
                      np.asarray(row_end, dtype=bool), offsets_a // stride, np.arange(cells + 1) // stride,
                      (np.arange(grid_cells) // width) * stride + np.arange(grid_cells) % width, np.asarray(emit_of, dtype=np.int64),
                      query_of, slot_order, slot_fill, first, second, second_pass, gate_deps)


def context_ok(ok: np.ndarray, versions_match: np.ndarray, other_row: np.ndarray) -> np.ndarray:
    """[images] whether every slot an input may see (``ok`` [images, slots]) is right in that image
    and holds the plan's version. ``other_row`` [slots] marks the slots of rows above the input's;
    a rule that trusted them (committing a row whatever the rows above it did) is the broken
    twin a test swaps in, and must see the distribution break."""
    return ok.all(1) & bool(versions_match.all())


class CommitBook:
    """Per image: which cells are final, which slots hold right values, which inputs are done."""

    def __init__(self, inputs: PlanInputs, images: int, cells: int):
        self.inputs = inputs
        slots = len(inputs.slot_order)
        self.final = np.zeros((images, cells), dtype=bool)
        self.final[:, 0] = True  # read at the prefix
        self.ok = np.zeros((images, slots), dtype=bool)
        self.version = np.full(slots, -1, dtype=np.int64)
        self.done = np.zeros((images, inputs.count), dtype=bool)
        self._visible: dict[int, np.ndarray] = {}

    def visible(self, k: int) -> np.ndarray:
        v = self._visible.get(k)
        if v is None:
            v = self._visible[k] = self.inputs.visible(k)
        return v

    @property
    def complete(self) -> bool:
        return bool(self.final.all())

    def pending(self) -> np.ndarray:
        """Inputs not yet right in every image, whose slot may be fed now (a real token only
        once nothing needs the stand-in before it)."""
        todo = ~self.done.all(0)
        for b, deps in self.inputs.gate_deps.items():
            if todo[b] and not self.done[:, deps].all():
                todo[b] = False
        return np.flatnonzero(todo)

    def settle(self, fed: list[int], fed_tokens: np.ndarray, tokens_after: np.ndarray) -> tuple[list[int], np.ndarray]:
        """After a forward that fed the inputs ``fed`` (tokens ``fed_tokens`` [images, len(fed)])
        and left ``tokens_after`` [images, cells]: mark what is right and final.
        -> (cells read in this forward, [images, that many] bool: final by this forward)."""
        inp = self.inputs
        order = sorted(range(len(fed)), key=lambda j: inp.offsets[fed[j]])
        read, newly = [], []
        for j in order:
            k = fed[j]
            if inp.row_end[k]:
                token_ok = np.ones(self.final.shape[0], dtype=bool)
            else:
                src = inp.sources[k]
                token_ok = self.final[:, src] & (tokens_after[:, src] == fed_tokens[:, j])
            vis = self.visible(k)
            right = token_ok & context_ok(self.ok[:, vis], self.version[vis] == inp.expected(vis, inp.passes[k]),
                                          inp.slot_row[vis] != inp.rows[k])
            slot = inp.offsets[k]
            self.ok[:, slot] = right
            self.version[slot] = k
            self.done[:, k] |= right
            cell = inp.emit_of[k]
            if cell >= 0:
                now = right & ~self.final[:, cell]
                self.final[:, cell] |= right
                read.append(int(cell))
                newly.append(now)
        return read, (np.stack(newly, 1) if newly else np.zeros((self.final.shape[0], 0), dtype=bool))

    def main_input(self, cell: int) -> int:
        """The input that feeds ``cell``'s own token into its own slot (the real feed)."""
        inp = self.inputs
        slot = inp.cell_slot[cell]
        return int(inp.second_feed[slot]) if inp.second_feed[slot] >= 0 else int(inp.first_feed[slot])

    def context_before(self, k: int, start: int) -> np.ndarray:
        """[images] whether the main slots input ``k`` may see before raster order ``start`` are right
        and hold the plan's version (what a branch input at ``k``'s position sees besides its branch)."""
        inp = self.inputs
        vis = self.visible(k)
        vis = vis[inp.slot_order[vis] < start]
        return context_ok(self.ok[:, vis], self.version[vis] == inp.expected(vis, inp.passes[k]),
                          inp.slot_row[vis] != inp.rows[k])

    def settle_branch(self, cells: list[int], first_right: np.ndarray, fed_tokens: np.ndarray,
                      verdicts: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """A branch fed an alternative token at ``cells[0]`` and the main drafts of ``cells[1:]``, each in
        a slot of its own at that cell's position; its input j's query gave ``verdicts[:, j]`` for the
        cell after ``cells[j]``. ``first_right`` [images]: the alternative is ``cells[0]``'s final token
        and everything the branch's first input sees besides itself is right. Commits, per image, each
        verdict read at a right input -> [(cell, [images] committed by this branch now)]."""
        start = self.inputs.offsets[self.main_input(cells[0])]
        right = first_right.copy()
        out = []
        for j, cell in enumerate(cells):
            if j:  # the branch's own previous verdict must have kept the draft it fed here
                right &= (verdicts[:, j - 1] == fed_tokens[:, j]) & self.context_before(self.main_input(cell), start)
            nxt = int(self.inputs.emit_of[self.main_input(cell)])
            if nxt < 0 or not right.any():
                break
            now = right & ~self.final[:, nxt]
            self.final[:, nxt] |= right
            out.append((nxt, now))
        return out

    def passes_done(self, emit_pass: np.ndarray) -> int:
        """The last pass all of whose cells (and all earlier passes' cells) are final in every image."""
        pending = ~self.final.all(0)
        if not pending.any():
            return int(emit_pass.max())
        return int(emit_pass[pending].min()) - 1
