"""Reading published checkpoint files into a flat state dict.

LlamaGen ships torch pickles whose weights sit under ``model`` (DDP), ``module``
(DeepSpeed) or ``state_dict``; re-saved or converted files may hold a bare state dict or
be ``.safetensors``. Every loader goes through here so that all of them accept the same
set of containers and fail with the same clear messages.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import threading
from pathlib import Path

import torch

from ..errors import ZipARError

WRAPPER_KEYS = ("model", "module", "state_dict", "ema")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")

# Sentences of torch's (and transformers') load errors that advise turning weights_only off
# or allow-listing the refused class: either lets the file run code, so users never see them.
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|trust", re.IGNORECASE)
_allow_list_lock = threading.Lock()


def load_error_detail(exc: BaseException) -> str:
    """The part of a load error that says what was wrong with the file, without the advice to
    load it unsafely (``weights_only=False``, ``add_safe_globals``): ZipAR never does that, and a
    message that suggests it would lead users to run code from a downloaded file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch bolds part of its advice
    sentences = [s.strip(" .\t") for s in re.split(r"(?<=\.)\s+|\n", text)]
    kept = [s for s in sentences if s and not _UNSAFE_ADVICE.search(s)]
    refused = next((s for s in kept if "unsupported" in s.lower()), None)
    if refused:  # torch's own words for what it refused ("Unsupported operand 60", "Unsupported global ...")
        return refused[refused.lower().index("unsupported"):][:200]
    return f"{type(exc).__name__}: {kept[0][:200]}" if kept else type(exc).__name__


def refused_by_weights_only(exc: BaseException) -> bool:
    """True when torch.load read a valid pickle but refused an object in it (a class or function
    that is not a tensor or plain value), as opposed to bytes that are no pickle at all."""
    message = str(exc).lower()
    not_a_pickle = "unsupported operand" in message
    return isinstance(exc, pickle.UnpicklingError) and "weights only" in message and not not_a_pickle


def allow_training_args() -> None:
    """Let weights-only loads rebuild ``argparse.Namespace`` (LlamaGen's training scripts store
    their arguments beside the weights); nothing that can run code is added.

    The entry goes into torch's process-wide allow-list instead of a ``safe_globals`` block: that
    block removes it again on exit, under the feet of a load running in another thread. Checked on
    every load because another pack's ``safe_globals`` block can remove it the same way.
    """
    with _allow_list_lock:
        if argparse.Namespace not in torch.serialization.get_safe_globals():
            torch.serialization.add_safe_globals([argparse.Namespace])


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load every tensor of a checkpoint onto the CPU, unwrapped from its container."""
    path = Path(path)
    if not path.exists():
        raise ZipARError(f"checkpoint not found: {path}. Check the path, or download the file first.")
    if path.is_dir():
        raise ZipARError(f"{path} is a folder; expected a checkpoint file (.pt, .pth or .safetensors).")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types
            raise ZipARError(f"cannot read {path} as safetensors ({exc}); the file may be truncated: re-download it.") from exc
    allow_training_args()
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if refused_by_weights_only(exc):
            raise ZipARError(
                f"cannot read {path}: it pickles Python objects other than tensors and plain values "
                f"({load_error_detail(exc)}), and ZipAR never runs code from a checkpoint. Use the official "
                "LlamaGen file (re-download it), or re-save just the weights as .safetensors."
            ) from exc
        raise ZipARError(
            f"cannot read {path} as a torch checkpoint ({load_error_detail(exc)}). Expected a LlamaGen .pt/.pth "
            "file or a .safetensors file; the download may be incomplete: re-download it."
        ) from exc
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, origin: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a checkpoint container."""
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in tensors.items()}
    raise ZipARError(
        f"{origin} holds no state dict (looked for a bare dict of tensors and for the keys "
        f"{', '.join(WRAPPER_KEYS)}). Is it a model checkpoint?"
    )
