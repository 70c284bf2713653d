"""Tiny SBER-MoVQGAN files in the published layout, and a slow functional reference decoder.

The key/shape table is spelled out here from the layout of the official ``MOVQ`` module
(ai-forever/MoVQGAN, as vendored by Lumina-mGPT 2.0: ``movqgan/models/vqgan.py`` with
``vqvae_blocks.Encoder``, ``movq_modules.MOVQDecoder`` and ``quantize.VectorQuantizer2``),
independently of ``zipar.vq.movq``, so a renamed or misplaced module in the loader is caught
instead of mirrored. The release file is ``torch.save(state_dict)`` of that module, so the
writer saves a bare dict by default.

The reference functions below read the raw state dict with plain functional ops (no module of
the loader), in the official order of operations: spatial norms enlarge the codes with
``repeat_interleave`` (what nearest-neighbour interpolation to a 2^k multiple does), attention is
an explicit softmax over a [positions x positions] matrix.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

# ch_mult (1, 2) at resolution 16 with attn_resolutions (8,): attention at the deepest level on
# both sides (the encoder runs at 16 then 8, the decoder starts at 16 // 2 = 8), as in the release.
DEFAULTS = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=16, z_channels=4,
                embed_dim=4, n_embed=64)
# Three levels, two res blocks, widths 32 -> 64 -> 32 (skip projections both ways), attention at
# the shallowest level only (resolution 16), a 3x3 conv inside every spatial norm (add_conv), and
# resampling without convs (avg pool / bare nearest neighbour).
THREE = dict(ch=32, ch_mult=(1, 2, 1), num_res_blocks=2, attn_resolutions=(16,), resolution=16, z_channels=4,
             embed_dim=3, n_embed=40, add_conv=True, resamp_with_conv=False)
# The 270M release's ddconfig (shapes only; built on the meta device).
RELEASE = dict(ch=256, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(32,), resolution=256, z_channels=4,
               embed_dim=4, n_embed=16384)

# Training-run tensors a Lightning checkpoint of MOVQ carries besides the model.
LOSS_KEYS = {
    "loss.logvar": (),
    "loss.discriminator.main.0.weight": (8, 3, 4, 4),
    "loss.perceptual_loss.lin0.model.1.weight": (1, 8, 1, 1),
}
EMA_KEYS = {"ema_decoder.decay": (), "ema_decoder.conv_inweight": (64, 4, 3, 3),
            "ema_quantize.embeddingweight": (64, 4)}


def movq_key_shapes(*, ch: int, ch_mult, num_res_blocks: int, attn_resolutions, resolution: int, z_channels: int,
                    embed_dim: int, n_embed: int, add_conv: bool = False, resamp_with_conv: bool = True,
                    in_channels: int = 3, out_ch: int = 3) -> dict[str, tuple]:
    """Every tensor of an official MOVQ built from this ddconfig (no EMA, no loss): name -> shape."""
    shapes: dict[str, tuple] = {}

    def conv(name, cout, cin, k):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def group_norm(name, c):
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def spatial_norm(name, c):
        group_norm(f"{name}.norm_layer", c)
        if add_conv:
            conv(f"{name}.conv", embed_dim, embed_dim, 3)
        conv(f"{name}.conv_y", c, embed_dim, 1)
        conv(f"{name}.conv_b", c, embed_dim, 1)

    def resnet(prefix, cin, cout, norm):
        norm(f"{prefix}.norm1", cin)
        conv(f"{prefix}.conv1", cout, cin, 3)
        norm(f"{prefix}.norm2", cout)
        conv(f"{prefix}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{prefix}.nin_shortcut", cout, cin, 1)

    def attention(prefix, c, norm):
        norm(f"{prefix}.norm", c)
        for proj in ("q", "k", "v", "proj_out"):
            conv(f"{prefix}.{proj}", c, c, 1)

    def middle(prefix, c, norm):
        resnet(f"{prefix}.block_1", c, c, norm)
        attention(f"{prefix}.attn_1", c, norm)
        resnet(f"{prefix}.block_2", c, c, norm)

    def level(prefix, cin, cout, n_blocks, with_attn, resample, norm):
        """Registration order, as a state dict lists it: every block, then every attention, then
        the resampling conv."""
        for j in range(n_blocks):
            resnet(f"{prefix}.block.{j}", cin if j == 0 else cout, cout, norm)
        for j in range(n_blocks if with_attn else 0):
            attention(f"{prefix}.attn.{j}", cout, norm)
        if resample and resamp_with_conv:
            conv(f"{prefix}.{resample}.conv", cout, cout, 3)

    n = len(ch_mult)
    widths = [ch * m for m in ch_mult]
    # encoder (plain GroupNorms): the running resolution halves after every level but the last
    conv("encoder.conv_in", ch, in_channels, 3)
    for i in range(n):
        level(f"encoder.down.{i}", ch if i == 0 else widths[i - 1], widths[i], num_res_blocks,
              resolution // 2 ** i in attn_resolutions, "downsample" if i != n - 1 else None, group_norm)
    middle("encoder.mid", widths[-1], group_norm)
    group_norm("encoder.norm_out", widths[-1])
    conv("encoder.conv_out", z_channels, widths[-1], 3)
    # decoder (spatial norms on embed_dim code channels): built deepest level first, starting at
    # resolution // 2**(n-1) and doubling, but its level list is indexed (and saved) shallowest first
    conv("decoder.conv_in", widths[-1], z_channels, 3)
    middle("decoder.mid", widths[-1], spatial_norm)
    for i in range(n):
        level_res = (resolution // 2 ** (n - 1)) * 2 ** (n - 1 - i)
        level(f"decoder.up.{i}", widths[i + 1] if i != n - 1 else widths[-1], widths[i], num_res_blocks + 1,
              level_res in attn_resolutions, "upsample" if i != 0 else None, spatial_norm)
    spatial_norm("decoder.norm_out", widths[0])
    conv("decoder.conv_out", out_ch, widths[0], 3)
    shapes["quantize.embedding.weight"] = (n_embed, embed_dim)
    conv("quant_conv", embed_dim, z_channels, 1)
    conv("post_quant_conv", z_channels, embed_dim, 1)
    return shapes


def random_state_dict(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights at sensible scales (norm gains and modulation scales near 1, fan-in scaled convs,
    small biases), so activations neither vanish nor all saturate the [-1, 1] clamp."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if name == "quantize.embedding.weight":
            value = torch.randn(shape, generator=gen)
        elif len(shape) == 4:
            value = torch.randn(shape, generator=gen) / (shape[1] * shape[2] * shape[3]) ** 0.5
            if ".conv_y." in name:
                value = 0.3 * value
        elif name.endswith("conv_y.bias") or (name.endswith(".weight") and len(shape) == 1):
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            value = 0.05 * torch.randn(shape, generator=gen)
        sd[name] = value
    return sd


def tiny_state_dict(arch: dict | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_state_dict(movq_key_shapes(**(arch or DEFAULTS)), seed)


def write_movqgan(path: Path, state_dict: dict[str, torch.Tensor] | None = None, *, seed: int = 0,
                  training_keys: bool = False, wrap: bool = False, legacy_format: bool = False) -> Path:
    """Save a MoVQGAN file at ``path``: the bare state dict as the release does (``wrap`` puts it
    under 'state_dict' with Lightning's plain top-level values; ``training_keys`` adds loss.* and
    ema_* tensors; ``legacy_format`` uses torch's pre-zip format; a .safetensors path saves that)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = dict(state_dict) if state_dict is not None else tiny_state_dict(seed=seed)
    if training_keys:
        gen = torch.Generator().manual_seed(seed + 1)
        sd.update({k: torch.randn(shape, generator=gen) for k, shape in {**LOSS_KEYS, **EMA_KEYS}.items()})
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        return path
    obj = {"epoch": 7, "global_step": 1330000, "pytorch-lightning_version": "1.9.4", "state_dict": sd} if wrap else sd
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy_format)
    return path


