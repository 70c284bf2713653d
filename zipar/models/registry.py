"""Recognising what a checkpoint is from its keys, so a wrong file gets a useful message."""
from __future__ import annotations

import torch

from .llamagen import is_gpt_state_dict


def checkpoint_kind(sd: dict[str, torch.Tensor]) -> str:
    """'llamagen-c2i', 'llamagen-t2i', 'llamagen-vq' or 'unknown'."""
    if is_gpt_state_dict(sd):
        return "llamagen-c2i" if "cls_embedding.embedding_table.weight" in sd else "llamagen-t2i"
    if "quantize.embedding.weight" in sd and "decoder.conv_in.weight" in sd:
        return "llamagen-vq"
    return "unknown"
