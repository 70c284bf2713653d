"""Our models under ComfyUI's memory manager.

Inside ComfyUI each loaded model (AR model, VQ) is handed over as a ``ModelPatcher``, the class
ComfyUI's own checkpoints use: ComfyUI decides when the weights go onto the card (the Sampler and
VQ nodes call ``load_models_gpu`` before they work, naming the bytes the work will allocate, so
other models are offloaded first), moves them back to system memory when another model needs
the room or the user presses "Unload models" (``POST /free``), and in low-VRAM mode leaves some
layers in system memory and casts them per use. For that the networks' standard layers become
ComfyUI's ``comfy.ops`` classes (our own layers speak the same protocol, ``zipar.nets.castable``).

When ComfyUI lets go of a model we drop our own references too: the loaded-model slot
(``cache.py``), the compiled steps and pooled caches, the pass plans. So "Free model and node
cache" really frees it, and the next run loads it again. Outside ComfyUI (tests, scripts) there
is no patcher and models stay where they were loaded, as before.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import host

log = logging.getLogger("ZipAR")

# torch layers -> the comfy.ops class of the same name (exact types only: our own subclasses speak
# the protocol themselves)
COMFY_OPS = {
    nn.Linear: "Linear", nn.Embedding: "Embedding", nn.Conv1d: "Conv1d", nn.Conv2d: "Conv2d",
    nn.Conv3d: "Conv3d", nn.ConvTranspose2d: "ConvTranspose2d", nn.GroupNorm: "GroupNorm",
    nn.LayerNorm: "LayerNorm",
}


@dataclass
class Loaded:
    """A model as the loaders keep it: the engine's object and, inside ComfyUI, its patcher."""

    model: object
    patcher: object | None = None


class Held(nn.Module):
    """What ComfyUI measures, moves and offloads: the model's networks (the engine's own modules,
    not copies, so a move is seen by the engine at once)."""

    def __init__(self, networks: list[nn.Module], dtype: torch.dtype):
        super().__init__()
        self.parts = nn.ModuleList(networks)
        self.compute_dtype = dtype

    def get_dtype(self) -> torch.dtype:  # ModelPatcher.model_dtype() asks for it
        return self.compute_dtype


def _comfy() -> tuple[object, object, object] | None:
    """(model_management, model_patcher, ops) when running inside ComfyUI, else None."""
    modules = [host.comfy_module(n) for n in ("comfy.model_management", "comfy.model_patcher", "comfy.ops")]
    return None if any(m is None for m in modules) else tuple(modules)


def adopt_comfy_ops(networks: list[nn.Module], ops) -> int:
    """Turn the torch layers of ``networks`` into ComfyUI's ``ops.disable_weight_init`` classes
    (subclasses of the same layers that can cast their weights per use); returns how many."""
    count = 0
    for net in networks:
        for module in net.modules():
            name = COMFY_OPS.get(type(module))
            if name is not None:
                module.__class__ = getattr(ops.disable_weight_init, name)
                if not hasattr(module, "bias"):  # ComfyUI's Embedding sets it at construction; its cast reads it
                    module.bias = None
                count += 1
    return count


def offload_device(runs_on: torch.device) -> torch.device:
    """Where weights wait while not in use: ComfyUI's offload device (system memory unless it
    runs with --gpu-only / --highvram), or ``runs_on`` itself outside ComfyUI."""
    comfy = _comfy()
    if comfy is None or runs_on.type == "cpu":
        return runs_on
    return torch.device(comfy[0].unet_offload_device())


def manage(networks: list[nn.Module], dtype: torch.dtype, runs_on: torch.device,
           on_release: Callable[[object], None], on_moved: Callable[[object], None] | None = None) -> object | None:
    """A ComfyUI ModelPatcher for ``networks`` (None outside ComfyUI).

    ``on_release(patcher)`` runs whenever ComfyUI detaches the model and moves its weights back
    (offloads or unloads it): the caller drops what it keeps for the model. ``on_moved(patcher)`` runs whenever ComfyUI has
    moved weights onto the device (a first load, a reload, more layers after streaming): anything
    that captured the weights' addresses (CUDA graphs of compiled steps) is stale then."""
    comfy = _comfy()
    if comfy is None:
        return None
    mm, mp, ops = comfy
    adopt_comfy_ops(networks, ops)
    patcher = mp.ModelPatcher(Held(networks, dtype), load_device=runs_on, offload_device=offload_device(runs_on))

    def detached(patcher, unpatch_all=True, *_):
        if not unpatch_all:
            # load_models_gpu detaches a model it already holds (a model counts as its own clone) and
            # loads it again in place, on every request; a patcher being collected detaches itself too.
            # Neither moves a weight: dropping compiled steps here rebuilt them on every queued run.
            return
        try:
            on_release(patcher)
        except Exception:  # never let our bookkeeping break ComfyUI's unloading
            log.exception("ZipAR: releasing a model's caches failed")

    patcher.add_callback(_callback_name(mp, "ON_DETACH"), detached)
    if on_moved is not None:
        patcher.add_callback(_callback_name(mp, "ON_LOAD"), lambda patcher, *_: on_moved(patcher))
    weakref.finalize(patcher.model, return_freed_memory)
    return patcher


def return_freed_memory() -> None:
    """Hand the pages of a freed model back to the system (glibc only; elsewhere a no-op).

    A model's tensors are freed into the C allocator, which keeps pages that sit between other
    allocations for reuse: after a session of other models the server's memory would not shrink
    when ComfyUI frees ours. ``malloc_trim`` returns every whole free page."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _callback_name(mp, which: str) -> str:
    extension = getattr(mp, "CallbacksMP", None)
    if extension is None:  # where ComfyUI keeps the names (comfy.patcher_extension, imported by model_patcher)
        extension = host.comfy_module("comfy.patcher_extension").CallbacksMP
    return getattr(extension, which)


def load(patchers: list, memory_required: int = 0, full: bool = False) -> None:
    """Ask ComfyUI to put these models on their device, first freeing ``memory_required`` bytes
    beyond their weights (the work's cache or activations). ``full``: all layers on the device (no
    low-VRAM streaming; for decoders that read their weights directly). A no-op outside ComfyUI."""
    patchers = [p for p in patchers if p is not None]
    comfy = _comfy()
    if comfy is None or not patchers:
        return
    comfy[0].load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=full)


def streamed(patcher) -> bool:
    """True when ComfyUI left some of the model's layers in system memory (low-VRAM loading)."""
    return patcher is not None and bool(getattr(patcher.model, "model_lowvram", False))
