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
from typing import Callable, ClassVar, Protocol

import torch
import torch.nn as nn

from ..core.cache import SCRATCH_SLOTS, CachePool, SlotCache
from ..core.row_ends import PassLayout, RowEndColumns, RowEndLayout, expand_pass
from ..errors import ZipARError
from ..io import hf_folder
from ..nets.llama_lm import LlamaConfig, LlamaLM, lm_from_state_dict
from .base import FolderFamily, Prefix, parse_aspect_ratio


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
        return self.lm.embed_tokens(self.code_ids.to(codes.device)[codes])  # a no-op unless a host offloaded the buffer

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.image_head(hidden).float()


def special_ids(vocab: dict[str, int], tokens: dict[str, str], folder, hint: str) -> dict[str, int]:
    """Our name -> vocabulary id of each special token a family places, or one clear error."""
    special = {}
    for name, token in tokens.items():
        if token not in vocab:
            raise ZipARError(f"the vocabulary of '{folder}' lacks {token}; {hint}.")
        special[name] = int(vocab[token])
    return special


def code_ids_by_name(vocab: dict[str, int], code_of: Callable[[str], int | None], what: str, folder,
                     hint: str) -> torch.Tensor:
    """Vocabulary id of each image code, found by token name (``code_of(name)`` -> code or None):
    the releases' id order need not be the code order."""
    found = {code: int(i) for name, i in vocab.items() if (code := code_of(name)) is not None}
    if not found:
        raise ZipARError(f"'{folder}' has no {what} in its vocabulary; {hint}.")
    if sorted(found) != list(range(len(found))):
        raise ZipARError(f"the {what} of '{folder}' number their codes with gaps; {hint}.")
    return torch.tensor([found[c] for c in range(len(found))], dtype=torch.long)


def visual_token_generator(cfg: LlamaConfig, keys: dict, lm_keys: dict[str, str], head_key: str,
                           code_ids: torch.Tensor, folder, hint: str, device, dtype) -> "VisualTokenGenerator":
    """Read the language model and the image rows of its output matrix from a folder's shards."""
    wanted = set(lm_keys.values()) | {head_key}
    raw = hf_folder.read_tensors(keys, lambda k: k in wanted)
    lm = lm_from_state_dict(cfg, {ours: raw[theirs] for ours, theirs in lm_keys.items()}, str(folder), device, dtype)
    if int(code_ids.max()) >= raw[head_key].shape[0]:
        raise ZipARError(f"'{folder}': the image token ids exceed the model's vocabulary; {hint}.")
    with torch.device("meta"):
        net = VisualTokenGenerator(cfg, len(code_ids))
    net.lm = lm
    net.image_head.weight = nn.Parameter(raw[head_key][code_ids].to(device=device, dtype=dtype), requires_grad=False)
    net.code_ids = code_ids.to(device)
    return net.eval().requires_grad_(False)


