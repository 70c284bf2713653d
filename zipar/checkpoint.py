"""Reading published checkpoint files into a flat state dict.

LlamaGen ships torch pickles whose weights sit under ``model`` (DDP), ``module``
(DeepSpeed) or ``state_dict``; re-saved or converted files may hold a bare state dict or
be ``.safetensors``. Every loader goes through here so that all of them accept the same
set of containers and fail with the same clear messages.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .errors import ZipARError

WRAPPER_KEYS = ("model", "module", "state_dict", "ema")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


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
            raise ZipARError(f"cannot read {path} as safetensors ({exc}); the file may be truncated.") from exc
    try:
        # Training scripts store their argparse namespace beside the weights; allow that
        # (and nothing else executable) instead of unpickling arbitrary objects.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ZipARError(
            f"cannot read {path} as a torch checkpoint ({type(exc).__name__}: {exc}). "
            "Expected a LlamaGen .pt/.pth file or a .safetensors file; the download may be incomplete."
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
