"""Building conditions: class ids for c2i, left-padded caption features for t2i."""
from __future__ import annotations

import torch

from .errors import ZipARError
from .families.base import Condition


def class_condition(class_ids: list[int], labels: list[str] | None = None) -> Condition:
    ids = [int(i) for i in class_ids]
    return Condition(class_ids=ids, labels=labels or [f"class{i}" for i in ids])


def caption_condition(features: torch.Tensor, mask: torch.Tensor | None = None, labels: list[str] | None = None) -> Condition:
    """Text features [N, T, C] + token mask -> a LlamaGen t2i condition, real tokens moved last.

    LlamaGen's text models were sampled with left padding (pads first, the caption right
    before the image), so the real tokens are moved to the end in their original order.
    """
    if features.ndim == 2:
        features = features[None]
        mask = None if mask is None else mask.reshape(1, -1) if mask.ndim == 1 else mask
    if features.ndim != 3 or not features.is_floating_point():
        raise ZipARError(f"caption features must be floating-point [images, tokens, channels]; got {features.dtype} "
                         f"{tuple(features.shape)}.")
    if mask is None:
        mask = torch.ones(features.shape[:2], dtype=torch.bool)
    if tuple(mask.shape) != tuple(features.shape[:2]):
        raise ZipARError(f"the caption mask has shape {tuple(mask.shape)} but the features {tuple(features.shape)} "
                         f"need one entry per token: {tuple(features.shape[:2])}; save the mask the text encoder "
                         "returned with the features.")
    mask = mask.bool()
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    features = torch.gather(features, 1, order[..., None].expand_as(features))
    mask = torch.gather(mask, 1, order)
    n = features.shape[0]
    return Condition(caption_features=features, caption_mask=mask, labels=labels or [f"caption{i}" for i in range(n)])
