"""Speculative Jacobi decoding on top of a ZipAR plan: several passes verified in one forward.

Without it, pass s+1 of a plan must wait for pass s's tokens. Here every pass of the plan
still happens exactly as planned (same inputs, same slots, same visibility), but a forward
runs a *span* of consecutive passes at once: the tokens the later passes of the span need
and do not have yet are drafts, guessed in an earlier forward. Each emitted cell's draft is
then checked against the distribution the model gives it in this forward, with the
speculative-sampling rule: keep draft ``x`` (drawn from ``q``) with probability
``min(1, p(x) / q(x))``; otherwise draw from ``max(0, p - q)`` renormalised. The first pass
of the span in which any draft is refused ends what the forward commits: its tokens are
final (kept or redrawn), while later passes were computed from a refused token and are only
used as the next drafts (Jacobi iteration). A token is therefore always distributed as the
model's ``p`` given exactly the context its plan gives it: the images follow the plan's own
distribution (next-token prediction at window >= width, ZipAR at that window otherwise).
Greedy decoding keeps a draft iff it is the arg-max.

What keeps the cache exact:
- every input keeps its own pass number, so it sees what it would see in that pass
  (``StaticTables.span_row``); a slot that a refused draft wrote is first written again
  by the pass that owns it before any input of a later pass may see it;
- a pass that overwrites an earlier pass's slot (a stand-in replaced by the real token)
  only ever starts a span: inputs of earlier passes in the same forward would otherwise see
  the real token where their pass still had the stand-in.

Drafts: a cell's draft is redrawn each forward from the newest distribution the model gave
it, coupled to its previous draft (maximal coupling, as in MC-SJD: keep the old token with
probability ``min(1, q_new(x) / q_old(x))``, else draw from ``max(0, q_new - q_old)``), so a
draft that the model keeps predicting stays put. That is the acceptance rule itself, so one
draw per cell and forward (``verify.py``, inside the compiled step) gives both the token a
committed cell keeps and the next draft of a cell past the commit. A cell entering the draft
window for the first time copies the token on its left (or above, at a row start): context
it may see.

A batch advances together: a forward commits up to the first pass in which any image
refused a draft. Distributions are unchanged by this, but an image's exact tokens then depend
on the batch it is drawn in (greedy tokens never do).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import ZipARError
from .plan import Plan
from .sampling import SamplingOptions
from .commits import CommitBook, PlanInputs, plan_inputs
from .static_step import Segment, StaticRun, Steps, bucket_for, checked_tables, state_of

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


def run_speculative(model, session, plan: Plan, images: int, options: SamplingOptions, seed_t: torch.Tensor,
                    backend: str | None, first_tokens: Callable, report: Callable, trace=None,
                    image_keys: torch.Tensor | None = None, draft_length: int = DEFAULT_DRAFT_LENGTH) -> SpeculativeRun:
    """Every cell after the prefix, in forwards verified by the bucketed step (``speculative=True``);
    what each forward commits is decided per cell (``commits.py``)."""
    device = model.device
    tables = checked_tables(plan, session)
    height, width = plan.schedule.height, plan.schedule.width
    cells = height * width
    tokens = state_of(model).tokens(images, cells + 1, device)
    if image_keys is None:
        image_keys = torch.arange(images, device=device)
    first_tokens(tokens)
    report(0, tokens)
    steps = Steps(model, session, images, options, backend, tables.image_slots, speculative=True)
    greedy = options.greedy
    inputs = plan_inputs(tables, width)
    book = CommitBook(inputs, images, cells)
    emit_pass = plan.emit_step.numpy()
    # compiled: a forward is padded to at least one lane's bucket, so a request builds few shapes
    min_bucket = 1 if backend == "none" else bucket_for(draft_length + 1)
    vocab = int(model.vocab_size)
    q_of: dict[int, torch.Tensor | None] = {}  # per drafted cell, sampling: its q [images, V] (None: a copy)
    no_q = torch.zeros(1, 1, 1, device=device)
    forwards, accepted_total = 0, 0
    done_passes = 0
    traced: dict[int, torch.Tensor] = {}  # trace: per cell, the logits of the images that committed it so far
    while not book.complete:
        fed = choose_inputs(inputs, book, draft_length)
        fill_drafts(tokens, inputs, book, fed, q_of, width)
        emit_cells = [int(inputs.emit_of[k]) for k in fed if inputs.emit_of[k] >= 0]
        local = {k: j for j, k in enumerate(fed)}
        queries = [local[int(inputs.query_of[c])] for c in emit_cells]
        n, m = len(fed), len(emit_cells)
        bucket = max(bucket_for(max(n, m)), min_bucket)
        seg = Segment(inputs.passes[fed].tolist(), inputs.sources[fed].tolist(), inputs.offsets[fed].tolist(),
                      inputs.offsets[fed].tolist(), inputs.row_end[fed].astype(int).tolist(), queries, emit_cells)
        pad = [0] * (bucket - m)
        had = [int(c in q_of) for c in emit_cells] + pad
        point = [int(c in q_of and q_of[c] is None) for c in emit_cells] + pad
        forwards += 1
        row_t = torch.tensor(seg.padded(bucket, tables.image_slots, tables.dummy) + had + point + [forwards] * bucket,
                             dtype=torch.long, device=device)
        src_t = torch.tensor(seg.sources, device=device)
        emit_t = torch.tensor(emit_cells, device=device)
        fed_tokens = tokens.index_select(1, src_t).cpu().numpy()
        before = tokens.index_select(1, emit_t)
        was_final = torch.from_numpy(book.final[:, emit_cells]).to(device)
        q = no_q if greedy else draft_q(q_of, emit_cells, images, bucket, vocab, device)
        raw, target, keep = steps(bucket, row_t, tokens, tables, seed_t, image_keys, q)
        # a cell already final in some image of the batch keeps its token there
        tokens[:, emit_t] = torch.where(was_final, before, tokens.index_select(1, emit_t))
        read, newly = book.settle(list(fed), fed_tokens, tokens[:, :cells].cpu().numpy())
        keep = keep[:, :m].cpu().numpy()
        col = {c: j for j, c in enumerate(emit_cells)}
        js = [col[c] for c in read]
        accepted_total += int((keep[:, js] & newly).sum())
        final_all = book.final.all(0)
        if trace is not None:  # each cell once, when final in every image, with the logits each image used
            rows_per_image = raw.shape[0] // images
            done_now = []
            for i, c in enumerate(read):
                if newly[:, i].any():
                    got = traced.setdefault(c, torch.zeros_like(raw[:, 0]))
                    for image in np.flatnonzero(newly[:, i]).tolist():
                        got[image::images] = raw[image::images, col[c]]
                if final_all[c] and c in traced and rows_per_image:
                    done_now.append(c)
            if done_now:
                trace(forwards, torch.tensor(done_now), torch.stack([traced.pop(c) for c in done_now], 1))
        for j, c in enumerate(emit_cells):
            if final_all[c]:
                q_of.pop(c, None)
            elif not greedy:
                q_of[c] = next_draft_q(q_of.get(c), target[:, j].clone(), keep[:, j])
            else:
                q_of[c] = None
        done_passes = max(done_passes, book.passes_done(emit_pass))
        report(done_passes, tokens)
    return SpeculativeRun(tokens[:, :cells].clone(), steps.compile_seconds, steps.built, forwards, accepted_total)


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
    taken, per_row = [], {}
    for k in by_pass.tolist():
        if inputs.passes[k] > horizon and inputs.rows[k] not in per_row:
            continue
        r = int(inputs.rows[k])
        used = per_row.get(r, 0)
        if used > draft_length and not inputs.row_end[k]:
            continue
        per_row[r] = used + (0 if inputs.row_end[k] else 1)
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
