"""The data our custom ComfyUI types carry between nodes.

ZIPAR_MODEL      ARModel: the loaded AR model and the image size it generates
ZIPAR_VQ         VQHandle: the engine's VQ (decode_codes / encode_images, codebook_size, downsample)
ZIPAR_CONDITION  the engine's Condition (class ids, or caption features for LlamaGen t2i)
ZIPAR_TOKENS     Tokens: a batch of token grids and where they came from
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

AR_MODEL = "ZIPAR_MODEL"
VQ = "ZIPAR_VQ"
CONDITION = "ZIPAR_CONDITION"
TOKENS = "ZIPAR_TOKENS"


@dataclass
class ARModel:
    model: object  # zipar's LlamaGenModel (family, vocab_size, device, dtype, describe())
    image_size: int  # pixels per side; the token grid is image_size / VQ downsampling
    name: str = ""
    patcher: object | None = None  # inside ComfyUI: its ModelPatcher (nodes/memory.py)

    def __repr__(self) -> str:  # shown by ComfyUI's debug views; keep it short
        return f"ARModel({self.name!r}, image_size={self.image_size})"


@dataclass
class VQHandle:
    vq: object  # zipar's VQ
    name: str = ""
    patcher: object | None = None  # inside ComfyUI: its ModelPatcher (nodes/memory.py)

    def __repr__(self) -> str:
        return f"VQHandle({self.name!r})"


def engine_vq(value):
    """The engine's VQ behind a node input (scripts may pass the engine's VQ itself)."""
    return value.vq if isinstance(value, VQHandle) else value


def vq_patcher(value):
    return value.patcher if isinstance(value, VQHandle) else None


@dataclass
class Tokens:
    tokens: torch.Tensor  # [images, H, W] int64, CPU
    vocab_size: int  # codebook size the ids index into (the AR model's or the VQ's)
    labels: list[str] = field(default_factory=list)
    report: str = ""
    vq_hint: str = ""  # which VQ decodes them (the model family's), for mismatch messages

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.tokens.shape[1]), int(self.tokens.shape[2])

    def __repr__(self) -> str:
        return f"Tokens({tuple(self.tokens.shape)}, vocab={self.vocab_size})"
