"""What every family builds on: the core's contract plus what only families share.

The contract itself (``Family``, ``Condition``, ``DecodeSession`` and their small types) lives in
``zipar.core.contract``, because the decode loop drives it and the core must not import the
floors above it. This module re-exports those names, so a family (and any front end) imports
from one place, and adds what the core has no business knowing: the aspect-ratio shapes front
ends offer, recognising Hugging Face style folders (``zipar.io``) and keeping the decoder layers
in a narrower dtype (``zipar.nets``).
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import torch

from ..core import contract
from ..core.contract import (CONDITION_KINDS, KIND_NAMES, Condition, DecodeSession, Prefix, SamplingDefaults,
                             condition_kind)
from ..errors import ZipARError
from ..io import hf_folder

__all__ = ["ASPECT_RATIOS", "CONDITION_KINDS", "KIND_NAMES", "Condition", "DecodeSession", "Family", "FolderFamily",
           "Prefix", "SamplingDefaults", "condition_kind", "parse_aspect_ratio"]

ASPECT_RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9", "9:21")  # the shapes front ends offer


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


class Family(contract.Family):
    """The core's contract (``zipar.core.contract.Family``), with the weight narrowing filled in.

    Every family module subclasses this one. It is still a ``contract.Family``, so the decode
    loop takes it as it is; what it adds needs ``zipar.nets``, which sits above the core.
    """

    def store_weights(self, dtype: torch.dtype) -> int:
        """Keep the decoder layers' matrices in ``dtype`` (cast per layer at use); returns how many.

        Embeddings, norms and output heads stay in the compute dtype (``nets.stored``)."""
        from ..nets.stored import store_linears

        stacks = self.layer_stacks()
        if not stacks:
            raise ZipARError(f"{self.title} cannot keep its weights in another dtype; use the default weight dtype.")
        count = sum(store_linears(stack, dtype) for stack in stacks)
        self.weight_dtype = dtype
        return count


class FolderFamily(Family):
    """A family released as Hugging Face style folders, recognised by their config.json."""

    @classmethod
    def detect(cls, path: Path) -> bool:
        config = hf_folder.folder_config(path)
        return config is not None and cls.is_own_config(config)

    @classmethod
    @abstractmethod
    def is_own_config(cls, config: dict) -> bool:
        """Whether a folder's config.json describes this family's model."""
