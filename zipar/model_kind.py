"""What a model file or folder is (a language model, a VQ, or both), read cheaply for listings.

The loaders' file lists should offer only what each loader can read: Load AR Model the
language models, Load VQ the tokenizers. Telling them apart must not load weights (a 7B
folder, a 3 GB .pt): folders are told by their config files, .safetensors by the key names in
its JSON header, .pt/.pth by unpickling with the tensors memory-mapped (nothing is read but the
index). A file whose kind cannot be told cheaply (an old non-zip pickle, an unreadable file) is
listed for both, so the loader's own message can say what is wrong with it. Answers are kept
per (path, modification time, size).

It sits at the top of the package, beside ``api.py``, not in ``io``: telling a model from a VQ
asks the family registry and the VQ formats, so it builds on ``families`` and ``vq``, which
themselves read files through ``io``.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import torch

from .families.registry import families
from .io.checkpoint import allow_training_args
from .vq import describe_vq_source

AR, VQ = "ar", "vq"
BOTH = frozenset({AR, VQ})
_cache: dict[tuple, frozenset[str]] = {}

GPT_KEYS = ("tok_embeddings.weight", "layers.0.attention.wqkv.weight")  # LlamaGen GPT (families/llamagen)
VQ_KEYS = ("quantize.embedding.weight", "decoder.conv_in.weight")  # LlamaGen / taming VQ
WRAPPERS = ("model", "module", "state_dict", "ema")  # io.checkpoint's containers


def model_kind(path: str | os.PathLike) -> frozenset[str]:
    """{"ar"}, {"vq"} or both (also for anything that cannot be told apart cheaply)."""
    path = Path(path)
    try:
        st = path.stat()
        newest = max((p.stat().st_mtime_ns for p in path.iterdir()), default=0) if path.is_dir() else 0
    except OSError:
        return BOTH
    key = (str(path), st.st_mtime_ns, st.st_size, newest)
    if key not in _cache:
        _cache[key] = _folder_kind(path) if path.is_dir() else _file_kind(path)
    return _cache[key]


def _folder_kind(path: Path) -> frozenset[str]:
    kinds = set()
    try:
        if any(f.detect(path) for f in families() if f.family != "llamagen"):
            kinds.add(AR)
        if describe_vq_source(path) is not None:
            kinds.add(VQ)
    except Exception:  # a broken config: let the loaders say what is wrong
        return BOTH
    return frozenset(kinds) or BOTH


def _file_kind(path: Path) -> frozenset[str]:
    try:
        if describe_vq_source(path) is not None:  # e.g. Chameleon's vqgan.ckpt (with its yaml)
            return frozenset({VQ})
        keys = _safetensors_keys(path) if path.suffix.lower() == ".safetensors" else _pickled_keys(path)
    except Exception:
        return BOTH
    if keys is None:
        return BOTH
    if all(k in keys for k in GPT_KEYS):
        return frozenset({AR})
    if all(k in keys for k in VQ_KEYS):
        return frozenset({VQ})
    return BOTH


def _strip(keys) -> set[str]:
    return {k.removeprefix("module.").removeprefix("_orig_mod.") for k in keys if isinstance(k, str)}


def _safetensors_keys(path: Path) -> set[str] | None:
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        if size > 100 << 20:
            return None
        header = json.loads(f.read(size))
    return _strip(header)


def _pickled_keys(path: Path) -> set[str] | None:
    allow_training_args()  # LlamaGen's files carry their training arguments beside the weights
    if not zipfile.is_zipfile(path):  # the legacy format cannot be memory-mapped
        return None
    obj = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    if isinstance(obj, dict):
        for wrapper in WRAPPERS:
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        return _strip(obj)
    return None
