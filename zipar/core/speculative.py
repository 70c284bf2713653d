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

import torch

from ..errors import ZipARError
from .plan import Plan
from .sampling import SamplingOptions
from .static_step import StaticRun, Steps, bucket_for, checked_tables, state_of

DEFAULT_DRAFT_LENGTH = 8
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
    """Every pass after the prefix, in spans verified by the bucketed step (``speculative=True``)."""
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
    last_pass = plan.num_passes - 1
    # compiled: a span is padded to at least one row's full span, so a request builds few shapes
    min_bucket = 1 if backend == "none" else bucket_for(draft_length + 1)
    segs = tables.segments
    vocab = int(model.vocab_size)
    q_of: dict[int, torch.Tensor | None] = {}  # per drafted cell, sampling: its q [images, V] (None: a copy)
    drafted: set[int] = set()

    def fill_drafts(first: int, upto: int) -> None:
        """First drafts for the cells entering the window: the token on the left (above, at a row
        start), as a point mass, copied in one gather."""
        new, copy_of = [], {}
        for s in range(first, min(upto, last_pass) + 1):
            for cell in segs[s].emits:
                if cell not in drafted:
                    src = cell - 1 if cell % width else cell - width
                    copy_of[cell] = copy_of.get(src, src)  # a neighbour drafted in this call: its own source
                    new.append(cell)
        if new:
            tokens[:, torch.tensor(new, device=device)] = tokens[:, torch.tensor([copy_of[c] for c in new],
                                                                                  device=device)]
            drafted.update(new)
            q_of.update(dict.fromkeys(new))

    def draft_q(span_cells: list[int], bucket: int) -> torch.Tensor:
        """[images, bucket, V]: the distributions the span's drafts came from (point masses are built
        in the step); greedy needs none."""
        if greedy:
            return no_q
        q = torch.zeros(images, bucket, vocab, device=device)
        full = [j for j, c in enumerate(span_cells) if q_of.get(c) is not None]
        if full:
            q[:, torch.tensor(full, device=device)] = torch.stack([q_of[span_cells[j]] for j in full], dim=1)
        return q

    no_q = torch.zeros(1, 1, 1, device=device)
    t, forwards, accepted_total = 0, 0, 0
    fill_drafts(1, draft_length)
    while t < last_pass:
        last = min(t + draft_length + 1, last_pass)
        for s in range(t + 2, last + 1):
            if tables.rewrites[s]:  # it overwrites a stand-in that earlier passes of the span still see
                last = s - 1
                break
        bucket, row, m = tables.span_row(t + 1, last, min_bucket)
        span_cells = [c for s in range(t + 1, last + 1) for c in segs[s].emits]
        pass_of = [s for s in range(t + 1, last + 1) for _ in segs[s].emits]
        pad = [0] * (bucket - m)
        had = [int(c in drafted) for c in span_cells] + pad
        point = [int(c in drafted and q_of.get(c) is None) for c in span_cells] + pad
        forwards += 1
        row_t = torch.tensor(row + had + point + [forwards] * bucket, dtype=torch.long, device=device)
        raw, target, keep = steps(bucket, row_t, tokens, tables, seed_t, image_keys, draft_q(span_cells, bucket))
        # the step wrote every span cell: kept drafts, redrawn tokens, and the next drafts past the commit
        keep = keep[:, :m].cpu()
        refused = (~keep).any(0).tolist()
        # the first pass with a refused (or undrafted) cell in any image ends what this forward commits
        commit = next((pass_of[j] for j in range(m) if refused[j]), last)
        n_commit = sum(1 for s in pass_of if s <= commit)
        accepted_total += int(keep[:, :n_commit].sum())
        if trace is not None:
            cols = torch.tensor(span_cells, device=device)
            for s in range(t + 1, commit + 1):
                js = [j for j in range(m) if pass_of[j] == s]
                trace(s, cols[js[0]:js[-1] + 1], raw[:, js[0]:js[-1] + 1])
        for c in span_cells[:n_commit]:
            drafted.discard(c)
            q_of.pop(c, None)
        if n_commit < m:  # this forward's distributions are the next drafts' q
            rest = span_cells[n_commit:]
            if not greedy:
                kept = target[:, n_commit:m].clone()  # a captured graph reuses its outputs' memory
                q_of.update((c, kept[:, j]) for j, c in enumerate(rest))
            drafted.update(rest)
        t = commit
        report(t, tokens)
        fill_drafts(t + 1, t + draft_length)
    return SpeculativeRun(tokens[:, :cells].clone(), steps.compile_seconds, steps.built, forwards, accepted_total)
