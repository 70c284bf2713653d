"""The decode session of the 1D families (Janus-Pro, Emu3, Lumina-mGPT).

The loop speaks in grid cells; these models read one token sequence: a prompt, then the
image rows, each row optionally closed by a fixed end-of-line (EOL) token that counts as a
column for positions. This module keeps that physical layout:

- cache slot and position of cell (r, c) = prompt + r * (W + eol) + c, per CFG branch,
  whose prompts may differ in length (left-padded; pads see only themselves, nothing sees them);
- whenever the loop feeds cell (r, W-1), real or stand-in, the row's EOL token is fed right
  after it in the same pass. It sees what that cell sees plus the cell; every input after it
  in raster order that sees the cell also sees the EOL; the query for cell (r+1, 0) is read
  at the EOL, as in the sequence the model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn

from .base import Prefix
from .llama_lm import LlamaConfig, LlamaLM, SlotCache


class SequenceFamily(Protocol):
    """What a 1D family adds to the language model: how codes go in and come out."""

    lm: LlamaLM

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Text/vocabulary ids [rows, n] -> input embeddings [rows, n, hidden]."""
        ...

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes [rows, n] -> input embeddings [rows, n, hidden]."""
        ...

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states [rows, m, hidden] -> float32 logits over the image codes [rows, m, codes]."""
        ...


class VisualTokenGenerator(nn.Module):
    """A language model whose vocabulary holds the image codes as named tokens (Emu3, Lumina-mGPT).

    Only the rows of the output matrix that belong to image tokens are kept, in code order,
    so the loop samples codes directly; ``code_ids`` maps code -> vocabulary id by token name.
    """

    def __init__(self, cfg: LlamaConfig, codes: int):
        super().__init__()
        self.lm = LlamaLM(cfg)
        self.image_head = nn.Linear(cfg.hidden, codes, bias=False)
        self.register_buffer("code_ids", torch.zeros(codes, dtype=torch.long), persistent=False)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(self.code_ids[codes])

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.image_head(hidden).float()


@dataclass
class PromptBatch:
    """Prompt ids per branch row, left-padded to one length; ``visible`` False on the pads."""

    ids: torch.Tensor  # [rows, P] long
    visible: torch.Tensor  # [rows, P] bool

    @classmethod
    def left_padded(cls, rows: list[list[int]], pad_id: int, device) -> "PromptBatch":
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        visible = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            if r:
                ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
                visible[i, length - len(r):] = True
        return cls(ids.to(device), visible.to(device))


@dataclass(frozen=True)
class _Expansion:
    """Index tensors that turn one logical step (cells) into the physical one (cells + EOLs)."""

    slots: torch.Tensor  # [n + e] physical cache slots
    offsets: torch.Tensor  # [n + e] position offsets after the prompt
    eol_rows: torch.Tensor  # [e] which inputs are followed by an EOL
    columns: torch.Tensor  # [P + G'] logical mask column each physical column copies
    hide: torch.Tensor  # [n, P + G'] a cell does not see its own row's EOL
    queries: torch.Tensor  # [m] physical query index
    kv_len: int


