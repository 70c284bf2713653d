"""LlamaGen as a ZipAR model family: condition prefixes, 2D positions, the KV cache."""
from __future__ import annotations

import torch

from ..errors import ZipARError
from .base import Condition, Prefix
from .llamagen import KVCache, LlamaGenGPT


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

    def step(self, ids: torch.Tensor, cells: torch.Tensor, mask: torch.Tensor, kv_len: int, queries: torch.Tensor) -> torch.Tensor:
        gpt, P = self.model.gpt, self.prefix.length
        slots = cells + P
        h = gpt.hidden(gpt.tok_embeddings(ids), self.rope[slots], mask, self.cache, slots, kv_len)
        return gpt.logits(h[:, queries])
