"""Tiny models with random weights, saved the way the official LlamaGen files are."""
from __future__ import annotations

import argparse

import torch

from zipar.vq.llamagen import VQConfig, VQModel


def tiny_vq_config(downsample: int = 16) -> VQConfig:
    """The released layout (levels, res/attn counts, key names) at a width GroupNorm(32) allows."""
    ch_mult = {16: (1, 1, 2, 2, 4), 8: (1, 2, 2, 4)}[downsample]
    return VQConfig(codebook_size=64, codebook_embed_dim=8, ch=32, ch_mult=ch_mult, z_channels=32, num_res_blocks=2)


def make_tiny_vq(seed: int = 0, downsample: int = 16) -> VQModel:
    """Deterministic random weights; norms and codebook are perturbed too so every tensor matters."""
    torch.manual_seed(seed)
    model = VQModel(tiny_vq_config(downsample))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.ndim == 1:  # norm and conv biases
                p.copy_(0.1 * torch.randn_like(p))
            elif name == "quantize.embedding.weight":
                p.copy_(torch.randn_like(p))
        model.quantize.codebook_used.copy_(torch.randint(0, 64, model.quantize.codebook_used.shape).float())
    return model.eval()


def save_official_vq(model: VQModel, path) -> None:
    """``{"model": sd, "optimizer": ..., "steps": ..., "args": Namespace}`` as vq_train.py writes it,
    or a flat safetensors file when the path ends with .safetensors."""
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, path)
        return
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.0, "params": [0, 1]}]}
    discriminator = {"conv.weight": torch.zeros(4, 3, 3, 3)}  # official files carry one; must not be picked up
    torch.save({"model": sd, "optimizer": optimizer, "discriminator": discriminator, "steps": 0,
                "args": argparse.Namespace(vq_model=f"VQ-{model.downsample}")}, path)
