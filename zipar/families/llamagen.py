"""LlamaGen as a ZipAR model family: condition prefixes, 2D positions, the KV cache."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import ZipARError
from .base import Condition, Prefix
from ..nets.llamagen_gpt import KVCache, LlamaGenGPT


SIZE_FACTOR = 2  # the largest image side accepted, as a multiple of the side the model was trained at
UNKNOWN_MAX_SIZE = 1024  # pixels, when the file name does not say the trained size (LlamaGen's largest is 512)


def size_in_name(path: str | os.PathLike) -> int | None:
    """The resolution a published file name states (c2i_L_384.pt -> 384), if any."""
    match = re.search(r"_(\d{2,4})$", Path(path).stem)
    return int(match.group(1)) if match else None


class LlamaGenModel:
    """Wraps a LlamaGenGPT for the decode loop (class- or text-conditional)."""

    family = "llamagen"
    row0_first = True  # LlamaGen's official ZipAR code completes row 0 before row 1 starts (the paper's counts)

    def __init__(self, gpt: LlamaGenGPT, source_path: str = ""):
        self.gpt = gpt
        self.config = gpt.config
        self.source_path = source_path
        self.vocab_size = gpt.config.vocab_size
        self._rope: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.gpt.output.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.gpt.output.weight.dtype

    @property
    def model_type(self) -> str:
        return self.config.model_type

    def describe(self) -> str:
        c = self.config
        cond = f"{c.num_classes} classes" if c.model_type == "c2i" else f"text ({c.prefix_len} x {c.caption_dim} features)"
        return f"LlamaGen GPT-{c.size_name} {c.model_type} ({c.n_layer} layers, width {c.dim}, vocabulary {c.vocab_size}, {cond})"

    @property
    def max_image_size(self) -> int:
        native = size_in_name(self.source_path) if self.source_path else None
        return SIZE_FACTOR * native if native else UNKNOWN_MAX_SIZE

    def check_image_size(self, image_size: int) -> None:
        """Refuse sizes far beyond the trained one: the 2D positions were never seen there, and
        time and memory grow with the square of the side (a typo of 2048 would take ComfyUI down)."""
        limit = self.max_image_size
        if image_size > limit:
            native = size_in_name(self.source_path) if self.source_path else None
            trained = f"was trained at {native} px ({Path(self.source_path).name})" if native else \
                "does not say its trained size in its file name"
            raise ZipARError(f"image size {image_size} is too large for this model: it {trained}, and ZipAR accepts up "
                             f"to {limit} px; lower the image size.")

    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        """Bytes of the key/value cache ``start`` allocates for ``rows`` sequences."""
        c = self.config
        slots = c.prefix_len + grid[0] * grid[1]
        return 2 * c.n_layer * rows * c.n_kv_head * slots * c.head_dim * self.gpt.output.weight.element_size()

    def rope(self, grid: tuple[int, int]) -> torch.Tensor:
        key = (grid[0], grid[1], self.device)
        if key not in self._rope:
            self._rope[key] = self.gpt.rope_table(*grid).to(self.device)
        return self._rope[key]

    def check_condition(self, cond: Condition) -> None:
        c = self.config
        if c.model_type == "c2i":
            if cond.class_ids is None:
                raise ZipARError("this is a class-to-image model: give ImageNet class ids (--class-id), not a prompt.")
            bad = [i for i in cond.class_ids if not 0 <= int(i) < c.num_classes]
            if bad:
                raise ZipARError(f"class id {bad[0]} is out of range: this model knows classes 0..{c.num_classes - 1}.")
            return
        if cond.caption_features is None:
            raise ZipARError(
                "this is a text-to-image model: give a prompt with a text encoder (--prompt and --text-encoder) "
                "or precomputed caption embeddings (--caption-embeddings)."
            )
        feats = cond.caption_features
        if feats.ndim != 3 or feats.shape[1] != c.prefix_len or feats.shape[2] != c.caption_dim:
            raise ZipARError(
                f"caption embeddings have shape {tuple(feats.shape)}; this model expects [images, {c.prefix_len}, {c.caption_dim}] "
                "(flan-t5-xl features of 120 tokens)."
            )

    def start(self, cond: Condition, grid: tuple[int, int], guidance: bool) -> "LlamaGenSession":
        self.check_condition(cond)
        return LlamaGenSession(self, cond, grid, guidance)

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
            feats = torch.cat([feats, self.gpt.null_caption(n).to(feats.dtype)])
            mask = torch.cat([mask, mask])
        return self.gpt.caption_prefix(feats), mask


class LlamaGenSession:
    def __init__(self, model: LlamaGenModel, cond: Condition, grid: tuple[int, int], guidance: bool):
        self.model = model
        gpt, P = model.gpt, model.config.prefix_len
        self.rope = model.rope(grid)
        embeds, visible = model.prefix_embeddings(cond, guidance)
        rows = embeds.shape[0]
        self.cache: KVCache = gpt.new_cache(rows, P + grid[0] * grid[1])
        # A padding position sees only itself (never a real token's view changes because of it).
        causal = torch.ones(P, P, dtype=torch.bool, device=model.device).tril()
        eye = torch.eye(P, dtype=torch.bool, device=model.device)
        mask = (causal[None] & visible[:, None, :]) | eye[None]
        slots = torch.arange(P, device=model.device)
        h = gpt.hidden(embeds, self.rope[:P], mask[:, None], self.cache, slots, P)
        self.prefix = Prefix(gpt.logits(h[:, -1]), visible, P)

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor,
             pass_index: int | None = None) -> torch.Tensor:
        gpt, P = self.model.gpt, self.prefix.length
        slots = cells + P
        h = gpt.hidden(gpt.tok_embeddings(ids), self.rope[slots], mask, self.cache, slots, kv_len)
        return gpt.logits(h[:, queries])
