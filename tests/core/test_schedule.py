"""The schedule against the rules of docs/engine.md, checked from its output alone, for both row-1 rules."""
import pytest

from zipar.errors import ZipARError
from zipar.core.schedule import PREFIX, build_schedule, num_passes

SHAPES = [(h, w, k) for h in (1, 2, 3, 5, 8) for w in (1, 2, 4, 7) for k in range(1, w + 2)]
RULES = pytest.mark.parametrize("row0_first", [True, False], ids=["row0-first", "row1-by-window"])


@pytest.mark.parametrize("window,expected", [(24, 576), (16, 400), (12, 312), (8, 224), (100, 576)])
def test_paper_pass_counts_24x24(window, expected):
    assert build_schedule(24, 24, window).num_passes == expected
    assert num_passes(24, 24, window) == expected


@pytest.mark.parametrize("window,expected", [(48, 2304), (32, 1552), (31, 1505), (16, 800), (15, 753), (8, 424)])
def test_lumina_reference_pass_counts_48x48(window, expected):
    """Row 1 by the window rule: ZipAR's Lumina-mGPT code at 768 px takes 756 / 1508 model calls at its
    windows 16 / 32, three of them for the begin-of-image and size tokens we place: 753 / 1505 here."""
    assert build_schedule(48, 48, window, row0_first=False).num_passes == expected
    assert num_passes(48, 48, window, row0_first=False) == expected


@RULES
@pytest.mark.parametrize("h,w,k", SHAPES)
def test_pass_count_matches_closed_form(h, w, k, row0_first):
    if k >= w or h < 2:
        expected = h * w
    else:
        expected = w + (h - 2) * k + w if row0_first else w + (h - 1) * k
    assert build_schedule(h, w, k, row0_first).num_passes == expected == num_passes(h, w, k, row0_first)


@RULES
@pytest.mark.parametrize("h,w,k", SHAPES)
def test_emission_follows_row_rules(h, w, k, row0_first):
    sched = build_schedule(h, w, k, row0_first)
    assert sched.row0_first == row0_first
    step = sched.emit_step()
    assert sorted(c for p in sched.passes for c in p.emits) == list(range(h * w))
    for s, p in enumerate(sched.passes):
        rows = [c // w for c in p.emits]
        assert len(rows) == len(set(rows)), "a row emits at most one token per pass"
    for r in range(h):
        for c in range(w):
            s = step[r * w + c]
            if c > 0:
                assert step[r * w + c - 1] < s, "columns in order"
            waits_for_row0 = r == 1 and row0_first
            if waits_for_row0:
                assert step[w - 1] < s, "row 1 waits for row 0 to finish"
            elif r >= 1:
                need = min(c + k, w)
                assert all(step[(r - 1) * w + j] < s for j in range(need)), "row above is window tokens ahead"
            # and as early as those rules allow: no pass leaves a ready row idle
            needs = [step[r * w + c - 1]] if c > 0 else []
            if waits_for_row0:
                needs.append(step[w - 1])
            elif r >= 1:
                needs.append(step[(r - 1) * w + min(c + k, w) - 1])
            earliest = 1 + max(needs) if needs else 0
            assert s == earliest


@RULES
@pytest.mark.parametrize("h,w,k", SHAPES)
def test_feeds_queries_and_stand_ins(h, w, k, row0_first):
    sched = build_schedule(h, w, k, row0_first)
    step = sched.emit_step()
    real_feed_pass = {}
    for s, p in enumerate(sched.passes):
        cells = [f.cell for f in p.feeds]
        assert cells == sorted(cells) and len(cells) == len(set(cells))
        for f in p.feeds:
            if not f.is_stand_in:
                assert step[f.cell] == s - 1, "a token is fed in the pass right after it is emitted"
                real_feed_pass[f.cell] = s
            else:
                r = f.cell // w + 1  # the row whose first token needs this predecessor
                assert f.cell == r * w - 1 and step[f.cell] >= s, "stand-in only while the real token is missing"
                lender = max(r - 2, 0)  # row 1 has no row two above: it borrows from row 0
                assert r >= 2 or not row0_first, "with row 0 first, row 1 never starts early"
                assert f.source // w == lender, "borrowed from the row two above"
                emitted = [c for c in range(lender * w, (lender + 1) * w) if step[c] < s]
                assert f.source == max(emitted), "its most recently emitted token"
        for cell, q in zip(p.emits, p.queries):
            if cell == 0:
                assert s == 0 and q == PREFIX
            else:
                assert p.feeds[q].cell == cell - 1, "each cell is predicted from the input just before it"
    assert set(real_feed_pass) == set(range(h * w - 1)), "every token but the last enters the cache"


def test_stand_ins_only_below_full_window():
    assert not any(f.is_stand_in for p in build_schedule(6, 6, 6).passes for f in p.feeds)
    sched = build_schedule(24, 24, 8)
    stand_ins = [f for p in sched.passes for f in p.feeds if f.is_stand_in]
    assert len(stand_ins) == 22  # rows 2..23 each start early once
    first = stand_ins[0]
    assert (first.cell, first.source) == (1 * 24 + 23, 0 * 24 + 23)  # the token right above the gap
    by_window = [f for p in build_schedule(24, 24, 8, row0_first=False).passes for f in p.feeds if f.is_stand_in]
    assert len(by_window) == 23  # row 1 starts early too
    assert (by_window[0].cell, by_window[0].source) == (23, 7)  # row 0's newest token when row 1 starts


@pytest.mark.parametrize("bad", [0, -3, 2.5, None, True])
def test_window_must_be_a_positive_integer(bad):
    with pytest.raises(ZipARError, match="window must be between 1 and 24"):
        build_schedule(24, 24, bad)
