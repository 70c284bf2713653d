"""Speculative Jacobi decoding: the plan's own tokens (greedy) and distribution (sampling), in
fewer forwards, with every logit used to accept a token equal to an uncached forward."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from helpers.four_families import FAMILIES
from helpers.reference import replay_logits
from helpers.tiny_gpt import make_tiny_gpt
from zipar.conditions import class_condition
from zipar.core import commits, speculative, static_step, verify
from zipar.core.loop import expected_passes, generate
from zipar.core.plan import build_plan
from zipar.core.sampling import SamplingOptions, probabilities
from zipar.core.schedule import build_schedule
from zipar.core.static_step import static_tables
from zipar.errors import ZipARError
from zipar.families.llamagen import LlamaGenModel

GRID = (5, 6)


def tiny(seed: int = 1, **overrides) -> LlamaGenModel:
    return LlamaGenModel(make_tiny_gpt("c2i", seed=seed, **overrides))


# ----------------------------------------------------------------------------- greedy: the same tokens

@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_equal_the_plan_for_every_family(four_families, family):
    """NTP and ZipAR greedy tokens, token for token, with rows committing on their own and draft
    branches; at full window every forward completes at least one more planned pass."""
    model, cond, grid = four_families[family]
    static_step.release(model)
    saved = branched = 0
    for cfg, window, draft_length in itertools.product((1.0, 3.0), (grid[1], 2, 1), (1, 3, 8)):
        opts = SamplingOptions(cfg=cfg, greedy=True)
        plain = generate(model, cond, grid, window, opts)
        steps = []
        spec = generate(model, cond, grid, window, opts, speculative=True, draft_length=draft_length,
                        callback=lambda p: steps.append(p.step))
        assert torch.equal(spec.tokens, plain.tokens), (cfg, window, draft_length)
        # progress never goes back; a forward completes the earliest pass not yet final, often more
        # (at a window, a stand-in's real token may wait one forward for the inputs that see the stand-in)
        assert steps == sorted(steps) and steps[-1] == plain.forward_passes
        assert len(steps) == spec.forward_passes <= plain.forward_passes
        if window >= grid[1]:
            assert len(set(steps)) == len(steps)
        assert spec.speculative and spec.draft_length == draft_length
        saved += plain.forward_passes - spec.forward_passes
        branched += spec.branch_tokens
        if draft_length == 3:
            bare = generate(model, cond, grid, window, opts, speculative=True, draft_length=3, draft_branches=False)
            assert torch.equal(bare.tokens, plain.tokens) and bare.branch_tokens == 0
    assert saved > 0, "no pass was ever saved: the check would be vacuous"
    assert branched > 0, "no token ever came through a draft branch: the check would be vacuous"
    static_step.release(model)


@pytest.mark.parametrize("family", ["llamagen", "emu3"])
def test_the_compiled_step_verifies_drafts_too(four_families, family):
    """The speculative forward is the bucketed step itself, traced whole (fullgraph) by
    torch.compile: the same tokens as the uncompiled step, sampled and greedy."""
    model, cond, grid = four_families[family]
    static_step.release(model)
    for opts in (SamplingOptions(cfg=3.0, greedy=True), SamplingOptions(cfg=3.0, top_k=20)):
        plain = generate(model, cond, grid, 2, opts, seed=4, speculative=True, draft_length=3)
        traced = generate(model, cond, grid, 2, opts, seed=4, speculative=True, draft_length=3,
                          compile_backend="aot_eager")
        assert torch.equal(plain.tokens, traced.tokens) and traced.compiled and traced.graphs_built >= 1
        assert traced.forward_passes == plain.forward_passes
    static_step.release(model)


@pytest.mark.parametrize("row0_first", [True, False], ids=["row0-first", "row1-by-window"])
@pytest.mark.parametrize("window", [GRID[1], 3, 1])
def test_greedy_saves_passes_and_counts_them(window, row0_first):
    model = tiny()
    cond = class_condition([3, 7])
    opts = SamplingOptions(cfg=1.0, greedy=True)
    plain = generate(model, cond, GRID, window, opts, row0_first=row0_first)
    forwards = []
    spec = generate(model, cond, GRID, window, opts, row0_first=row0_first, speculative=True, draft_length=4,
                    trace=lambda s, cells, logits: forwards.append(s))
    assert torch.equal(spec.tokens, plain.tokens)
    assert plain.forward_passes == expected_passes(GRID, window, row0_first)
    assert spec.forward_passes < plain.forward_passes
    assert forwards[0] == 0 and forwards[1:] == sorted(set(forwards[1:]))  # the prefix, then forwards in order
    assert len(set(forwards)) <= spec.forward_passes  # a forward that commits nothing new traces nothing
    stats = spec.stats()
    assert stats["speculative"] and stats["tokens_per_pass"] == round(30 / spec.forward_passes, 3)
    assert spec.drafts_accepted > 0 and "drafts accepted per pass" in spec.report()


# ----------------------------------------------------------------------------- every logit, uncached

@pytest.mark.parametrize("row0_first", [True, False], ids=["row0-first", "row1-by-window"])
@pytest.mark.parametrize("window", [GRID[1], 4, 2, 1])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_logits_that_accept_tokens_equal_an_uncached_forward(window, row0_first, cfg):
    """The logits used to accept (or draw) each token are an uncached forward over exactly the
    context the plan gives that token, although drafts, refused drafts and stand-ins shared the
    forwards."""
    model = tiny()
    cond = class_condition([3, 7])
    seen = {}

    def trace(step, cells, logits):
        for j, cell in enumerate(cells.tolist()):
            assert cell not in seen
            seen[cell] = logits[:, j].clone()

    result = generate(model, cond, GRID, window, SamplingOptions(cfg=cfg, temperature=1.0, top_k=30), seed=5,
                      trace=trace, row0_first=row0_first, speculative=True, draft_length=3)
    expected = replay_logits(model, cond, cfg != 1.0, build_schedule(*GRID, window, row0_first), result.tokens)
    assert sorted(seen) == sorted(expected) == list(range(30))
    for cell in seen:
        torch.testing.assert_close(seen[cell], expected[cell], rtol=1e-4, atol=1e-4, msg=f"cell {cell}")
    assert result.forward_passes < expected_passes(GRID, window, row0_first) or window == 1


def test_slots_fed_twice_are_the_stand_ins_and_wait_for_what_sees_them():
    """The slots the plan feeds twice are exactly the stand-ins' (none at full window); the real
    token's feed waits for every earlier input that sees the stand-in (``CommitBook.pending``)."""
    for window, row0_first in ((2, True), (1, False), (3, True)):
        plan = build_plan(*GRID, window, "cpu", row0_first)
        inputs = commits.plan_inputs(static_tables(plan, False), GRID[1])
        stand_in_slots = {f.cell for p in plan.schedule.passes for f in p.feeds if f.source != f.cell}
        assert set(np.flatnonzero(inputs.second_feed >= 0).tolist()) == stand_in_slots and stand_in_slots
        book = commits.CommitBook(inputs, 1, GRID[0] * GRID[1])
        for real, deps in inputs.gate_deps.items():
            assert len(deps) and (inputs.passes[deps] < inputs.passes[real]).all()
            assert real not in book.pending().tolist()
            book.done[:, deps] = True
            assert real in book.pending().tolist()
    inputs = commits.plan_inputs(static_tables(build_plan(*GRID, GRID[1], "cpu", True), True), GRID[1])
    assert not (inputs.second_feed >= 0).any()


