"""Slow, cache-free reference decoders the engine is checked against.

They share only the GPT's layers with the engine: no KV cache, no plan tensors, and the
visibility of every input is derived from an explicit event log rather than from slots.
"""
from __future__ import annotations

import torch

from zipar.families.llamagen import LlamaGenModel
from zipar.core.schedule import Schedule


def prefix_and_mask(model: LlamaGenModel, cond, guidance: bool):
    embeds, visible = model.prefix_embeddings(cond, guidance)
    P = embeds.shape[1]
    causal = torch.ones(P, P, dtype=torch.bool).tril()
    mask = (causal[None] & visible[:, None, :]) | torch.eye(P, dtype=torch.bool)[None]
    return embeds, visible, mask


def full_forward(model: LlamaGenModel, cond, guidance: bool, cells: list[int], ids: torch.Tensor, sees: torch.Tensor, grid):
    """Logits at every position of prefix + inputs, uncached, under an explicit mask.

    cells[j] / ids[:, j]: grid position and token of image input j; sees[j, i]: whether
    image input j attends to image input i (the prefix is seen through its validity).
    """
    gpt = model.gpt
    embeds, visible, pmask = prefix_and_mask(model, cond, guidance)
    rows, P = visible.shape
    n = len(cells)
    h = torch.cat([embeds, gpt.tok_embeddings(ids)], dim=1)
    rope_all = gpt.rope_table(*grid)
    rope = torch.cat([rope_all[:P], rope_all[P + torch.tensor(cells, dtype=torch.long)]]) if n else rope_all[:P]
    mask = torch.zeros(rows, P + n, P + n, dtype=torch.bool)
    mask[:, :P, :P] = pmask
    mask[:, P:, :P] = visible[:, None, :]
    mask[:, P:, P:] = sees[None]
    return gpt.logits(gpt.hidden(h, rope, mask[:, None]))


@torch.no_grad()
def naive_ntp(model: LlamaGenModel, cond, grid, cfg: float) -> torch.Tensor:
    """Greedy next-token prediction recomputing the whole sequence at every token."""
    guidance = cfg != 1.0
    tokens: list[torch.Tensor] = []
    H, W = grid
    for i in range(H * W):
        ids = torch.stack(tokens, dim=1) if tokens else torch.zeros(len(cond), 0, dtype=torch.long)
        if guidance:
            ids = torch.cat([ids, ids])
        causal = torch.ones(i, i, dtype=torch.bool).tril()
        logits = full_forward(model, cond, guidance, list(range(i)), ids, causal, grid)[:, -1]
        if guidance:
            c, u = logits.chunk(2)
            logits = u + cfg * (c - u)
        tokens.append(logits.argmax(-1))
    return torch.stack(tokens, dim=1).view(-1, H, W)


@torch.no_grad()
def replay_logits(model: LlamaGenModel, cond, guidance: bool, sched: Schedule, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """The logits each emitted cell should have had, from one uncached forward.

    Every input the schedule ever fed becomes its own position (a stand-in and the real
    token that later replaces it are two entries). Input j sees input i when i was fed in
    an earlier pass, or earlier in raster order within the same pass, and i lies at or
    before j in raster order, and i had not been replaced by pass(j).
    """
    flat = tokens.reshape(tokens.shape[0], -1)
    events = [(s, f.cell, f.source) for s, p in enumerate(sched.passes) for f in p.feeds]
    n = len(events)
    sees = torch.zeros(n, n, dtype=torch.bool)
    for j, (sj, cj, _) in enumerate(events):
        for i, (si, ci, _) in enumerate(events):
            replaced = any(c2 == ci and si < s2 <= sj for (s2, c2, _) in events)
            sees[j, i] = si <= sj and ci <= cj and not replaced
    ids = flat[:, [src for (_, _, src) in events]]
    if guidance:
        ids = torch.cat([ids, ids])
    logits = full_forward(model, cond, guidance, [c for (_, c, _) in events], ids, sees, (sched.height, sched.width))
    P = logits.shape[1] - n
    index = {(s, c): P + j for j, (s, c, _) in enumerate(events)}
    expected = {0: logits[:, P - 1]}
    for s, p in enumerate(sched.passes[1:], start=1):
        for cell, q in zip(p.emits, p.queries):
            expected[cell] = logits[:, index[(s, p.feeds[q].cell)]]
    return expected