class VisualTokenModel(FolderFamily):
    """The decode-loop side of a VisualTokenGenerator family (Emu3, Lumina-mGPT): what stays
    the same when only the prompt recipe, the sizes and the closing tokens differ.

    Subclasses set the Family class attributes and ``closing`` (names in ``special`` written
    after the last row) and provide ``prompt_ids(prompt, grid)``, ``prompt_rows(cond,
    guidance, grid)`` and ``grid_for``; ``special`` holds at least "pad" and "eol".
    """

    reads = "prompt"
    closing: ClassVar[tuple[str, ...]] = ()
    max_ratio = 4.0  # the most extreme aspect ratio the family draws
    image_size: int  # native pixels per side (Emu3: the side of its pixel area)

    def __init__(self, net: VisualTokenGenerator, tokenizer, special: dict[str, int], source_path: str):
        self.net, self.tokenizer, self.special, self.source_path = net, tokenizer, special, source_path
        self.vocab_size = net.image_head.out_features
        self.config = net.lm.config

    @property
    def device(self) -> torch.device:
        return self.compute_device if self.compute_device is not None else self.net.image_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.image_head.weight.dtype

    def code_embeddings(self) -> torch.Tensor:
        """[codes, dim] input vectors of the image tokens (preview colours)."""
        return self.net.lm.embed_tokens.weight[self.net.code_ids]

    def networks(self) -> list:
        return [self.net]

    def layer_stacks(self) -> list:
        return [self.net.lm.layers]

    @staticmethod
    def ratio_of(cond) -> str:
        """The condition's "W:H", 1:1 when it names none (or there is no condition yet)."""
        return (getattr(cond, "aspect_ratio", None) if cond is not None else None) or "1:1"

    @property
    def native_image_size(self) -> int:
        return self.image_size

    def check_condition(self, cond) -> None:
        self.check_condition_kind(cond)
        parse_aspect_ratio(self.ratio_of(cond), self.title, self.max_ratio)  # the size is checked with the grid

    def image_positions(self, grid: tuple[int, int]) -> int:
        """Positions the image takes after the prompt: its rows and their end-of-line tokens."""
        return grid[0] * (grid[1] + 1)

    def check_image_length(self, grid: tuple[int, int]) -> None:
        self.config.check_length(0, self.image_positions(grid), f"a {grid[0]}x{grid[1]} image with its row ends")

    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        """The image part of the key/value cache (prompts add a few hundred positions at most)."""
        return self.config.cache_bytes(rows, self.image_positions(grid), self.dtype, self.kv_dtype)

    def start(self, cond, grid: tuple[int, int], guidance: bool, pool: CachePool | None = None) -> "SequenceSession":
        self.check_condition(cond)
        rows = self.prompt_rows(cond, guidance, tuple(grid))
        self.config.check_length(max(len(r) for r in rows), self.image_positions(grid),
                                 f"a {grid[0]}x{grid[1]} image with its row ends")
        batch = PromptBatch.left_padded(rows, self.special["pad"], self.device, pool)
        return SequenceSession(self.net, batch, tuple(grid), self.special["eol"], pool)

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
    def left_padded(cls, rows: list[list[int]], pad_id: int, device, pool: CachePool | None = None) -> "PromptBatch":
        """``pool``: a compiled step will run; round the length up to its ``prompt_multiple`` so
        prompts of similar length share one compiled shape (the extra pads are invisible)."""
        length = max(len(r) for r in rows)
        if pool is not None:
            length = -(-length // pool.prompt_multiple) * pool.prompt_multiple
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        visible = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            if r:
                ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
                visible[i, length - len(r):] = True
        return cls(ids.to(device), visible.to(device))


class SequenceSession:
    def __init__(self, family: SequenceFamily, prompts: PromptBatch, grid: tuple[int, int], eol_id: int | None,
                 pool: CachePool | None = None):
        lm = family.lm
        self.family, self.grid, self.eol_id = family, grid, eol_id
        height, width = grid
        self.row_ends = eol_id is not None
        self.stride = width + (1 if eol_id is not None else 0)
        self.image_slots = height * self.stride
        ids, visible = prompts.ids, prompts.visible
        rows, P = ids.shape
        dev = lm.device
        self.cache: SlotCache = lm.new_cache(rows, P + self.image_slots + SCRATCH_SLOTS, pool)
        # Each branch counts positions from its own first real token.
        self.base = visible.sum(1, keepdim=True)  # [rows, 1]: position of the first image token
        positions = (visible.long().cumsum(1) - 1).clamp(min=0)
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        eye = torch.eye(P, dtype=torch.bool, device=dev)
        mask = (causal[None] & visible[:, None, :]) | eye[None]
        self.rope = lm.rope_table(P + self.image_slots + SCRATCH_SLOTS, lm.dtype)  # every position a request uses
        h = lm.hidden(family.embed_ids(ids), positions, mask[:, None], self.cache, torch.arange(P, device=dev), P,
                      self.rope)
        self.prefix = Prefix(family.image_logits(h[:, -1:])[:, 0], visible, P)
        self._layout: RowEndLayout | None = None
        if eol_id is not None:
            self._eol = family.embed_ids(torch.full((1, 1), eol_id, dtype=torch.long, device=dev))
            self._columns = RowEndColumns.build(height, width, dev)

    def prepare(self, plan) -> None:
        """Take every pass's physical layout from the plan (derived once per plan on the host).

        Without this each step derives its layout from the tensors it is given, which reads
        them back from the device: a synchronisation per pass on a GPU.
        """
        if self.eol_id is not None:
            self._layout = plan.row_end_layout()

    # -- the pieces a step is made of (a compiled step calls them directly) ----------------
    def embed(self, ids: torch.Tensor, row_end: torch.Tensor | None = None) -> torch.Tensor:
        """Image codes [rows, n] -> inputs; where ``row_end`` [n] is True the input is the row's EOL token."""
        h = self.family.embed_codes(ids)
        if row_end is not None and self.eol_id is not None:
            h = torch.where(row_end[None, :, None], self._eol.to(h.dtype), h)
        return h

    def run(self, h: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor, kv_len: int,
            positions: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs ``h`` [rows, n, hidden] at physical ``offsets`` [n] after the prompt -> final hidden states.
        ``positions`` [n]: the physical offsets whose positions the inputs take, where they differ from
        their slots (an alternative token of a cell, in a slot past the image)."""
        P = self.prefix.length
        where = offsets if positions is None else positions
        return self.family.lm.hidden(h, self.base + where[None], mask, self.cache, P + offsets, kv_len, self.rope)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.family.image_logits(h)

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor,
             pass_index: int | None = None) -> torch.Tensor:
        P = self.prefix.length
        h = self.embed(ids)
        if self.eol_id is None:
            return self.logits(self.run(h, cells, mask, kv_len)[:, queries])
        if self._layout is not None and pass_index is not None:
            x = self._layout.pass_(pass_index)
        else:  # not prepared from a plan (direct callers): derive the layout from the tensors given
            offsets, eol_rows, phys_queries, phys_len = expand_pass(cells.cpu(), queries.cpu(), kv_len - P, self.grid[1])
            dev = self.cache.k[0].device
            x = PassLayout(offsets.to(dev), eol_rows.to(dev), phys_queries.to(dev), phys_len)
        e = x.eol_rows.shape[0]
        if e:
            h = torch.cat([h, self._eol.expand(h.shape[0], e, -1)], dim=1)
        m = torch.cat([mask[..., :P], mask[..., P:].index_select(-1, self._columns.columns[:x.grid_len])], dim=-1)
        if e:
            eol_sees = m.index_select(2, x.eol_rows)  # what the cell sees, its EOL included
            m[:, :, x.eol_rows, P + x.offsets[-e:]] = False  # a row's last cell does not see its own row's EOL
            m = torch.cat([m, eol_sees], dim=2)
        return self.logits(self.run(h, x.offsets, m, P + x.grid_len)[:, x.queries])


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
