"""Weights that may live on another device than the compute, brought over per layer at use.

A host that manages memory (ComfyUI's ModelPatcher) loads as many layers onto the card as fit
and leaves the rest in system memory when the card is short of room; those layers must then
bring their weights to the input's device each time they run. ComfyUI recognises such layers
by a ``comfy_cast_weights`` flag, sets it on the ones it leaves behind, and may hang functions
on ``weight_function`` / ``bias_function`` that adjust a weight on its way (its LoRA patches).
Standard torch layers get ComfyUI's own classes when we run inside it (``nodes/memory.py``);
the few layers of our own (norms, ``StoredLinear``) speak the same protocol through this mixin,
which needs nothing from ComfyUI: outside it the flag stays off and weights are used in place.
"""
from __future__ import annotations

import torch


class CastsWeights:
    """Mixin for modules with a ``weight`` (and optional ``bias``) read in ``forward``."""

    comfy_cast_weights = False
    weight_function: list = []
    bias_function: list = []

    def weights_at(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) on ``x``'s device (in ``dtype`` when given), patched as the host asks."""
        weight, bias = self.weight, getattr(self, "bias", None)
        if not (self.comfy_cast_weights or self.weight_function or self.bias_function):
            return weight, bias
        weight = weight.to(device=x.device, dtype=dtype or weight.dtype, non_blocking=True)
        for f in self.weight_function:
            weight = f(weight)
        if bias is not None:
            bias = bias.to(device=x.device, dtype=dtype or bias.dtype, non_blocking=True)
            for f in self.bias_function:
                bias = f(bias)
        return weight, bias

    def buffer_at(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """A buffer the layer reads beside its weight (a scale), on ``x``'s device when casting."""
        t = getattr(self, name)
        if t is None or not self.comfy_cast_weights:
            return t
        return t.to(x.device, non_blocking=True)
