"""The ZipAR decoding schedule as plain data: which cells each forward pass feeds and emits.

Pure Python, no tensors, so the rules of docs/engine.md live in one place that tests can check
exhaustively and every decode loop (eager, compiled, a reference replay) reads the same plan.

Cells are raster indices ``i = row * width + col`` of the token grid. Pass 0 is the prefill: it
feeds the condition prefix and emits cell 0 from the prefix's last position. Every later pass
feeds the cells emitted by the pass before it (their key/values enter the cache) plus a
stand-in for each row that starts before its predecessor cell exists, and emits one cell per
active row, each predicted by the feed at the cell just before it in raster order.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ZipARError

PREFIX = -1  # query index meaning "the last position of the condition prefix"


@dataclass(frozen=True)
class Feed:
    """One input of a pass: the token of grid cell ``source`` written into the slot of ``cell``.

    ``source == cell`` for a real token; a stand-in borrows the latest token of the row two
    above until the real one arrives and takes over the slot.
    """

    cell: int
    source: int

    @property
    def is_stand_in(self) -> bool:
        return self.source != self.cell


@dataclass(frozen=True)
class Pass:
    """One forward pass: inputs in raster order, and the cells it emits with their query feed."""

    feeds: tuple[Feed, ...]
    emits: tuple[int, ...]
    queries: tuple[int, ...]  # per emitted cell, the index into ``feeds`` (or PREFIX)


@dataclass(frozen=True)
class Schedule:
    height: int
    width: int
    window: int
    passes: tuple[Pass, ...]
    row0_first: bool = True

    @property
    def num_passes(self) -> int:
        return len(self.passes)

    def emit_step(self) -> list[int]:
        """Pass index at which each cell is emitted (for previews and tests)."""
        steps = [0] * (self.height * self.width)
        for s, p in enumerate(self.passes):
            for cell in p.emits:
                steps[cell] = s
        return steps

    def fill_step(self) -> list[int]:
        """First pass whose inputs write each cell's cache slot (stand-in or real).

        A query may only see slots already written, so this one list is all the
        visibility mask needs besides raster order. The last cell is never fed: it gets
        ``num_passes`` (never visible).
        """
        first = [self.num_passes] * (self.height * self.width)
        for s, p in enumerate(self.passes):
            for f in p.feeds:
                first[f.cell] = min(first[f.cell], s)
        return first


def validate_window(window: int, width: int) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ZipARError(
            f"window must be between 1 and {width} (got {window!r}); {width} means plain next-token prediction."
        )


def num_passes(height: int, width: int, window: int, row0_first: bool = True) -> int:
    """Closed form of the pass count, H*W once window >= W.

    Row 0 first (LlamaGen's official ZipAR): W + (H-2)*window + W, the paper's 400/312/224 at
    24x24. Row 1 like every later row (Lumina-mGPT's official ZipAR): row r starts r*window
    passes in, so the last row ends at (H-1)*window + W.
    """
    validate_window(window, width)
    if height < 2:
        return height * width
    k = min(window, width)
    return 2 * width + (height - 2) * k if row0_first else width + (height - 1) * k


def build_schedule(height: int, width: int, window: int, row0_first: bool = True) -> Schedule:
    """Simulate the row rules one pass at a time.

    ``row0_first``: whether row 1 waits for row 0 to be complete (LlamaGen's official ZipAR
    code) or starts like every later row once row 0 is ``window`` tokens ahead (Lumina-mGPT's).
    Each family states which its official code does; the rest of the rules are shared.
    """
    if height < 1 or width < 1:
        raise ZipARError(f"token grid must be at least 1x1 (got {height}x{width}).")
    validate_window(window, width)
    held = [0] * height  # tokens emitted so far per row
    passes: list[Pass] = []
    previous: tuple[int, ...] = ()
    total = height * width
    emitted: set[int] = set()
    while len(emitted) < total:
        rows = [r for r in range(height) if _may_emit(r, held, width, window, row0_first)]
        feeds = [Feed(cell, cell) for cell in previous]
        for r in rows:
            if held[r] == 0 and r > 0:
                predecessor = r * width - 1
                if predecessor not in emitted:
                    # Row r-1 is unfinished: borrow the newest token of the row two above. Row 1
                    # (only without row0_first) has none and borrows the newest token of row 0.
                    lender = max(r - 2, 0)
                    source = lender * width + held[lender] - 1
                    feeds.append(Feed(predecessor, source))
        feeds.sort(key=lambda f: f.cell)
        slot_of = {f.cell: i for i, f in enumerate(feeds)}
        emits = tuple(r * width + held[r] for r in rows)
        queries = tuple(PREFIX if cell == 0 else slot_of[cell - 1] for cell in emits)
        passes.append(Pass(tuple(feeds), emits, queries))
        for r in rows:
            held[r] += 1
        emitted.update(emits)
        previous = emits
    return Schedule(height, width, window, tuple(passes), row0_first)


def _may_emit(row: int, held: list[int], width: int, window: int, row0_first: bool) -> bool:
    if held[row] >= width:
        return False
    if row == 0:
        return True
    if row == 1 and row0_first:
        return held[0] == width
    return held[row - 1] >= min(held[row] + window, width)