# ----------------------------------------------------------------------------- the distribution

def exact_distribution(model, cls: int, grid, window: int, row0_first: bool, opts: SamplingOptions) -> torch.Tensor:
    key = (id(model), cls, tuple(grid), window, row0_first, opts)
    if key not in _EXACT:  # 4,096 uncached replays per case: computed once per model and case
        _EXACT[key] = _exact_distribution(model, cls, grid, window, row0_first, opts)
    return _EXACT[key]


_EXACT: dict = {}


def _exact_distribution(model, cls: int, grid, window: int, row0_first: bool, opts: SamplingOptions) -> torch.Tensor:
    """[V ** 6] probability of every grid of six cells (raster order, base V) under the plan's own sampling,
    from uncached forwards: the product over cells of the sampled distribution given the context
    the plan gives each cell."""
    vocab = model.gpt.config.vocab_size
    grids = torch.tensor(list(itertools.product(range(vocab), repeat=6)), dtype=torch.long)
    n = grids.shape[0]
    cond = class_condition([cls] * n)
    logits = replay_logits(model, cond, True, build_schedule(*grid, window, row0_first), grids.view(n, *grid))
    prob = torch.ones(n, dtype=torch.float64)
    for cell in range(6):
        c, u = logits[cell].float().chunk(2)
        guided = u + opts.cfg * (c - u)
        p = probabilities(guided, opts.temperature, opts.top_k, opts.top_p)
        prob *= p.gather(-1, grids[:, cell:cell + 1])[:, 0].double()
    assert abs(float(prob.sum()) - 1.0) < 1e-6
    return prob


