"""Speculative Jacobi decoding on top of a ZipAR plan: the plan's distribution in fewer forwards.

A forward feeds, besides the inputs whose tokens are known, *drafts*: guesses of tokens not
drawn yet, so that the cells after them are read in the same forward. Each cell read is then
checked against the distribution the model gives it, with the speculative-sampling rule
(``verify.py``): keep draft ``x`` (drawn from ``q``) with probability ``min(1, p(x) / q(x))``,
otherwise draw from ``max(0, p - q)`` renormalised; a token distributed as ``p`` either way.
Which verdicts are final is decided per cell by ``commits.py``: those read at an input whose
whole plan context was final and in place. The rest become the next drafts (Jacobi
iteration): the same rule is then the maximal coupling of the old draft with the new ``p``
(as in MC-SJD), so a draft the model keeps predicting stays put.

What a forward feeds (``choose_inputs``): every row is a *lane* that drafts up to
``draft_length`` tokens past its first open one, rows starting as drafts up to
``draft_length`` passes ahead of the plan; rows commit on their own. The first open cell of
the earliest lanes also gets *branches* (``plan_branches``): its likeliest other tokens, each
continued by the main drafts, in slots past the image that take the cells' positions; a
branch is used only when the cell's verdict is its token. A cell entering a lane first copies
the token on its left (above, at a row start): context it may see.

Greedy decoding keeps a draft iff it is the arg-max. A batch shares its forwards; each image
commits on its own, so an image's exact tokens (not their distribution) depend on its batch.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import ZipARError
from .commits import CommitBook, PlanInputs, plan_inputs
from .plan import Plan
from .sampling import SamplingOptions
from .static_step import NEVER, Segment, StaticRun, Steps, bucket_for, checked_tables, state_of

DEFAULT_DRAFT_LENGTH = 16
MAX_DRAFT_LENGTH = 64


def check_draft_length(draft_length) -> int:
    try:
        n = operator.index(draft_length)
    except TypeError:
        raise ZipARError(f"draft length must be a whole number (got {draft_length!r}).") from None
    if not 1 <= n <= MAX_DRAFT_LENGTH:
        raise ZipARError(f"draft length must be between 1 and {MAX_DRAFT_LENGTH} (got {n}); "
                         f"{DEFAULT_DRAFT_LENGTH} is a good start.")
    return n


@dataclass
class SpeculativeRun(StaticRun):
    forwards: int = 0  # forwards after the prefix
    drafts_accepted: int = 0  # drafted tokens kept, summed over the images
    branch_tokens: int = 0  # tokens committed through draft branches, summed over the images


SIBLINGS = 3  # alternative tokens per branched cell
BRANCH_DEPTH = 8  # inputs per branch: the alternative, then the main drafts after it
BRANCH_LANES = 2  # lanes (the earliest) whose first open cell gets branches


def branch_slots_for(draft_length: int) -> int:
    """Cache slots past the scratch slot that a speculative request uses for its branches."""
    return BRANCH_LANES * SIBLINGS * min(BRANCH_DEPTH, draft_length + 1)


@dataclass
class Branch:
    """Alternatives of one open cell, each followed by the main drafts of the cells after it."""

    cells: list[int]  # the branched cell, then the cells whose main drafts continue each branch
    inputs: list[int]  # their main inputs (pass, raster order and position come from them)
    alts: torch.Tensor  # [images, SIBLINGS] alternative tokens of cells[0]
    first_emit: int = 0  # index of the first branch emit in the forward's emits


def run_speculative(model, session, plan: Plan, images: int, options: SamplingOptions, seed_t: torch.Tensor,
                    backend: str | None, first_tokens: Callable, report: Callable, trace=None,
                    image_keys: torch.Tensor | None = None, draft_length: int = DEFAULT_DRAFT_LENGTH,
                    branch_slots: int = 0, scales: torch.Tensor | None = None) -> SpeculativeRun:
    """Every cell after the prefix, in forwards verified by the bucketed step (``speculative=True``);
    what each forward commits is decided per cell (``commits.py``). ``branch_slots`` > 0 (the cache
    has them past its scratch slot): the first open cell of the earliest lanes also gets
    alternative tokens, each continued by the main drafts (a draft tree)."""
    device = model.device
    tables = checked_tables(plan, session)
    height, width = plan.schedule.height, plan.schedule.width
    cells = height * width
    depth = min(BRANCH_DEPTH, draft_length + 1)
    groups = branch_slots // (SIBLINGS * depth) if branch_slots and int(model.vocab_size) > SIBLINGS else 0
    alt_col = cells + 1  # token columns of the alternatives, after the dummy cell
    tokens = state_of(model).tokens(images, alt_col + groups * SIBLINGS, device)
    if image_keys is None:
        image_keys = torch.arange(images, device=device)
    first_tokens(tokens)
    report(0, tokens)
    steps = Steps(model, session, images, options, backend, tables.image_slots, speculative=True,
                  branch_slots=branch_slots, scales=scales)
    greedy = options.greedy
    inputs = plan_inputs(tables, width)
    book = CommitBook(inputs, images, cells)
    emit_pass = plan.emit_step.numpy()
    # compiled: a forward is padded to at least one lane's bucket, so a request builds few shapes
    min_bucket = 1 if backend == "none" else bucket_for(draft_length + 1 + (SIBLINGS * depth if groups else 0))
    vocab = int(model.vocab_size)
    q_of: dict[int, torch.Tensor | None] = {}  # per drafted cell, sampling: its q [images, V] (None: a copy)
    stale: dict[int, torch.Tensor] = {}  # per open cell: the distribution (greedy: logits) it last got
    no_q = torch.zeros(1, 1, 1, device=device)
    base_slots = tables.image_slots + 1
    # branch slots are laid out afresh by every forward; unused ones belong to no branch and no order
    slot_order = torch.cat([tables.slot_order, torch.full((branch_slots,), NEVER, dtype=torch.long, device=device)])
    slot_fill = torch.cat([tables.slot_fill, torch.full((branch_slots,), NEVER, dtype=torch.long, device=device)])
    slot_branch = torch.zeros(base_slots + branch_slots, dtype=torch.long, device=device)
    slot_branch[base_slots:] = -1
    forwards, accepted_total, branch_total = 0, 0, 0
    done_passes = 0
    traced: dict[int, torch.Tensor] = {}  # trace: per cell, the logits of the images that committed it so far
    while not book.complete:
        fed = choose_inputs(inputs, book, draft_length)
        fill_drafts(tokens, inputs, book, fed, q_of, width)
        branches = plan_branches(inputs, book, fed, stale, tokens, groups, depth, width) if groups else []
        emit_cells = [int(inputs.emit_of[k]) for k in fed if inputs.emit_of[k] >= 0]
        m_main = len(emit_cells)
        local = {k: j for j, k in enumerate(fed)}
        queries = [local[int(inputs.query_of[c])] for c in emit_cells]
        f_passes, f_src, f_off = inputs.passes[fed].tolist(), inputs.sources[fed].tolist(), inputs.offsets[fed].tolist()
        f_order, f_end = list(f_off), inputs.row_end[fed].astype(int).tolist()
        f_pos, f_branch, f_start = list(f_off), [0] * len(fed), [0] * len(fed)
        writes, draft_of = list(emit_cells), list(emit_cells)
        slot = base_slots
        if branch_slots:
            slot_order[base_slots:], slot_fill[base_slots:], slot_branch[base_slots:] = NEVER, NEVER, -1
        for g, br in enumerate(branches):
            br.first_emit = len(draft_of)
            tokens[:, alt_col + g * SIBLINGS:alt_col + (g + 1) * SIBLINGS] = br.alts
            start = int(inputs.offsets[br.inputs[0]])
            for b in range(SIBLINGS):
                bid = 1 + g * SIBLINGS + b
                for j, (cell, k) in enumerate(zip(br.cells, br.inputs)):
                    f_passes.append(int(inputs.passes[k]))
                    f_src.append(alt_col + g * SIBLINGS + b if j == 0 else cell)
                    f_off.append(slot)
                    f_order.append(int(inputs.offsets[k]))
                    f_end.append(0)
                    f_pos.append(int(inputs.offsets[k]))
                    f_branch.append(bid)
                    f_start.append(start)
                    slot_order[slot], slot_fill[slot], slot_branch[slot] = int(inputs.offsets[k]), int(inputs.passes[k]), bid
                    queries.append(len(f_src) - 1)
                    nxt = int(inputs.emit_of[k])
                    writes.append(tables.dummy)
                    draft_of.append(nxt)
                    slot += 1
        n, m = len(f_src), len(writes)
        bucket = max(bucket_for(max(n, m)), min_bucket)
        pad, pad_m = bucket - n, bucket - m
        row = Segment(f_passes, f_src, f_off, f_order, f_end, queries, writes).padded(bucket, tables.image_slots,
                                                                                   tables.dummy)
        had = [int(c in q_of) for c in draft_of] + [0] * pad_m
        point = [int(c in q_of and q_of[c] is None) for c in draft_of] + [0] * pad_m
        forwards += 1
        row += (had + point + [forwards] * bucket + f_pos + [tables.image_slots] * pad + f_branch + [0] * pad
                + f_start + [0] * pad + draft_of + [tables.dummy] * pad_m)
        row_t = torch.tensor(row, dtype=torch.long, device=device)
        src_t = torch.tensor(f_src, device=device)
        emit_t = torch.tensor(emit_cells, device=device)
        fed_all = tokens.index_select(1, src_t).cpu().numpy()
        fed_tokens = fed_all[:, :len(fed)]
        before = tokens.index_select(1, emit_t)
        was_final = torch.from_numpy(book.final[:, emit_cells]).to(device)
        q = no_q if greedy else draft_q(q_of, draft_of, images, bucket, vocab, device)
        raw, target, keep, drawn = steps(bucket, row_t, tokens, tables, seed_t, image_keys, q, slot_branch,
                                         slot_tables=(slot_order, slot_fill))
        # a cell already final in some image of the batch keeps its token there
        tokens[:, emit_t] = torch.where(was_final, before, tokens.index_select(1, emit_t))
        read, newly = book.settle(list(fed), fed_tokens, tokens[:, :cells].cpu().numpy())
        keep = keep[:, :m].cpu().numpy()
        drawn_h = drawn[:, :m].cpu().numpy()
        col = {c: j for j, c in enumerate(emit_cells)}
        committed = [(c, newly[:, i], col[c]) for i, c in enumerate(read)]
        for g, br in enumerate(branches):
            finals = tokens[:, br.cells[0]].cpu().numpy()
            start = int(inputs.offsets[br.inputs[0]])
            around = book.context_before(br.inputs[0], start) & book.final[:, br.cells[0]]
            alts = br.alts.cpu().numpy()
            k_emit = col.get(br.cells[0])
            refused = ~keep[:, k_emit] if k_emit is not None else np.zeros(images, dtype=bool)
            child_kept = keep[:, [br.first_emit + b * len(br.cells) for b in range(SIBLINGS)]]
            taken = take_branch(finals, alts, child_kept, refused & around)
            chosen = np.take_along_axis(alts, np.maximum(taken, 0)[:, None], 1)[:, 0]
            moved = around & (taken >= 0) & (chosen != finals)
            if moved.any():  # only a broken rule gets here: it changes the cell's token to its branch's
                tokens[:, br.cells[0]] = torch.where(torch.from_numpy(moved).to(device),
                                                     torch.from_numpy(chosen).to(device), tokens[:, br.cells[0]])
            for b in range(SIBLINGS):
                first_right = around & (taken == b)
                if not first_right.any():
                    continue
                e0 = br.first_emit + b * len(br.cells)
                cols = fed_all[:, len(fed) + (e0 - m_main):len(fed) + (e0 - m_main) + len(br.cells)]
                got = book.settle_branch(br.cells, first_right, cols, drawn_h[:, e0:e0 + len(br.cells)])
                for j, (cell, now) in enumerate(got):
                    if now.any():
                        at = torch.from_numpy(now).to(device)
                        tokens[:, cell] = torch.where(at, drawn[:, e0 + j], tokens[:, cell])
                        committed.append((cell, now, e0 + j))
                        branch_total += int(now.sum())
        for cell, now, j in committed:
            accepted_total += int((keep[:, j] & now).sum())
        final_all = book.final.all(0)
        if trace is not None:  # each cell once, when final in every image, with the logits each image used
            done_now = []
            for cell, now, j in committed:
                if now.any():
                    got = traced.setdefault(cell, torch.zeros_like(raw[:, 0]))
                    for image in np.flatnonzero(now).tolist():
                        got[image::images] = raw[image::images, j]
                if final_all[cell] and cell in traced and cell not in done_now:
                    done_now.append(cell)
            if done_now:
                trace(forwards, torch.tensor(done_now), torch.stack([traced.pop(c) for c in done_now], 1))
        for j, c in enumerate(emit_cells):
            if final_all[c]:
                q_of.pop(c, None)
                stale.pop(c, None)
            else:
                stale[c] = target[:, j].clone()  # a captured graph reuses its outputs' memory
                q_of[c] = None if greedy else next_draft_q(q_of.get(c), stale[c], keep[:, j])
        for c in [c for c in q_of if final_all[c]]:
            q_of.pop(c)
            stale.pop(c, None)
        done_passes = max(done_passes, book.passes_done(emit_pass))
        report(done_passes, tokens)
    return SpeculativeRun(tokens[:, :cells].clone(), steps.compile_seconds, steps.built, forwards, accepted_total,
                          branch_total)


def plan_branches(inputs: PlanInputs, book: CommitBook, fed: np.ndarray, stale: dict, tokens: torch.Tensor,
                  groups: int, depth: int, width: int) -> list[Branch]:
    """Branches for the first open cell of the earliest lanes: its likeliest tokens under the
    distribution it last got, other than its draft, each continued by the main drafts after it
    (within the row, never its last cell's slot). A branch is used only if the cell's verdict in
    this forward turns out to be its alternative, so it changes no distribution."""
    fed_set = set(fed.tolist())
    open_cells = ~book.final.all(0)
    rows_seen, out = [], []
    for k in fed.tolist():  # in plan order
        if len(out) == groups:
            break
        cell = int(inputs.emit_of[k])
        if cell < 0 or not open_cells[cell]:
            continue
        r = cell // width
        if r in rows_seen:
            continue
        rows_seen.append(r)
        if cell % width == width - 1 or cell not in stale:
            continue
        main = book.main_input(cell)
        if main not in fed_set or inputs.sources[main] != cell:
            continue
        chain_cells, chain_inputs = [cell], [main]
        while len(chain_cells) < depth:
            nxt = chain_cells[-1] + 1
            if nxt % width == width - 1:
                break
            k2 = book.main_input(nxt)
            if k2 not in fed_set or inputs.sources[k2] != nxt:
                break
            chain_cells.append(nxt)
            chain_inputs.append(k2)
        ranked = stale[cell].topk(SIBLINGS + 1, dim=-1).indices  # [images, SIBLINGS + 1]
        draft = tokens[:, cell:cell + 1]
        # the likeliest tokens other than the draft, SIBLINGS of them per image
        order = torch.argsort((ranked == draft).to(torch.int8), dim=-1, stable=True)
        alts = ranked.gather(-1, order)[:, :SIBLINGS]
        out.append(Branch(chain_cells, chain_inputs, alts))
    return out


def take_branch(final: np.ndarray, alts: np.ndarray, child_kept: np.ndarray, refused: np.ndarray) -> np.ndarray:
    """[images] which branch continues a branched cell (-1: none): the one whose alternative *is*
    the cell's final token, decided by the ordinary rule. The branches only lend their forward's
    work to the outcome; they never choose it. (Tests swap in SJD-PAC's choices, by the subtree
    that accepted (``child_kept`` [images, SIBLINGS]) or by a sibling taken on a refusal as if it
    were drawn from ``p``, and must see the distribution break.)"""
    match = final[:, None] == alts
    return np.where(match.any(1), match.argmax(1), -1)


def next_draft_q(old_q: torch.Tensor | None, target: torch.Tensor, kept: np.ndarray) -> torch.Tensor:
    """The distribution a cell's next draft was drawn from: this forward's ``p``, whether the old
    draft was kept or redrawn (the coupling's output is distributed as ``p`` either way). (A
    test swaps in SCD's rule, which keeps the old ``q`` for a kept draft, and must see it fail.)"""
    return target


def draft_q(q_of: dict, emit_cells: list[int], images: int, bucket: int, vocab: int, device) -> torch.Tensor:
    """[images, bucket, V]: the distributions the drafts came from (point masses are built in
    the step)."""
    q = torch.zeros(images, bucket, vocab, device=device)
    full = [j for j, c in enumerate(emit_cells) if q_of.get(c) is not None]
    if full:
        q[:, torch.tensor(full, device=device)] = torch.stack([q_of[emit_cells[j]] for j in full], dim=1)
    return q


def choose_inputs(inputs: PlanInputs, book: CommitBook, draft_length: int) -> np.ndarray:
    """The inputs of the next forward: per row (a *lane*), its first ``draft_length + 1`` pending
    inputs in plan order, for the rows whose first pending input lies within ``draft_length``
    passes of the earliest pending one. Lanes advance on their own: a row blocked by a refusal
    does not hold back the rows above it."""
    pending = book.pending()
    by_pass = pending[np.lexsort((inputs.offsets[pending], inputs.passes[pending]))]
    horizon = int(inputs.passes[by_pass[0]]) + draft_length
    final = book.final.all(0)
    taken, per_row = [], {}
    for k in by_pass.tolist():
        if inputs.passes[k] > horizon and inputs.rows[k] not in per_row:
            continue
        r = int(inputs.rows[k])
        used = per_row.get(r, 0)
        # a row end, or a final token fed again (its slot held a draft, e.g. after a branch), is free
        free = inputs.row_end[k] or final[inputs.sources[k]]
        if used > draft_length and not free:
            continue
        per_row[r] = used + (0 if free else 1)
        taken.append(k)
    return np.asarray(sorted(taken, key=lambda k: (inputs.passes[k], inputs.offsets[k])), dtype=np.int64)


def fill_drafts(tokens: torch.Tensor, inputs: PlanInputs, book: CommitBook, fed: np.ndarray, q_of: dict,
                width: int) -> None:
    """First drafts for the cells fed before anything was drawn for them: the token on the left
    (above, at a row start), a point mass: context the cell may see, and on an image, often its
    value."""
    final_all = book.final.all(0)
    new = sorted({int(inputs.sources[k]) for k in fed if not inputs.row_end[k]} - set(q_of))
    new = [c for c in new if not final_all[c]]
    if not new:
        return
    copy_of = {}
    for c in new:
        src = c - 1 if c % width else c - width
        copy_of[c] = copy_of.get(src, src)  # a neighbour drafted in this call: its own source
    device = tokens.device
    cols = torch.tensor(new, device=device)
    keep = torch.from_numpy(book.final[:, new]).to(device)  # final in some image of the batch: left alone there
    copied = tokens[:, torch.tensor([copy_of[c] for c in new], device=device)]
    tokens[:, cols] = torch.where(keep, tokens[:, cols], copied)
    q_of.update(dict.fromkeys(new))
