"""Cache-free references for the 1D (chat-style) families, derived without the session's slots.

``replay_logits`` lays every input the schedule ever fed out as its own position, adds an
end-of-line event after each feed of a row's last cell (for families with row ends), and
decides visibility from the event log alone; one uncached forward then gives the logits
every emitted cell should have had. It shares the family's layers with the engine; the
layers themselves are checked against transformers by the naive decoders in the tests.
"""
from __future__ import annotations

from typing import Callable

import torch

from zipar.families.sequence import PromptBatch
from zipar.core.schedule import Schedule


def _prompt(model, cond, guidance):
    rows = model.prompt_rows(cond, guidance)
    return PromptBatch.left_padded(rows, model.special["pad"], torch.device("cpu"))


@torch.no_grad()
def replay_logits(model, cond, guidance: bool, sched: Schedule, tokens: torch.Tensor, eol_id: int | None = None):
    fam, lm = model.net, model.net.lm
    W = sched.width
    stride = W + (1 if eol_id is not None else 0)
    flat = tokens.reshape(tokens.shape[0], -1)
    events = []  # (pass, cell, source, is_eol)
    for s, p in enumerate(sched.passes):
        for f in p.feeds:
            events.append((s, f.cell, f.source, False))
            if eol_id is not None and f.cell % W == W - 1:
                events.append((s, f.cell, f.source, True))
    n = len(events)

    def order(e):  # raster order of the final sequence: a row's EOL right after its last cell
        return 2 * e[1] + (1 if e[3] else 0)

    sees = torch.zeros(n, n, dtype=torch.bool)
    for j, ej in enumerate(events):
        for i, ei in enumerate(events):
            replaced = any(e2[1] == ei[1] and e2[3] == ei[3] and ei[0] < e2[0] <= ej[0] for e2 in events)
            sees[j, i] = ei[0] <= ej[0] and order(ei) <= order(ej) and not replaced
    prompt = _prompt(model, cond, guidance)
    rows, P = prompt.ids.shape
    codes = flat[:, [e[2] for e in events]]
    if guidance:
        codes = torch.cat([codes, codes])
    code_h = fam.embed_codes(codes)
    if eol_id is not None:
        eol_h = fam.embed_ids(torch.full((rows, n), eol_id, dtype=torch.long))
        is_eol = torch.tensor([e[3] for e in events])
        code_h = torch.where(is_eol[None, :, None], eol_h, code_h)
    h = torch.cat([fam.embed_ids(prompt.ids), code_h], dim=1)
    base = prompt.visible.sum(1, keepdim=True)
    prompt_pos = (prompt.visible.long().cumsum(1) - 1).clamp(min=0)
    offsets = torch.tensor([(e[1] // W) * stride + e[1] % W + (1 if e[3] else 0) for e in events], dtype=torch.long)
    positions = torch.cat([prompt_pos, base + offsets[None]], dim=1)
    mask = torch.zeros(rows, P + n, P + n, dtype=torch.bool)
    causal = torch.ones(P, P, dtype=torch.bool).tril()
    mask[:, :P, :P] = (causal[None] & prompt.visible[:, None, :]) | torch.eye(P, dtype=torch.bool)[None]
    mask[:, P:, :P] = prompt.visible[:, None, :]
    mask[:, P:, P:] = sees[None]
    cache = lm.new_cache(rows, P + n)
    out = fam.image_logits(lm.hidden(h, positions, mask[:, None], cache, torch.arange(P + n), P + n))
    index = {(e[0], e[1], e[3]): P + j for j, e in enumerate(events)}
    expected = {0: out[:, P - 1]}
    for s, p in enumerate(sched.passes[1:], start=1):
        for cell, q in zip(p.emits, p.queries):
            fed = p.feeds[q].cell
            after_eol = eol_id is not None and fed % W == W - 1
            expected[cell] = out[:, index[(s, fed, after_eol)]]
    return expected


@torch.no_grad()
def naive_row_end_decode(model, cond, grid, cfg: float, last_logits: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
    """Greedy NTP over the literal token sequence of a row-end family (Emu3, Lumina), each CFG branch
    its own unpadded sequence, recomputed from scratch for every token.

    ``last_logits(sequence)`` is the reference model's full-vocabulary logits after the sequence;
    the image codes are read from them by the model's name-mapped ids.
    """
    H, W = grid
    seqs = [list(r) for r in model.prompt_rows(cond, cfg != 1.0, grid)]
    code_ids = model.net.code_ids
    out = []
    for _ in range(H * W):
        logits = torch.stack([last_logits(s)[code_ids] for s in seqs])
        if cfg != 1.0:
            c, u = logits.chunk(2)
            logits = u + cfg * (c - u)
        code = int(logits.argmax(-1)[0])
        out.append(code)
        for s in seqs:
            s.append(int(code_ids[code]))
            if len(out) % W == 0:
                s.append(model.special["eol"])
    return torch.tensor(out).view(1, H, W)
