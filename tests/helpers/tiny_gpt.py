"""Tiny LlamaGen GPTs with random weights, saved the way the official files are."""
from __future__ import annotations

import argparse

import torch

from zipar.nets.llamagen_gpt import GPTConfig, LlamaGenGPT


def tiny_gpt_config(model_type: str = "c2i", **overrides) -> GPTConfig:
    # width 128 -> 2 heads, which is what the loader infers for an unpublished width (width / 64)
    base = dict(dim=128, n_layer=2, n_head=2, n_kv_head=2, ffn_hidden=352, vocab_size=64, model_type=model_type)
    if model_type == "c2i":
        base.update(num_classes=10, prefix_len=1)
    else:
        base.update(caption_dim=24, prefix_len=8)
    base.update(overrides)
    return GPTConfig(**base)


def make_tiny_gpt(model_type: str = "c2i", seed: int = 0, **overrides) -> LlamaGenGPT:
    """Random weights large enough that logits differ clearly between contexts."""
    torch.manual_seed(seed)
    model = LlamaGenGPT(tiny_gpt_config(model_type, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.5))
        for name, b in model.named_buffers():
            b.copy_(torch.randn_like(b))
    return model.eval()


def save_official_gpt(model: LlamaGenGPT, path, wrapper: str | None = "model") -> None:
    """Save as LlamaGen's training scripts do (``{"model": sd, ...}``), bare, or as safetensors."""
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, path)
    elif wrapper is None:
        torch.save(sd, path)
    else:
        torch.save({wrapper: sd, "steps": 1000, "args": argparse.Namespace(gpt_model="GPT-tiny")}, path)


def deterministic_state_dict(model: LlamaGenGPT) -> dict[str, torch.Tensor]:
    """Weights that depend only on each key's name and shape, so any implementation that
    uses the official key names can be loaded with exactly the same numbers."""
    import zlib

    sd = {}
    for name, t in model.state_dict().items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        w = torch.randn(t.shape, generator=g)
        if name.endswith("norm.weight"):
            w = 1.0 + 0.1 * w
        elif w.ndim > 1:
            w = w * (0.5 / w.shape[-1] ** 0.5)
        sd[name] = w
    return sd


def golden_inputs(model_type: str, cfg: GPTConfig):
    """Fixed condition and 10 image tokens on a 4x4 grid, for logits recorded from the official code."""
    g = torch.Generator().manual_seed(99)
    tokens = torch.randint(0, cfg.vocab_size, (2, 10), generator=g)
    if model_type == "c2i":
        return torch.tensor([3, cfg.num_classes]), tokens
    return torch.randn(2, cfg.prefix_len, cfg.caption_dim, generator=g), tokens
