"""Tiny Chameleon VQGAN files (vqgan.ckpt + vqgan.yaml) in the published layout, for the loader tests.

The key/shape table is spelled out here from the taming-transformers VQModel layout
(facebookresearch/chameleon, chameleon/inference/vqgan.py), independently of
``zipar.vq.chameleon``, so a renamed or misplaced module in the loader is caught
instead of mirrored. The yaml is written as text in the structure of Meta's file
(``model: target/params: embed_dim, n_embed, ddconfig, lossconfig``), not via the loader.
"""
from __future__ import annotations

from pathlib import Path

import torch

DEFAULTS = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=8, embed_dim=8,
                n_embed=64, resolution=16)

# Training-time tensors a Lightning checkpoint of the VQGAN carries beside the model.
LOSS_KEYS = {
    "loss.logvar": (),
    "loss.discriminator.main.0.weight": (8, 3, 4, 4),
    "loss.discriminator.main.0.bias": (8,),
    "loss.perceptual_loss.lin0.model.1.weight": (1, 8, 1, 1),
}


def vqgan_key_shapes(*, ch: int, ch_mult, num_res_blocks: int, attn_resolutions, z_channels: int, embed_dim: int,
                     n_embed: int, resolution: int, in_channels: int = 3, out_ch: int = 3) -> dict[str, tuple]:
    """Every inference tensor of a taming VQModel with this ddconfig: name -> shape."""
    shapes: dict[str, tuple] = {}

    def conv(name, cout, cin, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def resnet(prefix, cin, cout):
        norm(f"{prefix}.norm1", cin)
        conv(f"{prefix}.conv1", cout, cin, 3)
        norm(f"{prefix}.norm2", cout)
        conv(f"{prefix}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{prefix}.nin_shortcut", cout, cin, 1)

    def attention(prefix, c):
        norm(f"{prefix}.norm", c)
        for proj in ("q", "k", "v", "proj_out"):
            conv(f"{prefix}.{proj}", c, c, 1)

    def middle(prefix, c):
        resnet(f"{prefix}.block_1", c, c)
        attention(f"{prefix}.attn_1", c)
        resnet(f"{prefix}.block_2", c, c)

    n_levels = len(ch_mult)
    # encoder: resolution halves after every level but the last
    conv("encoder.conv_in", ch, in_channels, 3)
    width, curr_res = ch, resolution
    for i in range(n_levels):
        for j in range(num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", width, ch * ch_mult[i])
            width = ch * ch_mult[i]
            if curr_res in attn_resolutions:
                attention(f"encoder.down.{i}.attn.{j}", width)
        if i != n_levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", width, width, 3)
            curr_res //= 2
    middle("encoder.mid", width)
    norm("encoder.norm_out", width)
    conv("encoder.conv_out", z_channels, width, 3)
    # decoder: deepest level first, one more block per level, resolution doubles upwards
    width = ch * ch_mult[-1]
    curr_res = resolution // 2 ** (n_levels - 1)
    conv("decoder.conv_in", width, z_channels, 3)
    middle("decoder.mid", width)
    for i in reversed(range(n_levels)):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", width, ch * ch_mult[i])
            width = ch * ch_mult[i]
            if curr_res in attn_resolutions:
                attention(f"decoder.up.{i}.attn.{j}", width)
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", width, width, 3)
            curr_res *= 2
    norm("decoder.norm_out", width)
    conv("decoder.conv_out", out_ch, width, 3)
    shapes["quantize.embedding.weight"] = (n_embed, embed_dim)
    conv("quant_conv", embed_dim, z_channels, 1)
    conv("post_quant_conv", z_channels, embed_dim, 1)
    return shapes


def random_state_dict(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights at sensible scales (norm gains near 1, fan-in scaled convs, small biases), so
    activations neither vanish nor all saturate the [-1, 1] clamp."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) / fan_in ** 0.5
        elif name.endswith(".weight") and len(shape) == 1:
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif name == "quantize.embedding.weight":
            value = torch.randn(shape, generator=gen)
        else:
            value = 0.05 * torch.randn(shape, generator=gen)
        sd[name] = value
    return sd


def vqgan_yaml_text(*, ch: int, ch_mult, num_res_blocks: int, attn_resolutions, z_channels: int, embed_dim: int,
                    n_embed: int, resolution: int, omit: tuple[str, ...] = (), extra: dict | None = None) -> str:
    """``vqgan.yaml`` in the published structure; ``omit`` drops ddconfig/params lines by
    field name, ``extra`` adds ddconfig fields (values written with repr, YAML-compatible
    for ints, lists and true/false given as the strings 'true'/'false')."""
    dd = {
        "double_z": "false", "z_channels": z_channels, "resolution": resolution, "in_channels": 3, "out_ch": 3,
        "ch": ch, "ch_mult": list(ch_mult), "num_res_blocks": num_res_blocks,
        "attn_resolutions": list(attn_resolutions), "dropout": 0.0,
    }
    dd.update(extra or {})
    dd_lines = "".join(f"      {k}: {v}\n" for k, v in dd.items() if k not in omit)
    params = [("embed_dim", embed_dim), ("n_embed", n_embed), ("ckpt_path", "/checkpoints/vqgan/last.ckpt")]
    param_lines = "".join(f"    {k}: {v}\n" for k, v in params if k not in omit)
    return (
        "model:\n"
        "  base_learning_rate: 4.5e-06\n"
        "  target: taming.models.vqgan.VQModel\n"
        "  params:\n"
        f"{param_lines}"
        "    ddconfig:\n"
        f"{dd_lines}"
        "    lossconfig:\n"
        "      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator\n"
        "      params:\n"
        "        disc_conditional: false\n"
        "        disc_in_channels: 3\n"
        "        disc_start: 0\n"
        "        disc_weight: 0.75\n"
        "        codebook_weight: 1.0\n"
    )


def write_chameleon_vqgan(folder: Path, *, ch: int = 32, ch_mult=(1, 2), num_res_blocks: int = 1,
                          attn_resolutions=(8,), z_channels: int = 8, embed_dim: int = 8, n_embed: int = 64,
                          resolution: int = 16, seed: int = 0, extra_loss_keys: bool = True,
                          state_dict: dict[str, torch.Tensor] | None = None, stem: str = "vqgan",
                          wrap: bool = True, legacy_format: bool = False) -> tuple[Path, Path]:
    """Write ``{stem}.ckpt`` + ``{stem}.yaml`` into ``folder``; returns (ckpt, yaml).

    ``state_dict`` replaces the random weights (it must use the published names);
    ``wrap=False`` saves a bare state dict; ``legacy_format`` uses torch's pre-zip format.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arch = dict(ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, attn_resolutions=tuple(attn_resolutions),
                z_channels=z_channels, embed_dim=embed_dim, n_embed=n_embed, resolution=resolution)
    sd = dict(state_dict) if state_dict is not None else random_state_dict(vqgan_key_shapes(**arch), seed)
    if extra_loss_keys:
        gen = torch.Generator().manual_seed(seed + 1)
        sd.update({k: torch.randn(shape, generator=gen) for k, shape in LOSS_KEYS.items()})
    # a Lightning checkpoint's other top-level entries are plain values
    obj = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.9.0", "state_dict": sd} if wrap else sd
    ckpt, cfg = folder / f"{stem}.ckpt", folder / f"{stem}.yaml"
    torch.save(obj, ckpt, _use_new_zipfile_serialization=not legacy_format)
    cfg.write_text(vqgan_yaml_text(**arch))
    return ckpt, cfg