def chi_square_p(counts: torch.Tensor, prob: torch.Tensor, draws: int) -> float:
    """p-value of Pearson's test, outcomes expected fewer than 5 times pooled into one bin."""
    expected = prob * draws
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))


DRAWS = 5000  # the broken rule below fails at 2,000 draws with p < 1e-190; 5,000 keeps power for subtler errors


def speculative_counts(model, cls, grid, window, row0_first, opts, draws=DRAWS, batch=25):
    vocab = model.gpt.config.vocab_size
    weights = vocab ** torch.arange(5, -1, -1)
    counts = torch.zeros(vocab ** 6, dtype=torch.long)
    forwards = 0
    for seed in range(draws // batch):
        r = generate(model, class_condition([cls]), grid, window, opts, seed=seed, batch=batch,
                     row0_first=row0_first, speculative=True, draft_length=3)
        counts += torch.bincount((r.tokens.view(batch, 6) * weights).sum(1), minlength=vocab ** 6)
        forwards += r.forward_passes
    return counts, forwards / (draws // batch)


DIST_OPTS = SamplingOptions(cfg=2.0, temperature=0.7, top_k=3)
# (grid, window, row0_first): next-token prediction on 2x3, and ZipAR on 3x2 at window 1 (row 2
# starts beside row 1 on a stand-in, which its real token later replaces): 5 planned passes;
# and 2x3 at window 1 with row 1 starting beside row 0, so that a cell of row 1 sees a cell of
# row 0 that may still be a draft when row 1's own draft is checked (rows commit on their own)
DIST_CASES = {"ntp": ((2, 3), 3, True), "zipar-1": ((3, 2), 1, True), "zipar-1-row1": ((2, 3), 1, False)}


@pytest.fixture(scope="module")
def dist_model():
    return tiny(seed=4, vocab_size=4)


@pytest.mark.parametrize("case", DIST_CASES)
def test_speculative_samples_follow_the_plans_distribution(dist_model, case):
    """5,000 images in batches of 25, fixed seeds, against the enumerated distribution."""
    grid, window, row0_first = DIST_CASES[case]
    prob = exact_distribution(dist_model, 3, grid, window, row0_first, DIST_OPTS)
    counts, forwards = speculative_counts(dist_model, 3, grid, window, row0_first, DIST_OPTS)
    planned = expected_passes(grid, window, row0_first)
    # whole passes of drafts were accepted (a batch of 25 rarely saves one of only 4 passes)
    assert forwards < planned or (planned == 4 and forwards == planned)
    assert chi_square_p(counts, prob, int(counts.sum())) > 1e-3


def test_a_broken_acceptance_rule_is_caught(dist_model, monkeypatch):
    """The test above must be able to fail: redrawing a refused cell from p instead of the
    residual max(0, p - q) over-weights the drafts, and the chi-square test sees it."""
    monkeypatch.setattr(verify, "redraw_weights", lambda p, q: p)
    grid, window, row0_first = DIST_CASES["ntp"]
    prob = exact_distribution(dist_model, 3, grid, window, row0_first, DIST_OPTS)
    counts, _ = speculative_counts(dist_model, 3, grid, window, row0_first, DIST_OPTS, draws=2000, batch=50)
    assert chi_square_p(counts, prob, int(counts.sum())) < 1e-3


def _scd_draft_q(old_q, target, kept):
    """SCD's Lumina/Janus samplers: a kept draft keeps recording the old q, a redrawn one records p."""
    kept = torch.as_tensor(kept)
    if old_q is None:
        return None if bool(kept.all()) else target
    return torch.where(kept[:, None], old_q, target)


def _uniform_bonus(p, q):
    """SJD-PAC's pad: a cell with no draft (every draft before it passed) is drawn uniformly."""
    r = (p - q).clamp_min(0)
    no_draft = q.sum(-1, keepdim=True) == 0
    return torch.where(no_draft, torch.ones_like(p), torch.where(r.sum(-1, keepdim=True) > 0, r, p))


def _trust_rows_above(ok, versions_match, other_row):
    """Commit a row whatever the rows above it hold: what a row-parallel sampler without checks does."""
    return ok[:, ~other_row].all(1) & bool(versions_match.all())


def _longest_leaf(final, alts, child_kept, refused):
    """SJD-PAC (a): the path is chosen by what the subtree accepted (here: the first sibling whose
    child kept its draft), not by the sibling's own check."""
    first = np.where(child_kept.any(1), child_kept.argmax(1), -1)
    match = final[:, None] == alts
    return np.where(first >= 0, first, np.where(match.any(1), match.argmax(1), -1))


def _sibling_checked_as_from_p(final, alts, child_kept, refused):
    """SJD-PAC (b): siblings that came from elsewhere checked as if drawn from ``p`` (where the
    check min(1, p / p) always passes): a refused cell takes its first sibling."""
    match = final[:, None] == alts
    return np.where(refused, 0, np.where(match.any(1), match.argmax(1), -1))


BROKEN_RULES = {  # name -> (module, attribute, broken twin, case)
    "sjd-pac-longest-leaf": (speculative, "take_branch", _longest_leaf, "ntp"),
    "sjd-pac-sibling-as-if-from-p": (speculative, "take_branch", _sibling_checked_as_from_p, "ntp"),
    "rows-above-trusted": (commits, "context_ok", _trust_rows_above, "zipar-1-row1"),
    "bonus-from-uniform": (verify, "redraw_weights", _uniform_bonus, "ntp"),
    "scd-kept-draft-keeps-old-q": (speculative, "next_draft_q", _scd_draft_q, "zipar-1"),
}


@pytest.mark.parametrize("rule", BROKEN_RULES)
def test_each_broken_rule_is_caught(dist_model, monkeypatch, rule):
    """Errors published samplers make, each swapped in for the right rule: the same chi-square
    test must reject every one (at 2,000 draws)."""
    module, name, twin, case = BROKEN_RULES[rule]
    monkeypatch.setattr(module, name, twin)
    grid, window, row0_first = DIST_CASES[case]
    prob = exact_distribution(dist_model, 3, grid, window, row0_first, DIST_OPTS)
    counts, _ = speculative_counts(dist_model, 3, grid, window, row0_first, DIST_OPTS, draws=2000, batch=50)
    assert chi_square_p(counts, prob, int(counts.sum())) < 1e-3


def test_rows_commit_past_a_refusal_below_them():
    """A forward commits cells of an upper row at passes later than a lower row's first
    uncommitted cell: rows advance on their own (a joint commit would stop at that pass)."""
    model = tiny()
    grid, window = (6, 8), 2
    plan = build_plan(*grid, window, "cpu", True)
    final, ahead = set(), 0

    def trace(step, cells, logits):
        nonlocal ahead
        if step == 0:
            final.add(0)
            return
        final.update(cells.tolist())
        pending = [c for c in range(48) if c not in final]
        if pending:
            first = min(int(plan.emit_step[c]) for c in pending)
            ahead += any(int(plan.emit_step[c]) > first for c in final)
    for seed in range(3):
        final.clear()
        generate(model, class_condition([5]), grid, window, SamplingOptions(cfg=3.0, top_k=20), seed=seed,
                 trace=trace, speculative=True, draft_length=6)
    assert ahead > 0


def test_the_plain_sampler_passes_the_same_check(dist_model):
    """Calibration: the chi-square test accepts the plain (non-speculative) sampler."""
    grid, window, row0_first = DIST_CASES["zipar-1"]
    prob = exact_distribution(dist_model, 3, grid, window, row0_first, DIST_OPTS)
    weights = 4 ** torch.arange(5, -1, -1)
    r = generate(dist_model, class_condition([3]), grid, window, DIST_OPTS, seed=1, batch=DRAWS,
                 row0_first=row0_first)
    counts = torch.bincount((r.tokens.view(-1, 6) * weights).sum(1), minlength=4 ** 6)
    assert chi_square_p(counts, prob, DRAWS) > 1e-3


# ----------------------------------------------------------------------------- seeds, progress, cancel, errors

def test_a_seed_reproduces_the_image_and_another_seed_changes_it():
    model = tiny()
    cond = class_condition([3])
    opts = SamplingOptions(cfg=3.0, temperature=1.0, top_k=40)
    a = generate(model, cond, GRID, 2, opts, seed=7, speculative=True)
    b = generate(model, cond, GRID, 2, opts, seed=7, speculative=True)
    c = generate(model, cond, GRID, 2, opts, seed=8, speculative=True)
    assert torch.equal(a.tokens, b.tokens) and a.forward_passes == b.forward_passes
    assert not torch.equal(a.tokens, c.tokens)


def test_progress_shows_committed_cells_that_never_change_and_cancel_stops():
    model = tiny()
    cond = class_condition([3, 7])
    plan_passes = expected_passes(GRID, 2)
    steps, finals = [], {}

    def callback(p):
        steps.append(p.step)
        assert p.total == plan_passes
        for cell in p.filled.flatten().nonzero()[:, 0].tolist():
            value = p.tokens.view(2, -1)[:, cell].tolist()
            assert finals.setdefault(cell, value) == value  # a shown cell is final

    result = generate(model, cond, GRID, 2, SamplingOptions(cfg=3.0), seed=2, callback=callback,
                      speculative=True, draft_length=4)
    assert steps == sorted(set(steps)) and steps[-1] == plan_passes and len(steps) == result.forward_passes
    assert len(finals) == 30
    assert all(finals[c] == result.tokens.view(2, -1)[:, c].tolist() for c in finals)

    class Cancelled(Exception):
        pass

    def cancel(p):
        if p.step > 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        generate(model, cond, GRID, 2, SamplingOptions(cfg=3.0), callback=cancel, speculative=True)


@pytest.mark.parametrize("bad", [0, -1, 65, 2.5, "8"])
def test_a_bad_draft_length_is_a_clear_error(bad):
    with pytest.raises(ZipARError, match="draft length"):
        generate(tiny(), class_condition([3]), GRID, 2, SamplingOptions(), speculative=True, draft_length=bad)


def test_uniforms_of_several_streams_equal_one_call_per_stream():
    from zipar.core.rng import seed_tensor, uniforms, uniforms_streams

    seed = seed_tensor(2**40 + 17, "cpu")
    images, cells = torch.tensor([0, 5, 9]), torch.tensor([3, 1, 200, 7])
    many = uniforms_streams(seed, images, cells, [0, 5, 6, 1000])
    for k, s in enumerate([0, 5, 6, 1000]):
        assert torch.equal(many[k], uniforms(seed, images, cells, s))


def test_compiled_spans_use_few_shapes(four_families):
    """Compiled, spans are padded up to a full span's bucket: few graphs however the spans fall."""
    model, cond, grid = four_families["llamagen"]
    static_step.release(model)
    built = 0
    for window in (grid[1], 3, 1):
        built += generate(model, cond, grid, window, SamplingOptions(cfg=3.0, top_k=20), seed=1, speculative=True,
                          draft_length=4, compile_backend="aot_eager").graphs_built
    assert 1 <= built <= 3  # buckets 8 (a span of 5 passes), 16 and 32 (spans of several rows)
    static_step.release(model)
