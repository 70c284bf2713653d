"""The schedule against the rules of DESIGN.md, checked from its output alone."""
import pytest

from zipar.errors import ZipARError
from zipar.schedule import PREFIX, build_schedule, num_passes

SHAPES = [(h, w, k) for h in (1, 2, 3, 5, 8) for w in (1, 2, 4, 7) for k in range(1, w + 2)]


@pytest.mark.parametrize("window,expected", [(24, 576), (16, 400), (12, 312), (8, 224), (100, 576)])
def test_paper_pass_counts_24x24(window, expected):
    assert build_schedule(24, 24, window).num_passes == expected
    assert num_passes(24, 24, window) == expected


@pytest.mark.parametrize("h,w,k", SHAPES)
def test_pass_count_matches_closed_form(h, w, k):
    expected = h * w if k >= w or h < 2 else w + (h - 2) * k + w
    assert build_schedule(h, w, k).num_passes == expected == num_passes(h, w, k)


@pytest.mark.parametrize("h,w,k", SHAPES)
def test_emission_follows_row_rules(h, w, k):
    sched = build_schedule(h, w, k)
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
            if r == 1:
                assert step[w - 1] < s, "row 1 waits for row 0 to finish"
            if r >= 2:
                need = min(c + k, w)
                assert all(step[(r - 1) * w + j] < s for j in range(need)), "row above is window tokens ahead"
            # and as early as those rules allow: no pass leaves a ready row idle
            needs = [step[r * w + c - 1]] if c > 0 else []
            if r == 1:
                needs.append(step[w - 1])
            if r >= 2:
                needs.append(step[(r - 1) * w + min(c + k, w) - 1])
            earliest = 1 + max(needs) if needs else 0
            assert s == earliest


@pytest.mark.parametrize("h,w,k", SHAPES)
def test_feeds_queries_and_stand_ins(h, w, k):
    sched = build_schedule(h, w, k)
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
                assert f.source // w == r - 2, "borrowed from the row two above"
                row2 = [c for c in range((r - 2) * w, (r - 1) * w) if step[c] < s]
                assert f.source == max(row2), "its most recently emitted token"
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


@pytest.mark.parametrize("bad", [0, -3, 2.5, None, True])
def test_window_must_be_a_positive_integer(bad):
    with pytest.raises(ZipARError, match="window must be between 1 and 24"):
        build_schedule(24, 24, bad)
