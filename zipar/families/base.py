"""The contract between the decode loop and a model family.

The loop owns the schedule, the token grid, the visibility mask and sampling; an adapter
owns everything that differs between families: how a condition becomes a prefix (per CFG
branch, possibly of different lengths, left-padded to one length with hidden pads), where
each grid cell sits (2D rotary for LlamaGen, 1D indices with row-end columns for Emu3 and
Lumina), which vocabulary slice is sampled, and the key/value cache. The cache is indexed
by slot = prefix length + raster cell, so a stand-in and the real token share a slot and
"what a query may see" is one boolean mask over slots.

The loop speaks only in image codes and grid cells; how the other families fit:

- Vocabulary: ``ids`` are image codes 0..vocab_size-1 and the returned logits cover exactly
  those codes. Janus (separate generation head), Emu3 and Lumina (visual tokens inside a text
  vocabulary, mapped by token name) translate codes <-> vocabulary ids inside the adapter.
- Positions: the adapter maps a cell to its position: 2D rotary (row, col) for LlamaGen; a
  1D index after the prompt for Janus; ``prompt + row * (W + 1) + col`` for Emu3/Lumina,
  whose rows end with a fixed end-of-line token.
- Row ends: an adapter with row-end tokens stores its cache in its own physical layout and
  expands each step: feeding cell (r, W-1), real or stand-in, also feeds the fixed EOL token
  right after it (seeing what that cell sees, plus the cell); the query for cell (r+1, 0) is
  read at that EOL. The loop's mask over (prefix + cells) expands mechanically to that layout.
- CFG prefixes of different lengths (Emu3's negative prompt) are left-padded to one length
  with ``Prefix.visible`` False on the pads, and each branch keeps its own positions from 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import ZipARError

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9", "9:21")  # the Text Prompt node's list


def parse_aspect_ratio(ratio: str, family: str, max_ratio: float) -> tuple[int, int]:
    """"W:H" -> (W, H), refusing shapes the family was never trained on."""
    try:
        w, h = (int(x) for x in ratio.split(":"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise ZipARError(f"aspect ratio must look like 16:9 (width:height), got {ratio!r}.") from None
    if max(w / h, h / w) > max_ratio:
        raise ZipARError(f"aspect ratio {ratio} is too extreme for {family} (at most {max_ratio:g}:1); "
                         f"pick one of {', '.join(ASPECT_RATIOS)}.")
    return w, h


@dataclass
class Condition:
    """What to draw, one entry per image (before ``batch`` repeats it).

    Exactly one of the fields is set, matching the model family: ImageNet class ids for
    LlamaGen c2i; flan-t5 features with their token mask for LlamaGen t2i; prompts for the
    chat-style families that tokenize text themselves.
    """

    class_ids: list[int] | None = None
    caption_features: torch.Tensor | None = None  # [N, T, C]
    caption_mask: torch.Tensor | None = None  # [N, T] bool, True = real token
    prompts: list[str] | None = None
    labels: list[str] = field(default_factory=list)  # human-readable, for reports and file names
    negative_prompts: list[str] | None = None  # chat families: the unconditional branch's text (Emu3)
    aspect_ratio: str | None = None  # "W:H" for families that draw several shapes (Emu3, Lumina); None = native
    # Emu3-Gen: append the official example's quality suffix to each prompt (never twice); other families ignore it
    quality_suffix: bool = True

    def __len__(self) -> int:
        for value in (self.class_ids, self.caption_features, self.prompts):
            if value is not None:
                return len(value)
        return 0

    def repeat(self, times: int) -> "Condition":
        """Each entry ``times`` times in a row (image order: cond0 x times, cond1 x times...)."""
        if times == 1:
            return self
        rep = lambda t: None if t is None else t.repeat_interleave(times, dim=0)  # noqa: E731
        many = lambda xs: None if xs is None else [x for x in xs for _ in range(times)]  # noqa: E731
        return Condition(many(self.class_ids), rep(self.caption_features), rep(self.caption_mask), many(self.prompts),
                         many(self.labels) or [], many(self.negative_prompts), self.aspect_ratio, self.quality_suffix)


@dataclass
class Prefix:
    """The prefill's result: logits that predict cell 0, and which prefix slots are real."""

    logits: torch.Tensor  # [rows, vocab] float32
    visible: torch.Tensor  # [rows, prefix_len] bool
    length: int


class DecodeSession(Protocol):
    """One request's cache and prefix; rows are [conditional..., unconditional...]."""

    prefix: Prefix

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor,
             pass_index: int | None = None) -> torch.Tensor:
        """Feed ``ids`` [rows, n] into the slots of ``cells`` [n]; return [rows, m, vocab] logits at ``queries`` [m].

        ``mask`` [rows or 1, 1, n, kv_len] says which slots each input may attend to.
        ``pass_index`` names the plan's pass being run (sessions that prepared per-pass
        layouts from the plan read them by it; None: derive from the tensors given).
        """
        ...


class ARModel(Protocol):
    family: str
    vocab_size: int  # image codes the loop samples from
    # When row 1 starts, as the family's official ZipAR code does it: after row 0 is complete
    # (True: LlamaGen's) or once row 0 is `window` tokens ahead, like every later row (False: Lumina-mGPT's).
    row0_first: bool

    def check_condition(self, cond: Condition) -> None:
        """Raise ZipARError if the condition does not suit this model (wrong kind, id out of range)."""
        ...

    def start(self, cond: Condition, grid: tuple[int, int], guidance: bool) -> DecodeSession:
        """Allocate the cache for ``len(cond)`` images (twice that with guidance) and run the prefix."""
        ...

    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        """About how many bytes ``start`` allocates for ``rows`` sequences (checked against free memory first)."""
        ...
