"""The VQ image tokenizers, and the one loader that tells their published formats apart.

Every format module declares a ``FORMAT`` (``base.VQFormat``): a cheap ``detect(path)`` and a
``load(path, device, dtype)`` returning a ``base.VQ``. ``load_vq`` hands a path to the first
format that claims it (the catch-all, LlamaGen's file loader, last); a path no format claims
gets one message: a language-model folder that holds no VQ says where its VQ is, anything else
lists what ZipAR reads. Adding a format is adding its module to ``FORMATS``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io import hf_folder
from . import chameleon, cosmos, emu3, janus, llamagen, movq
from .base import VQ, VQFormat
from .chameleon import LUMINA_VQ_HINT

__all__ = ["FORMATS", "LUMINA_VQ_HINT", "VQ", "VQFormat", "describe_vq_source", "files_hint", "find_format",
           "load_vq"]

# In the order they are asked: a MoVQGAN file first (it may sit beside a Chameleon vqgan.yaml,
# which would make the Chameleon format claim it; it claims no folder); a Chameleon VQGAN pair
# wins even inside another model's folder. Cosmos claims only folders with decoder.jit and .jit
# archives, which no other format reads.
FORMATS: tuple[VQFormat, ...] = (movq.FORMAT, cosmos.FORMAT, chameleon.FORMAT, janus.FORMAT, emu3.FORMAT,
                                 llamagen.FORMAT)


def files_hint() -> str:
    """What ZipAR reads as a VQ, from every format's own description."""
    return "ZipAR reads these VQs: " + "; ".join(f.files for f in FORMATS)


def find_format(path: str | os.PathLike) -> VQFormat | None:
    """The format that claims ``path``: the specific ones first, the catch-all last."""
    path = Path(path).expanduser()
    return next((f for f in sorted(FORMATS, key=lambda f: f.catch_all) if f.detect(path)), None)


def describe_vq_source(path: str | os.PathLike) -> str | None:
    """What VQ ``path`` is, in words that follow "is" (for a VQ given where an AR model belongs),
    or None when no specific format claims it (the catch-all names nothing)."""
    found = find_format(path)
    return found.name if found is not None and not found.catch_all else None


def load_vq(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> VQ:
    """Load the VQ at ``path`` (a file or a folder) with the format that claims it."""
    path = Path(path).expanduser()
    found = find_format(path)
    if found is None:
        raise _no_vq_error(path)
    return found.load(path, device, dtype)


def _no_vq_error(path: Path) -> ZipARError:
    """Why nothing claims ``path``: missing, a language-model folder without its VQ, or unknown."""
    if not path.exists():
        return ZipARError(f"VQ not found: {path}. Check the path, or download the file or folder first.")
    config = hf_folder.read_config(path, files_hint())  # no config.json: that error, with the hint
    model_type = config.get("model_type")
    for fmt in FORMATS:
        if isinstance(model_type, str) and model_type in fmt.no_vq_folders:
            return ZipARError(f"'{path}' {fmt.no_vq_folders[model_type]}")
    return ZipARError(f"'{path}' holds a model of type {model_type!r}, which ZipAR does not know as a VQ; "
                      f"{files_hint()}.")