class SequenceSession:
    def __init__(self, family: SequenceFamily, prompts: PromptBatch, grid: tuple[int, int], eol_id: int | None):
        lm = family.lm
        self.family, self.grid, self.eol_id = family, grid, eol_id
        height, width = grid
        self.stride = width + (1 if eol_id is not None else 0)
        ids, visible = prompts.ids, prompts.visible
        rows, P = ids.shape
        dev = lm.device
        self.cache: SlotCache = lm.new_cache(rows, P + height * self.stride)
        # Each branch counts positions from its own first real token.
        self.base = visible.sum(1, keepdim=True)  # [rows, 1]: position of the first image token
        positions = (visible.long().cumsum(1) - 1).clamp(min=0)
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        eye = torch.eye(P, dtype=torch.bool, device=dev)
        mask = (causal[None] & visible[:, None, :]) | eye[None]
        h = lm.hidden(family.embed_ids(ids), positions, mask[:, None], self.cache, torch.arange(P, device=dev), P)
        self.prefix = Prefix(family.image_logits(h[:, -1:])[:, 0], visible, P)
        self._expansions: dict[tuple, _Expansion] = {}
        if eol_id is not None:
            self._eol = family.embed_ids(torch.full((1, 1), eol_id, dtype=torch.long, device=dev))

    def physical(self, cells: torch.Tensor) -> torch.Tensor:
        width = self.grid[1]
        return (cells // width) * self.stride + cells % width

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor) -> torch.Tensor:
        lm, P = self.family.lm, self.prefix.length
        h = self.family.embed_codes(ids)
        if self.eol_id is None:
            offsets = cells
            h = lm.hidden(h, self.base + offsets[None], mask, self.cache, P + offsets, kv_len)
            return self.family.image_logits(h[:, queries])
        x = self._expansion(cells, queries, kv_len)
        e = x.eol_rows.shape[0]
        if e:
            h = torch.cat([h, self._eol.expand(h.shape[0], e, -1)], dim=1)
        m = mask.index_select(-1, x.columns)
        m = torch.cat([m & ~x.hide, m.index_select(2, x.eol_rows)], dim=2) if e else m & ~x.hide
        h = lm.hidden(h, self.base + x.offsets[None], m, self.cache, x.slots, x.kv_len)
        return self.family.image_logits(h[:, x.queries])

    def _expansion(self, cells: torch.Tensor, queries: torch.Tensor, kv_len: int) -> _Expansion:
        # The plan's index tensors live as long as the plan (lru-cached), so their storage
        # identifies a pass; the expansion is then computed once per pass shape, on the host.
        key = (cells.data_ptr(), cells.shape[0], queries.data_ptr(), queries.shape[0], kv_len)
        if key not in self._expansions:
            self._expansions[key] = self._expand(cells.cpu(), queries.cpu(), kv_len)
        return self._expansions[key]

    def _expand(self, cells: torch.Tensor, queries: torch.Tensor, kv_len: int) -> _Expansion:
        width, P, dev = self.grid[1], self.prefix.length, self.family.lm.device
        grid_len = kv_len - P
        phys = self.physical(cells)
        row_end = cells % width == width - 1
        eol_rows = row_end.nonzero().flatten()
        last = grid_len - 1
        phys_len = int(self.physical(torch.tensor(last))) + 1 + int(last % width == width - 1)
        # physical column -> logical column: a cell's own column; an EOL copies cell (r, W-1)
        columns = torch.arange(P + phys_len)
        grid_cols = torch.arange(phys_len)
        r, c = grid_cols // self.stride, grid_cols % self.stride
        is_eol = c == width
        columns[P:] = P + r * width + torch.where(is_eol, torch.full_like(c, width - 1), c)
        hide = torch.zeros(len(cells), P + phys_len, dtype=torch.bool)
        hide[:, P:] = is_eol[None] & (columns[P:][None] == (P + cells)[:, None])
        rank = torch.cumsum(row_end.long(), 0) - 1
        phys_queries = torch.where(row_end[queries], len(cells) + rank[queries], queries)
        offsets = torch.cat([phys, phys[eol_rows] + 1])
        return _Expansion(
            (P + offsets).to(dev), offsets.to(dev), eol_rows.to(dev), columns.to(dev), hide.to(dev),
            phys_queries.to(dev), P + phys_len,
        )


def layout_sequence(prompt: list[int], codes: torch.Tensor, code_ids: torch.Tensor, eol_id: int | None,
                    closing: list[int]) -> list[int]:
    """The token sequence the official code writes for one image: prompt, rows (+ EOL), closing tokens.

    ``codes`` [H, W] image codes; ``code_ids`` [codes] their vocabulary ids.
    """
    out = list(prompt)
    for row in codes.tolist():
        out += [int(code_ids[c]) for c in row]
        if eol_id is not None:
            out.append(eol_id)
    return out + list(closing)
