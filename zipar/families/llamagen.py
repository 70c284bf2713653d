"""LlamaGen (class- and text-to-image GPTs) as a ZipAR family.

Files: the official ``.pt`` / ``.pth`` (weights under ``model``, ``module`` or ``state_dict``),
a bare state dict, or ``.safetensors`` under the official key names; the configuration is read
off the tensor shapes (``zipar.nets.llamagen_gpt``). The image size is not stored: the
released names end in it (``c2i_L_384.pt``), and the grid is that size over the VQ's 16
pixels per token. Conditions: ImageNet class ids (c2i) or 120 flan-t5-xl caption features
(t2i), with the null class / learned null caption as the unconditional CFG branch. Positions
are LlamaGen's 2D rotary table. Row 1 waits for row 0, as in ZipAR's official LlamaGen code.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..core.cache import SCRATCH_SLOTS, CachePool, SlotCache
from ..errors import ZipARError
from ..io.checkpoint import read_state_dict
from ..nets.llamagen_gpt import LlamaGenGPT, gpt_from_state_dict, is_gpt_state_dict
from .base import Condition, Family, Prefix, SamplingDefaults
from .registry import register

SIZE_FACTOR = 2  # the largest image side accepted, as a multiple of the side the model was trained at
UNKNOWN_MAX_SIZE = 1024  # pixels, when the file name does not say the trained size (LlamaGen's largest is 512)
DOWNSAMPLE = 16  # every released LlamaGen GPT was trained on a VQ-16 tokenizer
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
HINT = "LlamaGen GPT files (c2i_B_256.pt ... c2i_3B_384.pt, t2i_XL_stage1_256.pt, t2i_XL_stage2_512.pt)"


def size_in_name(path: str | os.PathLike) -> int | None:
    """The resolution a published file name states (c2i_L_384.pt -> 384), if any."""
    match = re.search(r"_(\d{2,4})$", Path(path).stem)
    return int(match.group(1)) if match else None


def checkpoint_kind(sd: dict[str, torch.Tensor]) -> str:
    """'llamagen-c2i', 'llamagen-t2i', 'llamagen-vq' or 'unknown'."""
    if is_gpt_state_dict(sd):
        return "llamagen-c2i" if "cls_embedding.embedding_table.weight" in sd else "llamagen-t2i"
    if "quantize.embedding.weight" in sd and "decoder.conv_in.weight" in sd:
        return "llamagen-vq"
    return "unknown"


def square_grid(image_size: int, downsample: int) -> tuple[int, int]:
    """The token grid of a square image: its side over the VQ's pixels per token."""
    if downsample < 1:
        raise ZipARError(f"the VQ downsampling factor must be a positive number of pixels per token (got {downsample}); "
                         "LlamaGen's VQ-16 tokenizers use 16.")
    if image_size <= 0 or image_size % downsample:
        raise ZipARError(
            f"image size {image_size} is not a multiple of the VQ downsampling factor {downsample}; "
            f"use e.g. {max(downsample, image_size // downsample * downsample)} or {(image_size // downsample + 1) * downsample}."
        )
    return image_size // downsample, image_size // downsample


