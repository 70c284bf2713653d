"""The contract between the decode loop and a model family.

It lives with the core because the core drives it: the loop imports only this module, never a
family, so the floors stay one way (``families`` builds on the core, not the reverse).
``zipar.families.base`` re-exports every name here and adds what only families share (the
aspect-ratio parser, folder detection, narrowing weights through ``zipar.nets``).

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

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import torch

from ..errors import ConditionMismatch, ZipARError
from .cache import check_kv_dtype


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
    """One request's cache and prefix; rows are [conditional..., unconditional...].

    Slots after the prefix are physical: ``image_slots`` of them (grid cells, plus one EOL
    per row when ``row_ends``), then a scratch slot no query sees. ``step`` is the eager
    pass; a compiled step (``core.static_step``) calls ``embed`` / ``run`` / ``logits``.
    """

    prefix: Prefix
    image_slots: int
    row_ends: bool

    def embed(self, ids: torch.Tensor, row_end: torch.Tensor | None = None) -> torch.Tensor:
        """Image codes [rows, n] -> input vectors; inputs flagged in ``row_end`` [n] are the row's EOL."""
        ...

    def run(self, h: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor, kv_len: int,
            positions: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs [rows, n, dim] into the physical slots ``offsets`` [n] after the prefix -> final hidden states.
        ``positions`` [n] (speculative draft branches): the physical slots whose positions the inputs
        take, where they differ from ``offsets`` (slots past the scratch slot, ``CachePool.extra_slots``)."""
        ...

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states [rows, m, dim] -> float32 logits over the image codes."""
        ...

    def prepare(self, plan) -> None:
        """Take what the session needs from the plan before the first step (e.g. the row-end layout)."""
        ...

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor,
             pass_index: int | None = None) -> torch.Tensor:
        """Feed ``ids`` [rows, n] into the slots of ``cells`` [n]; return [rows, m, vocab] logits at ``queries`` [m].

        ``mask`` [rows or 1, 1, n, kv_len] says which slots each input may attend to.
        ``pass_index`` names the plan's pass being run (sessions that prepared per-pass
        layouts from the plan read them by it; None: derive from the tensors given).
        """
        ...


CONDITION_KINDS = ("class_ids", "caption", "prompt")  # what a family reads; front ends say how to give each


@dataclass(frozen=True)
class SamplingDefaults:
    """A family's official sampling recipe (what its own code or README uses)."""

    cfg: float = 4.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


