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

from ..errors import ZipARError
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


class VisualTokenModel:
    """The decode-loop side of a VisualTokenGenerator family (Emu3, Lumina-mGPT): what stays
    the same when only the prompt recipe, the sizes and the closing tokens differ.

    Subclasses set ``title`` (for messages), ``closing`` (names in ``special`` written after
    the last row) and provide ``prompt_ids(prompt, grid)``, ``prompt_rows(cond, guidance, grid)``
    and ``grid_for(cond, image_size)``; ``special`` holds at least "pad" and "eol".
    """

    title = ""
    closing: tuple[str, ...] = ()

    def __init__(self, net: VisualTokenGenerator, tokenizer, special: dict[str, int], source_path: str):
        self.net, self.tokenizer, self.special, self.source_path = net, tokenizer, special, source_path
        self.vocab_size = net.image_head.out_features
        self.config = net.lm.config

    @property
    def device(self) -> torch.device:
        return self.net.image_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.image_head.weight.dtype

    def code_embeddings(self) -> torch.Tensor:
        """[codes, dim] input vectors of the image tokens (preview colours)."""
        return self.net.lm.embed_tokens.weight[self.net.code_ids]

    @staticmethod
    def ratio_of(cond) -> str:
        """The condition's "W:H", 1:1 when it names none (or there is no condition yet)."""
        return (getattr(cond, "aspect_ratio", None) if cond is not None else None) or "1:1"

    def check_condition(self, cond) -> None:
        if not cond.prompts:
            raise ZipARError(f"{self.title} draws from a text prompt: connect a ZipAR Text Prompt (or pass --prompt).")
        self.grid_for(cond)

    def start(self, cond, grid: tuple[int, int], guidance: bool) -> "SequenceSession":
        self.check_condition(cond)
        rows = self.prompt_rows(cond, guidance, tuple(grid))
        batch = PromptBatch.left_padded(rows, self.special["pad"], self.device)
        return SequenceSession(self.net, batch, tuple(grid), self.special["eol"])

    def sequence(self, prompt: str, codes: torch.Tensor) -> list[int]:
        """The official token layout of one finished image: prompt, rows + EOL, the closing tokens."""
        return layout_sequence(self.prompt_ids(prompt, tuple(codes.shape)), codes, self.net.code_ids.cpu(),
                               self.special["eol"], [self.special[name] for name in self.closing])


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
    """Index tensors that turn one logical step (cells) into the physical one (cells + EOLs).

    Independent of the prompt length P (columns and slots are counted after the prompt), so
    one table serves every prompt of a plan.
    """

    offsets: torch.Tensor  # [n + e] physical slot = position offset after the prompt
    eol_rows: torch.Tensor  # [e] which inputs are followed by an EOL
    columns: torch.Tensor  # [G'] logical grid column each physical grid column copies
    keep: torch.Tensor  # [n, G'] False where a cell would see its own row's EOL (it must not)
    queries: torch.Tensor  # [m] physical query index
    grid_len: int  # G': physical slots after the prompt up to the furthest input


def physical_cells(cells: torch.Tensor, width: int, stride: int) -> torch.Tensor:
    return (cells // width) * stride + cells % width


def expand_pass(cells: torch.Tensor, queries: torch.Tensor, grid_len: int, width: int, device) -> _Expansion:
    """The physical layout of one pass with row ends (stride W + 1), from host tensors."""
    stride = width + 1
    phys = physical_cells(cells, width, stride)
    row_end = cells % width == width - 1
    eol_rows = row_end.nonzero().flatten()
    last = grid_len - 1
    phys_len = int(physical_cells(torch.tensor(last), width, stride)) + 1 + int(last % width == width - 1)
    # physical column -> logical column: a cell's own column; an EOL copies cell (r, W-1)
    grid_cols = torch.arange(phys_len)
    r, c = grid_cols // stride, grid_cols % stride
    is_eol = c == width
    columns = r * width + torch.where(is_eol, torch.full_like(c, width - 1), c)
    keep = ~(is_eol[None] & (columns[None] == cells[:, None]))
    rank = torch.cumsum(row_end.long(), 0) - 1
    phys_queries = torch.where(row_end[queries], len(cells) + rank[queries], queries)
    offsets = torch.cat([phys, phys[eol_rows] + 1])
    return _Expansion(offsets.to(device), eol_rows.to(device), columns.to(device), keep.to(device),
                      phys_queries.to(device), phys_len)


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
        self._plan = None
        if eol_id is not None:
            self._eol = family.embed_ids(torch.full((1, 1), eol_id, dtype=torch.long, device=dev))

    def prepare(self, plan) -> None:
        """Take every pass's physical layout from the plan, derived once per plan on the host.

        Without this the first step of each pass shape reads its cells back from the device,
        a synchronisation per pass on a GPU. The table is keyed by the plan's own tensors,
        which stay alive as long as this session holds the plan.
        """
        if self.eol_id is None:
            return
        width, device = self.grid[1], self.family.lm.device
        key = ("row-end layout", width, str(device))
        table = plan.adapter_cache.get(key)
        if table is None:
            table = {}
            for p, sp in zip(plan.passes[1:], plan.schedule.passes[1:]):
                cells = torch.tensor([f.cell for f in sp.feeds], dtype=torch.long)
                queries = torch.tensor(sp.queries, dtype=torch.long)
                table[(p.cells.data_ptr(), p.grid_len)] = expand_pass(cells, queries, p.grid_len, width, device)
            plan.adapter_cache[key] = table
        self._plan = plan
        self._expansions = table

    def physical(self, cells: torch.Tensor) -> torch.Tensor:
        return physical_cells(cells, self.grid[1], self.stride)

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor) -> torch.Tensor:
        lm, P = self.family.lm, self.prefix.length
        h = self.family.embed_codes(ids)
        if self.eol_id is None:
            offsets = cells
            h = lm.hidden(h, self.base + offsets[None], mask, self.cache, P + offsets, kv_len)
            return self.family.image_logits(h[:, queries])
        key = (cells.data_ptr(), kv_len - P)
        x = self._expansions.get(key)
        if x is None:  # not prepared from a plan (direct callers): derive it from the tensors given
            x = self._expansions[key] = expand_pass(cells.cpu(), queries.cpu(), kv_len - P, self.grid[1], lm.device)
        e = x.eol_rows.shape[0]
        if e:
            h = torch.cat([h, self._eol.expand(h.shape[0], e, -1)], dim=1)
        m = torch.cat([mask[..., :P], mask[..., P:].index_select(-1, x.columns)], dim=-1)
        eol_sees = m.index_select(2, x.eol_rows) if e else None  # what the cell sees, its EOL included
        m[..., P:] &= x.keep  # a cell does not see its own row's EOL
        if e:
            m = torch.cat([m, eol_sees], dim=2)
        h = lm.hidden(h, self.base + x.offsets[None], m, self.cache, P + x.offsets, P + x.grid_len)
        return self.family.image_logits(h[:, x.queries])


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
