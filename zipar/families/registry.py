"""Every model family, found by looking at the family modules themselves.

A family module subclasses ``Family`` and decorates the class with ``@register``; the first
lookup imports every module of this package, so adding a family is adding a module. Loading
asks each family whether a path is its format (``detect``) and hands it to the first that
says yes; a path that no family claims gets one message: the image tokenizer it is, or which
files each family reads.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io import hf_folder
from .base import Family

_FAMILIES: dict[str, type[Family]] = {}
_discovered = False


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make ``cls`` a family the loaders and front ends know."""
    if cls.family in _FAMILIES and _FAMILIES[cls.family] is not cls:
        raise ValueError(f"two model families are both named {cls.family!r}")
    _FAMILIES[cls.family] = cls
    return cls


def families() -> list[type[Family]]:
    """All registered families, in registration order (the package's modules imported once)."""
    global _discovered
    if not _discovered:
        _discovered = True
        package = __name__.rsplit(".", 1)[0]
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{module.name}")
    return list(_FAMILIES.values())


def files_hint() -> str:
    """What ZipAR reads as AR models, from every family's own description."""
    return "ZipAR reads " + "; ".join(f.hint for f in families() if f.hint)


def load_ar_model(path: str | Path, device: torch.device, dtype: torch.dtype,
                  weights: torch.dtype | None = None) -> Family:
    """The AR model at ``path`` (a file or a folder), loaded by the family whose format it is.

    ``weights``: keep the decoder layers' matrices in this dtype (None: the compute ``dtype``).
    Narrowed on the CPU before moving to a GPU, so the card never holds the 16-bit copy.
    """
    path = Path(path)
    if not path.exists():
        raise ZipARError(f"model not found: {path}. Check the path, or download the file first.")
    for family in families():
        if family.detect(path):
            if weights is None or weights == dtype:
                return family.load(path, device, dtype)
            model = family.load(path, torch.device("cpu"), dtype)
            model.store_weights(weights)
            if device.type != "cpu":
                model.move_to(device)
            return model
    from ..vq import describe_vq_source

    vq = describe_vq_source(path)
    if vq is not None:
        raise ZipARError(f"'{path}' is {vq}, not an AR model: use it as the VQ and pick the AR model it belongs to.")
    config = hf_folder.folder_config(path)
    if config is not None:
        raise ZipARError(f"'{path}' holds a model of type {config.get('model_type')!r}, which ZipAR does not know; "
                         f"{files_hint()}.")
    raise ZipARError(f"'{path}' is not a model ZipAR knows; {files_hint()}.")
