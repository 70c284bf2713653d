"""Checking drafted tokens against the model: the speculative-sampling rule, inside the step.

A cell's draft ``x`` was drawn from ``q`` before this forward; the model now gives the cell
the distribution ``p``. Keeping ``x`` with probability ``min(1, p(x) / q(x))`` and otherwise
drawing from ``max(0, p - q)`` renormalised yields a token distributed exactly as ``p``, for
any ``q``. The same draw serves twice: for a cell whose context held no refused draft it is
the cell's final token; for a cell whose context did (``commits.py`` tells which) it is the cell's
next draft, coupled to its previous one as closely as two distributions allow (maximal
coupling), with the new ``q`` = this forward's ``p``. Greedy decoding keeps a draft iff it is
the arg-max and otherwise takes the arg-max.

Pure tensor code with no host reads, so it runs inside the compiled step (``static_step``).
"""
from __future__ import annotations

import torch

from .rng import uniforms_streams
from .sampling import invert_cdf

ACCEPT, REDRAW = 0, 1  # the two uniforms a cell takes per forward: streams 1 + 4 * forward + these


def accept_rule(p_x: torch.Tensor, q_x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Keep a draft of probability ``q_x`` under the draft and ``p_x`` under the model with
    probability min(1, p_x / q_x). (A test swaps a broken rule in and must see it fail.)"""
    return u * q_x < p_x


def redraw_weights(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """What a refused cell is drawn from: the part of ``p`` the draft did not cover."""
    r = (p - q).clamp_min(0)
    return torch.where(r.sum(-1, keepdim=True) > 0, r, p)


def verify_drafts(target: torch.Tensor, drafts: torch.Tensor, q: torch.Tensor, had: torch.Tensor,
                  point: torch.Tensor, greedy: bool, seed: torch.Tensor, image_keys: torch.Tensor,
                  cells: torch.Tensor, forward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (keep [N, B] bool, token [N, B]) for every cell read in a speculative forward.

    ``target`` [N, B, V]: the model's distribution (greedy: guided logits); ``drafts`` [N, B];
    ``q`` [N, B, V] the distributions the drafts were drawn from, except where ``point`` [B]
    says the draft was a plain copy (a point mass, built here); ``had`` [B]: the cell has a
    draft at all (without one it is drawn from ``target``). ``forward`` (0-d) keys the uniforms.
    """
    if greedy:
        best = target.argmax(-1)
        return (drafts == best) & had, best
    vocab = target.shape[-1]
    mass = (torch.arange(vocab, device=drafts.device) == drafts[..., None]).to(target.dtype)
    q = torch.where(point[None, :, None], mass, q) * had[None, :, None]
    streams = 1 + 4 * forward + torch.arange(2, device=drafts.device)
    u = uniforms_streams(seed, image_keys, cells, streams)
    p_x = target.gather(-1, drafts[..., None])[..., 0]
    q_x = q.gather(-1, drafts[..., None])[..., 0]
    keep = accept_rule(p_x, q_x, u[ACCEPT]) & had
    redrawn = invert_cdf(redraw_weights(target, q), u[REDRAW])
    return keep, torch.where(keep, drafts, redrawn)