class Family(ABC):
    """The one contract between a model family and everything else.

    The decode loop uses ``start`` / ``cache_bytes`` / ``row0_first`` / ``vocab_size``; the
    request builder (``zipar.api.prepare``) uses ``check_condition`` / ``grid_for`` /
    ``defaults``; front ends use ``reads`` / ``title`` / ``describe`` / ``native_image_size``
    and previews ``code_embeddings``. A family module subclasses ``families.base.Family`` (this
    class plus the weight narrowing every family shares), implements every abstract member and
    registers the class (``families.registry.register``); nothing outside it needs to know the
    family exists. Nothing writes into a loaded model afterwards: per-request choices (the VQ's
    downsampling, an image size) are arguments.
    """

    family: ClassVar[str]  # registry key, e.g. "lumina-mgpt"
    title: ClassVar[str]  # for messages, e.g. "Lumina-mGPT"
    reads: ClassVar[str]  # one of CONDITION_KINDS
    row0_first: ClassVar[bool]  # row 1 waits for row 0 (LlamaGen's official ZipAR) or follows the window rule
    defaults: ClassVar[SamplingDefaults]
    hint: ClassVar[str] = ""  # which published files this family reads (for "unknown file" messages)
    vq_hint: ClassVar[str] = "the VQ released with the model"  # which VQ to pair it with, for mismatch messages

    vocab_size: int  # image codes the loop samples from
    source_path: str
    weight_dtype: torch.dtype | None = None  # set by ``store_weights``: what the decoder layers' matrices are kept in
    # set by ``store_cache`` (at load): what its key/value caches keep, a ``core.cache.KV_DTYPES`` name;
    # "default" is the compute dtype, "int8" 8-bit values with a scale per (row, head, slot) vector
    kv_dtype: str = "default"
    compute_device: torch.device | None = None  # set by ``place``; None: where the weights are

    # -- files --------------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Cheap: whether ``path`` (a file or a folder) is this family's published format."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "Family":
        """Read the model from ``path`` (which ``detect`` accepted), or raise a ZipARError."""

    # -- what it draws ------------------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @property
    @abstractmethod
    def native_image_size(self) -> int | None:
        """Pixels per side the model was released for (None when the files do not say)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people: family, size, vocabulary."""

    @abstractmethod
    def check_condition(self, cond: Condition) -> None:
        """Raise ConditionMismatch for the wrong kind of condition, ZipARError for a bad one."""

    @abstractmethod
    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        """The token grid for a condition (its aspect ratio) at ``image_size`` pixels (None: native)
        with a VQ of ``downsample`` pixels per token (None: the family's own)."""

    def check_vq(self, vq) -> None:
        """Refuse a VQ that has the right number of codes but is not the family's tokenizer (several
        release VQs have 16384 codes); the codebook size itself is checked by ``api.check_pair``."""

    def code_embeddings(self) -> torch.Tensor | None:
        """[codes, dim] input vectors of the image codes, for preview colours (None: hashed colours)."""
        return None

    # -- weights ------------------------------------------------------------------------------
    def networks(self) -> list:
        """The nn.Modules that hold the model's weights (moved between devices, measured)."""
        return []

    def layer_stacks(self) -> list:
        """The decoder layers whose matrices may be stored in a narrower dtype (``store_weights``)."""
        return []

    def store_weights(self, dtype: torch.dtype) -> int:
        """Keep the decoder layers' matrices in ``dtype`` (cast per layer at use); returns how many.

        The contract's default refuses: narrowing needs the layers of ``zipar.nets``, which the
        core does not import; ``families.base.Family`` implements it for every family there."""
        raise ZipARError(f"{self.title} cannot keep its weights in another dtype; use the default weight dtype.")

    def store_cache(self, kind: str) -> None:
        """Keep this model's key/value caches in ``kind`` (``core.cache.KV_DTYPES``) from its next request on.

        ``cache_bytes`` then counts that kind. The networks' cache makers (modules with a
        ``kv_dtype`` class attribute: ``nets.llama_lm.LlamaLM``, ``nets.llamagen_gpt.LlamaGenGPT``)
        take the kind, so every session allocates it; a family without them refuses anything but
        the default. Set at load (``api.load_ar_model(..., kv_dtype=...)``), like ``store_weights``."""
        check_kv_dtype(kind)
        makers = [m for net in self.networks() for m in net.modules() if hasattr(type(m), "kv_dtype")]
        if kind != "default" and not makers:
            raise ZipARError(f"{self.title} cannot keep its key/value cache in {kind}; use the default kv dtype.")
        if kind != self.kv_dtype:  # compiled steps and the pooled cache were built for the old kind
            from .static_step import release

            release(self)
        for module in makers:
            module.kv_dtype = kind
        self.kv_dtype = kind

    def move_to(self, device: torch.device) -> None:
        """Move every network's weights to ``device`` (hosts that manage memory use ``place`` instead)."""
        for net in self.networks():
            net.to(device)

    def place(self, device: torch.device | None) -> None:
        """Compute on ``device`` whatever device the weights are on now (None: where they are).

        For a host that moves the weights itself (ComfyUI's memory manager loads them onto the
        card before each run, offloads them after, and may leave some layers in system memory):
        caches and inputs must then go where the work runs, not where some weight happens to be."""
        self.compute_device = device
        for net in self.networks():
            for module in net.modules():
                if hasattr(type(module), "compute_device"):
                    module.compute_device = device

    # -- decoding -----------------------------------------------------------------------------
    def guidance_scales(self, grid: tuple[int, int], cfg: float, schedule: str) -> torch.Tensor | None:
        """The guidance scale of every cell [H*W] (float32, raster order) when ``schedule`` makes it
        vary over the image, else None (``cfg`` everywhere). "official" is what the family's own
        code does, "constant" is ``cfg`` throughout; only families whose code varies it override this."""
        return None

    @abstractmethod
    def start(self, cond: Condition, grid: tuple[int, int], guidance: bool, pool=None) -> DecodeSession:
        """Allocate the cache for ``len(cond)`` images (twice that with guidance) and run the prefix.

        ``pool`` (a ``core.cache.CachePool``): a compiled step will run; take the cache from it.
        """

    @abstractmethod
    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        """About how many bytes ``start`` allocates for ``rows`` sequences (checked against free memory first),
        in the model's ``kv_dtype`` (``core.cache.SlotCache.bytes_for``)."""

    @property
    def reads_phrase(self) -> str:
        """What the model draws from, in words (the start of a wrong-condition message)."""
        return f"{self.title} draws from {KIND_NAMES[self.reads]}"

    def check_condition_kind(self, cond: Condition) -> None:
        """Raise ConditionMismatch when ``cond`` is not of the kind this family reads."""
        given = condition_kind(cond)
        if given != self.reads:
            raise ConditionMismatch(f"{self.reads_phrase}, not {KIND_NAMES[given]}", needs=self.reads)


KIND_NAMES = {"class_ids": "class ids", "caption": "T5 caption features", "prompt": "a text prompt",
              None: "an empty condition"}


def condition_kind(cond: Condition) -> str | None:
    """Which kind of condition ``cond`` carries (a key of ``KIND_NAMES``; None when empty)."""
    if cond.class_ids is not None:
        return "class_ids"
    if cond.caption_features is not None:
        return "caption"
    if cond.prompts is not None:
        return "prompt"
    return None
