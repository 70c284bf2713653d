"""Which torch releases the pack supports, checked once when ``zipar`` is imported.

The engine relies on torch features that older releases lack or spell differently (grouped-query
attention in ``scaled_dot_product_attention``, 8-bit float dtypes, ``torch.compiler`` marks for
captured graphs, the inductor behaviour the compiled step is tested against). Rather than fail
later with a traceback from deep inside a forward pass, an older torch is refused at import with
one message naming the version found and the fix. Newer releases than the newest tested one are
allowed: torch rarely removes public API between minor releases, and refusing them would block
users whose host (ComfyUI) has already moved on.
"""
from __future__ import annotations

import re

OLDEST = (2, 9)  # the oldest release the suite passes on (tested: docs/testing.md)
TESTED = "2.9.1, 2.13.0, 2.14.1 and 2.15.0"


class TorchTooOld(ImportError):
    """torch is older than ``OLDEST``: the message says which version was found and how to upgrade."""


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as '2.14.1+cu130' or '2.16.0.dev20261201'."""
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    if not match:
        raise ValueError(f"not a torch version: {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_torch_version(version: str) -> None:
    """Raise ``TorchTooOld`` for a release older than ``OLDEST``; unreadable strings pass (a local build)."""
    try:
        found = parse_version(version)
    except ValueError:
        return
    if found < OLDEST:
        need = ".".join(map(str, OLDEST))
        raise TorchTooOld(
            f"ZipAR needs torch {need} or newer, but this Python has torch {version}. Upgrade it in the same "
            f"environment (ComfyUI's own, for the nodes), keeping your CUDA build: pip install --upgrade "
            f"\"torch>={need}\" (add PyTorch's --index-url for your CUDA version). Tested: torch {TESTED}.")


def check_installed_torch() -> None:
    """Check the torch this process would import (a missing torch is a clear error too)."""
    try:
        import torch
    except ModuleNotFoundError:
        raise ImportError("ZipAR needs PyTorch, which is not installed in this Python: pip install -r "
                          "requirements.txt (or install the torch build for your GPU first).") from None
    check_torch_version(torch.__version__)