# ----------------------------------------------------------------------------- reference
def _conv(x, sd, name):
    weight = sd[f"{name}.weight"]
    return F.conv2d(x, weight, sd[f"{name}.bias"], padding=weight.shape[-1] // 2)


def _swish(x):
    return x * torch.sigmoid(x)


def _group_norm(x, sd, name):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _count(sd, pattern: str) -> int:
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


class _Reference:
    """One decode or encode: ``norm`` is the plain GroupNorm (encoder) or the spatial norm
    conditioned on ``codes`` (decoder)."""

    def __init__(self, sd, codes=None):
        self.sd, self.codes = sd, codes

    def norm(self, x, name):
        if self.codes is None:
            return _group_norm(x, self.sd, name)
        factor = x.shape[-1] // self.codes.shape[-1]
        assert x.shape[-2] == self.codes.shape[-2] * factor
        cond = self.codes.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
        if f"{name}.conv.weight" in self.sd:
            cond = _conv(cond, self.sd, f"{name}.conv")
        normed = _group_norm(x, self.sd, f"{name}.norm_layer")
        return normed * _conv(cond, self.sd, f"{name}.conv_y") + _conv(cond, self.sd, f"{name}.conv_b")

    def resnet(self, x, p):
        h = _conv(_swish(self.norm(x, f"{p}.norm1")), self.sd, f"{p}.conv1")
        h = _conv(_swish(self.norm(h, f"{p}.norm2")), self.sd, f"{p}.conv2")
        skip = _conv(x, self.sd, f"{p}.nin_shortcut") if f"{p}.nin_shortcut.weight" in self.sd else x
        return skip + h

    def attention(self, x, p):
        b, c, hh, ww = x.shape
        normed = self.norm(x, f"{p}.norm")
        q, k, v = (_conv(normed, self.sd, f"{p}.{n}").reshape(b, c, hh * ww) for n in "qkv")
        scores = torch.bmm(q.transpose(1, 2), k) * c ** -0.5  # [b, query, key]
        out = torch.bmm(v, torch.softmax(scores, dim=2).transpose(1, 2)).reshape(b, c, hh, ww)
        return x + _conv(out, self.sd, f"{p}.proj_out")

    def level(self, x, p):
        for j in range(_count(self.sd, p + ".block.{}.conv1.weight")):
            x = self.resnet(x, f"{p}.block.{j}")
            if f"{p}.attn.{j}.q.weight" in self.sd:
                x = self.attention(x, f"{p}.attn.{j}")
        return x

    def middle(self, x, p):
        return self.resnet(self.attention(self.resnet(x, f"{p}.block_1"), f"{p}.attn_1"), f"{p}.block_2")


def reference_decoder_output(sd, codes: torch.Tensor) -> torch.Tensor:
    """[B, h, w] ids -> the decoder's raw output [B, 3, h * ds, w * ds] (before any clamp)."""
    vectors = sd["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)
    ref = _Reference(sd, vectors)
    h = _conv(_conv(vectors, sd, "post_quant_conv"), sd, "decoder.conv_in")
    h = ref.middle(h, "decoder.mid")
    for i in reversed(range(_count(sd, "decoder.up.{}.block.0.conv1.weight"))):
        h = ref.level(h, f"decoder.up.{i}")
        if i:
            h = h.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
            if f"decoder.up.{i}.upsample.conv.weight" in sd:
                h = _conv(h, sd, f"decoder.up.{i}.upsample.conv")
    return _conv(_swish(ref.norm(h, "decoder.norm_out")), sd, "decoder.conv_out")


def reference_decode(sd, codes: torch.Tensor) -> torch.Tensor:
    """What Lumina-mGPT 2.0 shows, in [0, 1]: its uint8 pixels are round((x + 1) * 127.5) clamped."""
    return ((reference_decoder_output(sd, codes) + 1) / 2).clamp(0, 1)


def reference_latents(sd, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] images in [0, 1] -> quant_conv output [B, embed_dim, H / ds, W / ds]."""
    ref = _Reference(sd)
    h = _conv(images * 2 - 1, sd, "encoder.conv_in")
    levels = _count(sd, "encoder.down.{}.block.0.conv1.weight")
    for i in range(levels):
        h = ref.level(h, f"encoder.down.{i}")
        if i != levels - 1:
            if f"encoder.down.{i}.downsample.conv.weight" in sd:
                weight = sd[f"encoder.down.{i}.downsample.conv.weight"]
                h = F.conv2d(F.pad(h, (0, 1, 0, 1)), weight, sd[f"encoder.down.{i}.downsample.conv.bias"], stride=2)
            else:
                h = F.avg_pool2d(h, 2)
    h = ref.middle(h, "encoder.mid")
    h = _conv(_swish(_group_norm(h, sd, "encoder.norm_out")), sd, "encoder.conv_out")
    return _conv(h, sd, "quant_conv")


def reference_encode(sd, images: torch.Tensor) -> torch.Tensor:
    """Ids of the nearest codes (Euclidean distance) to the latents, [B, H / ds, W / ds]."""
    z = reference_latents(sd, images)
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    return torch.cdist(flat, sd["quantize.embedding.weight"]).argmin(dim=1).reshape(b, h, w)
