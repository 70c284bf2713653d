"""Loaded models, kept so that a second run with the same loader inputs does not read the disk.

One slot per kind (AR model, VQ, text encoder): loading another file replaces the cached one
(the old one is dropped before the new one is read, so two models never sit in memory side
by side because of this cache). The key is the file's real path, modification time and size
plus precision and device, so a file replaced on disk is read again. ComfyUI additionally
keeps node outputs while their inputs are unchanged. When ComfyUI's memory manager lets go
of a model ("Unload models", room for another model), its slot is emptied (``memory.py``), so
freeing ComfyUI's node cache frees the model.
"""
from __future__ import annotations

import gc
import os
from typing import Callable, Hashable

from . import host


def file_key(path: str) -> tuple:
    """(real path, mtime in ns, size) of a file; for a folder, of its newest file."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        stats = [os.stat(os.path.join(real, f)) for f in sorted(os.listdir(real)) if os.path.isfile(os.path.join(real, f))]
        return (real, max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats))
    st = os.stat(real)
    return (real, st.st_mtime_ns, st.st_size)


class OneSlot:
    def __init__(self, kind: str):
        self.kind = kind
        self.key: Hashable | None = None
        self.value = None
        self.loads = 0  # how often the disk was read (tests check the cache with it)

    def get(self, key: Hashable, load: Callable[[], object]):
        release_let_go()
        if self.value is not None and self.key == key:
            return self.value
        self.clear()
        value = load()
        self.loads += 1
        self.key, self.value = key, value
        return value

    def forget(self, patcher) -> None:
        """Let go of the held model if it is the one behind ``patcher``: ComfyUI unloaded it.

        Not at once: this runs inside ComfyUI's unloading loop, and if ours were the last reference
        the model would be freed there, and ComfyUI's finalizer on it would edit the list of loaded
        models that loop is walking (found in the real host: an IndexError that stopped its worker).
        The model waits in ``_let_go`` until ComfyUI has dropped it from that list."""
        if patcher is not None and getattr(self.value, "patcher", None) is patcher:
            _let_go.append(self.value)
            self.key = self.value = None

    def clear(self) -> None:
        had = self.value is not None
        self.key = self.value = None
        if had:
            gc.collect()
            host.soft_empty_cache()


_let_go: list = []  # models ComfyUI unloaded, kept until it no longer lists them as loaded


def release_let_go() -> None:
    """Drop the unloaded models that ComfyUI no longer lists (its finalizer on each is detached by
    then, so freeing them touches nothing of its). Runs when our nodes run and after each garbage
    collection, which ComfyUI starts after "Unload models" / "Free model and node cache"."""
    if not _let_go:
        return
    mm = host.comfy_module("comfy.model_management")
    listed = {id(m.model) for m in getattr(mm, "current_loaded_models", [])} if mm is not None else set()
    _let_go[:] = [value for value in _let_go if id(getattr(value, "patcher", None)) in listed]


def _after_collection(phase: str, info: dict) -> None:
    if phase == "stop" and _let_go:
        release_let_go()


gc.callbacks.append(_after_collection)

AR_MODELS = OneSlot("AR model")
VQ_MODELS = OneSlot("VQ")
TEXT_ENCODERS = OneSlot("text encoder")
SLOTS = (AR_MODELS, VQ_MODELS, TEXT_ENCODERS)


def clear_all() -> None:
    """Every cached model, and the compiled steps, pooled caches and plans kept for them."""
    from .engine import api, release_compiled

    release_compiled()
    api.release_plans()
    for slot in SLOTS:
        slot.clear()