@register
class LlamaGenModel(Family):
    """A LlamaGenGPT for the decode loop (class- or text-conditional)."""

    family = "llamagen"
    title = "LlamaGen"
    row0_first = True  # LlamaGen's official ZipAR code completes row 0 before row 1 starts (the paper's counts)
    defaults = SamplingDefaults(cfg=4.0, temperature=1.0, top_k=0, top_p=1.0)
    hint = HINT

    @property
    def vq_hint(self) -> str:
        if self.source_path and Path(self.source_path).name.startswith("demo_"):
            return "the demo's demo_vq.safetensors (zipar-demo/demo_vq.safetensors in ComfyUI)"
        return "LlamaGen's vq_ds16_c2i.pt for c2i models, vq_ds16_t2i.pt for t2i models"

    def __init__(self, gpt: LlamaGenGPT, source_path: str = ""):
        self.gpt = gpt
        self.config = gpt.config
        self.source_path = source_path
        self.vocab_size = gpt.config.vocab_size
        self._rope: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    @classmethod
    def detect(cls, path: Path) -> bool:
        return Path(path).is_file() and Path(path).suffix.lower() in FILE_SUFFIXES

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "LlamaGenModel":
        sd = read_state_dict(path)
        if checkpoint_kind(sd) == "llamagen-vq":
            raise ZipARError(
                f"{Path(path).name} is a VQ image tokenizer, not an AR model. Use it as the VQ model and pick a "
                "LlamaGen GPT checkpoint (e.g. c2i_L_384.pt) as the AR model."
            )
        return cls(gpt_from_state_dict(sd, device, dtype), str(path))

    @property
    def device(self) -> torch.device:
        return self.compute_device if self.compute_device is not None else self.gpt.output.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.gpt.output.weight.dtype

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def reads(self) -> str:
        return "class_ids" if self.config.model_type == "c2i" else "caption"

    @property
    def reads_phrase(self) -> str:
        if self.config.model_type == "c2i":
            return "this is a class-to-image model: it draws from class ids"
        return "this is a text-to-image model: it draws from T5 caption features"

    @property
    def native_image_size(self) -> int | None:
        return size_in_name(self.source_path) if self.source_path else None

    def describe(self) -> str:
        c = self.config
        cond = f"{c.num_classes} classes" if c.model_type == "c2i" else f"text ({c.prefix_len} x {c.caption_dim} features)"
        return f"LlamaGen GPT-{c.size_name} {c.model_type} ({c.n_layer} layers, width {c.dim}, vocabulary {c.vocab_size}, {cond})"

    def code_embeddings(self) -> torch.Tensor:
        return self.gpt.tok_embeddings.weight

    def networks(self) -> list:
        return [self.gpt]

    def layer_stacks(self) -> list:
        return [self.gpt.layers]

    @property
    def max_image_size(self) -> int:
        native = self.native_image_size
        return SIZE_FACTOR * native if native else UNKNOWN_MAX_SIZE

    def check_image_size(self, image_size: int) -> None:
        """Refuse sizes far beyond the trained one: the 2D positions were never seen there, and
        time and memory grow with the square of the side (a typo of 2048 would take ComfyUI down)."""
        limit = self.max_image_size
        if image_size > limit:
            native = self.native_image_size
            trained = f"was trained at {native} px ({Path(self.source_path).name})" if native else \
                "does not say its trained size in its file name"
            raise ZipARError(f"image size {image_size} is too large for this model: it {trained}, and ZipAR accepts up "
                             f"to {limit} px; lower the image size.")

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        size = image_size or self.native_image_size
        if not size:
            raise ZipARError(f"cannot tell the image size from the file name {Path(self.source_path).name!r} (published "
                             "files end in _256, _384 or _512); give the image size (e.g. 256 or 384).")
        self.check_image_size(size)
        return square_grid(size, DOWNSAMPLE if downsample is None else downsample)

    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        c = self.config
        return SlotCache.bytes_for(c.n_layer, rows, c.n_kv_head, c.prefix_len + grid[0] * grid[1], c.head_dim, self.dtype,
                                   self.kv_dtype)

    def rope(self, grid: tuple[int, int]) -> torch.Tensor:
        """The 2D rotary table of a grid, one row per cache slot (the scratch slot's row is zeros)."""
        key = (grid[0], grid[1], self.device)
        if key not in self._rope:
            table = self.gpt.rope_table(*grid)
            table = torch.cat([table, table.new_zeros(SCRATCH_SLOTS, *table.shape[1:])])
            self._rope[key] = table.to(self.device)
        return self._rope[key]

    def check_condition(self, cond: Condition) -> None:
        c = self.config
        self.check_condition_kind(cond)
        if c.model_type == "c2i":
            bad = [i for i in cond.class_ids if not 0 <= int(i) < c.num_classes]
            if bad:
                raise ZipARError(f"class id {bad[0]} is out of range: this model knows classes 0..{c.num_classes - 1}.")
            return
        feats = cond.caption_features
        if feats.ndim != 3 or feats.shape[1] != c.prefix_len or feats.shape[2] != c.caption_dim:
            raise ZipARError(
                f"caption embeddings have shape {tuple(feats.shape)}; this model expects [images, {c.prefix_len}, {c.caption_dim}] "
                "(flan-t5-xl features of 120 tokens)."
            )

    def start(self, cond: Condition, grid: tuple[int, int], guidance: bool,
              pool: CachePool | None = None) -> "LlamaGenSession":
        self.check_condition(cond)
        return LlamaGenSession(self, cond, grid, guidance, pool)

    def prefix_embeddings(self, cond: Condition, guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix inputs [rows, P, dim] and which prefix positions are real [rows, P]."""
        c, dev = self.config, self.device
        n = len(cond)
        if c.model_type == "c2i":
            ids = torch.tensor([int(i) for i in cond.class_ids], device=dev)
            if guidance:
                ids = torch.cat([ids, torch.full_like(ids, c.num_classes)])
            return self.gpt.class_prefix(ids), torch.ones(ids.shape[0], 1, dtype=torch.bool, device=dev)
        feats = cond.caption_features.to(dev)
        mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=dev) if cond.caption_mask is None else cond.caption_mask.to(dev).bool()
        feats = feats * mask[..., None]
        if guidance:
            # The unconditional branch reads the learned null caption through the same mask.
            feats = torch.cat([feats, self.gpt.null_caption(n).to(feats.device, feats.dtype)])
            mask = torch.cat([mask, mask])
        return self.gpt.caption_prefix(feats), mask


class LlamaGenSession:
    """Slots and positions are the prefix, then the grid in raster order (no row ends)."""

    row_ends = False

    def __init__(self, model: LlamaGenModel, cond: Condition, grid: tuple[int, int], guidance: bool,
                 pool: CachePool | None = None):
        self.model = model
        gpt, P = model.gpt, model.config.prefix_len
        self.rope = model.rope(grid)
        embeds, visible = model.prefix_embeddings(cond, guidance)
        rows = embeds.shape[0]
        self.image_slots = grid[0] * grid[1]
        self.cache: SlotCache = gpt.new_cache(rows, P + self.image_slots + SCRATCH_SLOTS, pool)
        # A padding position sees only itself (never a real token's view changes because of it).
        causal = torch.ones(P, P, dtype=torch.bool, device=model.device).tril()
        eye = torch.eye(P, dtype=torch.bool, device=model.device)
        mask = (causal[None] & visible[:, None, :]) | eye[None]
        slots = torch.arange(P, device=model.device)
        h = gpt.hidden(embeds, self.rope[:P], mask[:, None], self.cache, slots, P)
        self.prefix = Prefix(gpt.logits(h[:, -1]), visible, P)

    def prepare(self, plan) -> None:
        """2D positions need nothing from the plan beyond the cells each step is given."""

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor,
             pass_index: int | None = None) -> torch.Tensor:
        return self.logits(self.run(self.embed(ids), cells, mask, kv_len)[:, queries])

    # -- the pieces a step is made of (a compiled step calls them directly) ----------------
    def embed(self, ids: torch.Tensor, row_end: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.gpt.tok_embeddings(ids)

    def run(self, h: torch.Tensor, offsets: torch.Tensor, mask: torch.Tensor, kv_len: int,
            positions: torch.Tensor | None = None) -> torch.Tensor:
        """Inputs ``h`` [rows, n, dim] into the slots ``offsets`` [n] after the prefix -> final hidden states.
        ``positions`` [n]: the grid slots whose positions the inputs take, where they differ from their
        own (an alternative token of a cell, in a slot past the image)."""
        slots = offsets + self.prefix.length
        where = slots if positions is None else positions + self.prefix.length
        return self.model.gpt.hidden(h, self.rope[where], mask, self.cache, slots, kv_len)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.gpt.logits(h)
