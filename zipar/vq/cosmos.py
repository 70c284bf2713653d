"""NVIDIA's Cosmos Tokenizer DV8x16x16: the image tokenizer of SimpleAR (64,000 FSQ codes, 16x downsampling).

SimpleAR draws an image as a grid of Cosmos DV8x16x16 codes and decodes it as a one-frame video.
NVIDIA publishes the tokenizer only as TorchScript archives: a folder with ``encoder.jit`` and
``decoder.jit`` (https://huggingface.co/nvidia/Cosmos-1.0-Tokenizer-DV8x16x16, the one SimpleAR's
README names; the earlier nvidia/Cosmos-Tokenizer-DV8x16x16 publishes the same files). SimpleAR
builds the official PyTorch network with the "DV" config (16x spatial, 8x temporal compression)
and loads the archives' state dicts into it; that network's semantics are the ones followed
here. ZipAR never runs the archives: their tensors are read with ``zipar.io.torchscript`` (an
allow-listed unpickler; the archives' code is never compiled), and the network below, written
for one frame, is built from those tensors' names and shapes.

The published network is a causal 3D autoencoder with factorized convolutions, FSQ codes (levels
[8, 8, 8, 5, 5, 5], no codebook tensor) and a 4x4x4 Haar wavelet patching. On one frame (T = 1)
every piece reduces to a 2D operation, which is what this module runs:

- a causal conv pads time by repeating the first frame in front, so with one frame all its
  temporal taps see that frame: it is the 2D conv whose weight is the 3D weight summed over time
  (a (3, 1, 1) conv becomes a 1x1 conv, a (1, 3, 3) one a 3x3 conv);
- the group norms (one group) normalise each frame on its own: a 2D GroupNorm;
- temporal attention over one frame gives each position its own value: ``x + proj_out(v(norm(x)))``;
- temporal up/downsampling keeps one frame at one frame, but the hybrid resamplers still add their
  temporal conv branch (a residual 1x1 conv, time-summed) on the levels that resample in time;
  which levels do (the archives hold no flags: they were traced) follows the official rule for
  16x spatial and 8x temporal compression with the patch size read off the weights;
- the Haar patcher repeats the first frame ``patch`` times, so the temporal high bands are zero
  and the low bands are the 2D Haar bands times sqrt(2) per level; the unpatcher keeps the last of
  the ``patch`` frames it makes, whose temporal synthesis is ``low - high`` at every level.

Decoded images are in [-1, 1]; SimpleAR writes them with torchvision's ``save_image(normalize=True,
value_range=(-1, 1))``, which clamps, maps to [0, 1] and rounds: this VQ rounds.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZipARError
from ..io.block_counts import indexed_count
from ..io.torchscript import is_torchscript_archive, read_torchscript_tensors
from .base import VQFormat, check_code_grid, check_image_batch, key_sample
from .movq import attend
from .taming import swish

RELEASE = "nvidia/Cosmos-1.0-Tokenizer-DV8x16x16"
RELEASE_HINT = (f"use the {RELEASE} folder (encoder.jit and decoder.jit from https://huggingface.co/{RELEASE}), "
                "the VQ SimpleAR uses")
DECODER_FILE, ENCODER_FILE = "decoder.jit", "encoder.jit"
LEVELS = (8, 8, 8, 5, 5, 5)  # the DV release's FSQ levels, used when an archive lacks its _levels buffer
SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION = 16, 8  # the DV8x16x16 release (and SimpleAR's settings)
HAAR = 1.0 / math.sqrt(2.0)  # the Haar filter tap, as the official float tensor 0.7071067811865476
# Tensors the archives carry beside the weights (non-persistent buffers saved by TorchScript):
# the FSQ tables and the wavelet filters, which this module computes itself.
SKIPPED = ("_levels", "_basis", "implicit_codebook", "wavelets", "_arange", "patch_size_buffer")
DECODER_CORE = ("post_quant_conv.conv3d.weight", "decoder.conv_in.0.conv3d.weight", "decoder.conv_out.0.conv3d.weight")
ENCODER_CORE = ("quant_conv.conv3d.weight", "encoder.conv_in.0.conv3d.weight", "encoder.conv_out.0.conv3d.weight")


# ----------------------------------------------------------------------------- one-frame layers
class FrameConv(nn.Module):
    """A causal 3D conv on one frame: a 2D conv (its weight summed over time when loaded)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv3d = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3d(x)


class FrameNorm(nn.Module):
    """A one-group GroupNorm over each frame (eps 1e-6)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def factorized_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """A (1, 3, 3) conv then a (3, 1, 1) one: a 3x3 conv then a 1x1 conv on one frame."""
    return nn.Sequential(FrameConv(in_ch, out_ch, 3, padding=1), FrameConv(out_ch, out_ch, 1))


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(in_ch), factorized_conv(in_ch, out_ch)
        self.norm2, self.conv2 = FrameNorm(out_ch), factorized_conv(out_ch, out_ch)
        if in_ch != out_ch:
            self.nin_shortcut = FrameConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class SpatialAttention(nn.Module):
    """Single-head attention over the frame's positions, scores scaled by 1/sqrt(C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v, self.proj_out = (FrameConv(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        return x + self.proj_out(attend(q, k, v).transpose(-1, -2).reshape(b, c, h, w))


class TemporalAttention(nn.Module):
    """Causal attention along time: with one frame each position attends to itself only (q, k
    are loaded but do not change the result)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v, self.proj_out = (FrameConv(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_out(self.v(self.norm(x)))


def attention_pair(channels: int) -> nn.Sequential:
    return nn.Sequential(SpatialAttention(channels), TemporalAttention(channels))


class Upsample(nn.Module):
    """The hybrid upsampler: ``conv1(x) + x`` when it upsamples in time (one frame stays one),
    nearest 2x then ``conv2(x) + x`` when in space, then ``conv3``; nothing when neither."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv1 = FrameConv(channels, channels)
        self.conv2 = FrameConv(channels, channels, 3, padding=1)
        self.conv3 = FrameConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.spatial or self.temporal):
            return x
        if self.temporal:
            x = self.conv1(x) + x
        if self.spatial:
            x = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            x = self.conv2(x) + x
        return self.conv3(x)


class Downsample(nn.Module):
    """The hybrid downsampler: (pad right/bottom, stride-2 3x3 conv) + 2x2 average when it
    downsamples in space, ``conv2(x) + x`` when in time (one frame stays one), then ``conv3``."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        self.conv1 = FrameConv(channels, channels, 3, stride=2)
        self.conv2 = FrameConv(channels, channels)
        self.conv3 = FrameConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.spatial or self.temporal):
            return x
        if self.spatial:
            x = F.pad(x, (0, 1, 0, 1))
            x = self.conv1(x) + F.avg_pool2d(x, 2)
        if self.temporal:
            x = self.conv2(x) + x
        return self.conv3(x)


class Level(nn.Module):
    """``block.{j}`` res blocks, each followed by ``attn.{j}`` when the level has attention, then
    its resampler (``upsample`` / ``downsample``) when it has one."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, with_attn: bool):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(n_blocks))
        self.attn = nn.ModuleList(attention_pair(out_ch) for _ in range(n_blocks if with_attn else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        for name in ("upsample", "downsample"):
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


class Middle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResBlock(channels, channels), attention_pair(channels), \
            ResBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


# ----------------------------------------------------------------------------- Haar patching, one frame
def haar_patch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C * patch^3, H / patch, W / patch]: the official 3D Haar patcher on a
    video of this one frame (repeated ``patch`` times in front, so the temporal high bands are 0)."""
    for _ in range(int(math.log2(patch))):
        low_t = x * (2 * HAAR)  # temporal low band of two equal frames; the high band is zero
        rows = (HAAR * (low_t[:, :, 0::2] + low_t[:, :, 1::2]), HAAR * (low_t[:, :, 0::2] - low_t[:, :, 1::2]))
        bands = [HAAR * (r[..., 0::2] + r[..., 1::2]) if wb == 0 else HAAR * (r[..., 0::2] - r[..., 1::2])
                 for r in rows for wb in (0, 1)]
        bands = [b / (2 * math.sqrt(2.0)) for b in bands]
        x = torch.cat(bands + [torch.zeros_like(b) for b in bands], dim=1)
    return x


def haar_unpatch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C * patch^3, h, w] -> [B, C, h * patch, w * patch]: the last of the ``patch`` frames the
    official 3D inverse Haar makes from one latent frame (temporal synthesis ``low - high``)."""
    for _ in range(int(math.log2(patch))):
        c = x.chunk(8, dim=1)
        s = [HAAR * (c[i] - c[4 + i]) for i in range(4)]  # time: the second output frame
        rows = []
        for hb in (0, 1):  # width synthesis of each height band
            lo, hi = s[2 * hb], s[2 * hb + 1]
            rows.append(torch.stack((HAAR * (lo + hi), HAAR * (lo - hi)), dim=-1).flatten(-2))
        lo, hi = rows
        y = torch.stack((HAAR * (lo + hi), HAAR * (lo - hi)), dim=-2).flatten(-3, -2)
        x = y * (2 * math.sqrt(2.0))
    return x


# ----------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class CosmosConfig:
    """What the tokenizer is, read off the archives' tensors (``infer_cosmos_config``)."""

    levels: tuple[int, ...]  # FSQ levels per code dimension
    z_channels: int
    widths: tuple[int, ...]  # per level, shallowest first
    decoder_blocks: int  # res blocks per decoder level (num_res_blocks + 1)
    decoder_attn: tuple[bool, ...]
    patch: int
    out_channels: int = 3

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def upsample_flags(self) -> list[tuple[bool, bool]]:
        """(spatial, temporal) per decoder level 1.. (level 0 has no upsampler), by the official
        rule (not legacy mode) for the release's 16x / 8x compression."""
        return [resample_flags(len(self.widths) - 1 - i, self.patch, up=True) for i in range(1, len(self.widths))]

    @property
    def downsample(self) -> int:
        return self.patch * 2 ** sum(spatial for spatial, _ in self.upsample_flags())

    def summary(self) -> str:
        return (f"widths {list(self.widths)}, {self.decoder_blocks} res blocks per decoder level, attention at "
                f"decoder levels {[i for i, a in enumerate(self.decoder_attn) if a]}, z_channels {self.z_channels}, "
                f"patch {self.patch}, FSQ levels {list(self.levels)}")


def resample_flags(rank: int, patch: int, up: bool) -> tuple[bool, bool]:
    """(spatial, temporal) for the resampler at ``rank`` (encoder: its level; decoder: levels from
    the deepest, 0 = deepest), as the official factorized encoder/decoder set them."""
    spatial_n = int(math.log2(SPATIAL_COMPRESSION)) - int(math.log2(patch))
    temporal_n = int(math.log2(TEMPORAL_COMPRESSION)) - int(math.log2(patch))
    if not up:
        return rank < spatial_n, rank < temporal_n
    temporal = 0 < rank < temporal_n + 1
    return temporal or (rank < spatial_n and spatial_n > temporal_n), temporal


class CosmosDecoderNet(nn.Module):
    """``post_quant_conv`` and ``decoder.*``, named as in ``decoder.jit``."""

    def __init__(self, config: CosmosConfig):
        super().__init__()
        w, n = config.widths, len(config.widths)
        dim, patch_out = len(config.levels), config.out_channels * config.patch ** 3
        self.post_quant_conv = FrameConv(dim, config.z_channels)
        self.decoder = nn.Module()
        self.decoder.conv_in = factorized_conv(config.z_channels, w[-1])
        self.decoder.mid = Middle(w[-1])
        levels = []
        flags = [None, *config.upsample_flags()]
        for i in range(n):
            level = Level(w[i + 1] if i + 1 < n else w[-1], w[i], config.decoder_blocks, config.decoder_attn[i])
            if i:
                level.upsample = Upsample(w[i], *flags[i])
            levels.append(level)
        self.decoder.up = nn.ModuleList(levels)
        self.decoder.norm_out = FrameNorm(w[0])
        self.decoder.conv_out = factorized_conv(w[0], patch_out)
        self.patch = config.patch

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        d = self.decoder
        h = d.mid(d.conv_in(self.post_quant_conv(codes)))
        for level in reversed(d.up):
            h = level(h)
        return haar_unpatch(d.conv_out(swish(d.norm_out(h))), self.patch)


class CosmosEncoderNet(nn.Module):
    """``encoder.*`` and ``quant_conv``, named as in ``encoder.jit``."""

    def __init__(self, config: CosmosConfig, base: int, blocks: int, attn: tuple[bool, ...]):
        super().__init__()
        w, n = config.widths, len(config.widths)
        self.encoder = nn.Module()
        self.encoder.conv_in = factorized_conv(3 * config.patch ** 3, base)
        levels = []
        for i in range(n):
            level = Level(w[i - 1] if i else base, w[i], blocks, attn[i])
            if i != n - 1:
                level.downsample = Downsample(w[i], *resample_flags(i, config.patch, up=False))
            levels.append(level)
        self.encoder.down = nn.ModuleList(levels)
        self.encoder.mid = Middle(w[-1])
        self.encoder.norm_out = FrameNorm(w[-1])
        self.encoder.conv_out = factorized_conv(w[-1], config.z_channels)
        self.quant_conv = FrameConv(config.z_channels, len(config.levels))
        self.patch = config.patch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        h = e.conv_in(haar_patch(images, self.patch))
        for level in e.down:
            h = level(h)
        return self.quant_conv(e.conv_out(swish(e.norm_out(e.mid(h)))))


# ----------------------------------------------------------------------------- FSQ
class FSQ:
    """Finite scalar quantization: code ids <-> per-dimension digits (mixed radix, first level
    least significant), each digit d of level L stored as (d - L//2) / (L//2)."""

    def __init__(self, levels: tuple[int, ...]):
        self.levels = levels
        basis = [1]
        for level in levels[:-1]:
            basis.append(basis[-1] * level)
        self.basis = tuple(basis)

    def codes(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, h, w] ids -> [B, dims, h, w] code vectors."""
        dims = [((ids // b) % lv - lv // 2).to(dtype) / (lv // 2) for b, lv in zip(self.basis, self.levels)]
        return torch.stack(dims, dim=1)

    def ids(self, z: torch.Tensor) -> torch.Tensor:
        """[B, dims, h, w] latents -> [B, h, w] ids: bounded by tanh, rounded, as the official quantizer."""
        z = z.float()
        out = torch.zeros(z.shape[0], *z.shape[2:], dtype=torch.long, device=z.device)
        for i, (b, lv) in enumerate(zip(self.basis, self.levels)):
            half_l = (lv - 1) * (1 + 1e-3) / 2
            offset = 0.5 if lv % 2 == 0 else 0.0
            bounded = torch.tanh(z[:, i] + math.atanh(offset / half_l)) * half_l - offset
            out += (bounded.round().long() + lv // 2) * b
        return out


# ----------------------------------------------------------------------------- the VQ
class CosmosDV(nn.Module):
    """The ``VQ``: decode with ``decoder.jit``'s tensors, encode with ``encoder.jit``'s (optional)."""

    vq_name = "Cosmos DV8x16x16"
    truncates_to_uint8 = False  # torchvision's save_image rounds

    def __init__(self, config: CosmosConfig, encoder: CosmosEncoderNet | None = None, source_path: str | None = None):
        super().__init__()
        self.config = config
        self.source_path = source_path
        self.fsq = FSQ(config.levels)
        self.net = CosmosDecoderNet(config)
        self.enc = encoder

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def device(self) -> torch.device:
        return self.net.post_quant_conv.conv3d.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.post_quant_conv.conv3d.weight.dtype

    def code_vectors(self) -> torch.Tensor:
        """[codes, dims]: the FSQ code vectors the decoder reads."""
        ids = torch.arange(self.codebook_size, device=self.device)
        return self.fsq.codes(ids.view(1, 1, -1), self.dtype)[0, :, 0].T

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, h, w] code ids -> float32 images [B, 3, 16h, 16w] in [0, 1], one image at a time."""
        check_code_grid(codes, self.codebook_size, self.vq_name)
        codes = codes.to(device=self.device, dtype=torch.long)
        images = [self.net(self.fsq.codes(grid, self.dtype)) for grid in codes.split(1)]
        return torch.cat([(x.float().clamp(-1.0, 1.0) + 1.0) / 2.0 for x in images])

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> code ids [B, H/16, W/16] (long)."""
        if self.enc is None:
            raise ZipARError(f"the Cosmos DV8x16x16 VQ at '{self.source_path}' was loaded from {DECODER_FILE} alone, "
                             f"which cannot encode; put {ENCODER_FILE} beside it and load the folder.")
        check_image_batch(images, self.downsample, self.vq_name)
        x = images.to(device=self.device, dtype=self.dtype) * 2 - 1
        return torch.cat([self.fsq.ids(self.enc(one)) for one in x.split(1)])


# ----------------------------------------------------------------------------- reading
def _not_cosmos(path: Path, what: str) -> ZipARError:
    return ZipARError(f"'{path}' {what}; it is not a Cosmos DV tokenizer: {RELEASE_HINT}.")


def _shape(sd: dict[str, torch.Tensor], key: str, path: Path) -> tuple[int, ...]:
    if key not in sd:
        raise _not_cosmos(path, f"has no tensor '{key}'")
    return tuple(sd[key].shape)


def _levels_of(sd: dict[str, torch.Tensor], key: str, dims: int, path: Path) -> tuple[int, ...]:
    if key in sd:
        levels = tuple(int(v) for v in sd[key].flatten().tolist())
    else:
        levels = LEVELS
    if len(levels) != dims or any(lv < 2 for lv in levels):
        raise _not_cosmos(path, f"has FSQ levels {list(levels)} for {dims}-dimensional codes")
    return levels


def infer_cosmos_config(sd: dict[str, torch.Tensor], path: str | os.PathLike = DECODER_FILE) -> CosmosConfig:
    """The decoder's architecture from ``decoder.jit``'s tensor names and shapes."""
    path = Path(path)
    missing = [k for k in DECODER_CORE if k not in sd]
    if missing:
        if all(k in sd for k in ENCODER_CORE):
            raise _not_cosmos(path, f"is a Cosmos encoder archive; load the folder, or the {DECODER_FILE} beside it")
        raise _not_cosmos(path, f"has no {', '.join(missing)} (its first tensor is "
                                f"'{next(iter(sorted(sd)), '')}')")
    z_channels, dims = _shape(sd, "post_quant_conv.conv3d.weight", path)[:2]
    if "inv_quant.quantizer._levels" not in sd and dims != len(LEVELS):
        raise _not_cosmos(path, f"decodes {dims}-channel latents with no FSQ quantizer (a continuous Cosmos "
                                "tokenizer such as CV8x8x8 has no codes to decode)")
    levels = _levels_of(sd, "inv_quant.quantizer._levels", dims, path)
    keys = list(sd)
    n = indexed_count(keys, "decoder.up.")
    blocks = indexed_count(keys, "decoder.up.0.block.")
    if n == 0 or blocks == 0:
        raise _not_cosmos(path, "has no decoder.up.0.block.0 tensors")
    widths = tuple(_shape(sd, f"decoder.up.{i}.block.0.conv1.0.conv3d.weight", path)[0] for i in range(n))
    patch_out = _shape(sd, "decoder.conv_out.0.conv3d.weight", path)[0]
    patch = round((patch_out / 3) ** (1 / 3))
    if 3 * patch ** 3 != patch_out or patch & (patch - 1):
        raise _not_cosmos(path, f"writes {patch_out} channels, not 3 x patch^3 for a power-of-two patch")
    return CosmosConfig(levels=levels, z_channels=z_channels, widths=widths, decoder_blocks=blocks,
                        decoder_attn=tuple(f"decoder.up.{i}.attn.0.0.q.conv3d.weight" in sd for i in range(n)),
                        patch=patch)


def _frame_weights(sd: dict[str, torch.Tensor], keep: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The weights under ``keep`` prefixes, every 5D conv weight summed over its time axis
    (what a causal conv does to one frame); the archives' own tables (FSQ, wavelets) dropped."""
    out = {}
    for key, value in sd.items():
        if not key.startswith(keep) or key.rsplit(".", 1)[-1] in SKIPPED:
            continue
        out[key] = value.float().sum(dim=2) if value.ndim == 5 else value
    return out


def _fill(model: nn.Module, weights: dict[str, torch.Tensor], path: Path, config: CosmosConfig) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"tensor '{k}' is {list(weights[k].shape)} (time-summed) where the rest of the file implies "
             f"{list(expected[k].shape)}" for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problems = wrong[:1]
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {key_sample(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors the network has no place for, e.g. {key_sample(unexpected)}")
    if problems:
        raise ZipARError(f"Cosmos tokenizer '{path}' is incomplete or damaged (read as {config.summary()}): "
                         f"{'; '.join(problems)}. Re-download it, or {RELEASE_HINT}.")
    model.load_state_dict(weights, strict=True, assign=True)


def _read_archive(path: Path) -> dict[str, torch.Tensor]:
    if not is_torchscript_archive(path):
        raise ZipARError(f"'{path}' is not a TorchScript archive (a zip written by torch.jit.save); {RELEASE_HINT}.")
    return read_torchscript_tensors(path)


def cosmos_from_archives(decoder_sd: dict[str, torch.Tensor], encoder_sd: dict[str, torch.Tensor] | None = None,
                         path: str | os.PathLike = DECODER_FILE, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32) -> CosmosDV:
    """A ``CosmosDV`` holding the tensors read from ``decoder.jit`` (and ``encoder.jit``)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ZipARError(f"the Cosmos VQ needs a floating-point dtype (float32, bfloat16, float16); got {dtype!r}.")
    path = Path(path)
    config = infer_cosmos_config(decoder_sd, path)
    encoder = None
    if encoder_sd is not None:
        if not all(k in encoder_sd for k in ENCODER_CORE):
            raise _not_cosmos(path, f"has an {ENCODER_FILE} without {key_sample(list(ENCODER_CORE))}")
        keys = list(encoder_sd)
        n = indexed_count(keys, "encoder.down.")
        if n != len(config.widths):
            raise _not_cosmos(path, f"has an encoder with {n} levels and a decoder with {len(config.widths)}")
        enc_levels = _levels_of(encoder_sd, "quantizer._levels", len(config.levels), path)
        if enc_levels != config.levels:
            raise _not_cosmos(path, f"has encoder FSQ levels {list(enc_levels)} and decoder ones {list(config.levels)}")
        with torch.device("meta"):
            encoder = CosmosEncoderNet(config, _shape(encoder_sd, "encoder.conv_in.0.conv3d.weight", path)[0],
                                       indexed_count(keys, "encoder.down.0.block."),
                                       tuple(f"encoder.down.{i}.attn.0.0.q.conv3d.weight" in encoder_sd
                                             for i in range(n)))
        _fill(encoder, _frame_weights(encoder_sd, ("encoder.", "quant_conv.")), path / ENCODER_FILE, config)
    with torch.device("meta"):
        model = CosmosDV(config, source_path=str(path))
    _fill(model.net, _frame_weights(decoder_sd, ("decoder.", "post_quant_conv.")), path, config)
    model.enc = encoder
    model = model.to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


# The release names say the tokenizer's kind and compression (DV8x16x16: discrete video, 8x in
# time, 16x in space). The archives cannot say it (which resamplers change time or space is not
# in the weights), so a name that says another one is refused rather than decoded wrongly.
RELEASE_NAME = re.compile(r"(?<![A-Za-z])(DV|DI|CV|CI)(\d+)x(\d+)(?:x(\d+))?", re.IGNORECASE)


def check_release_name(path: Path) -> None:
    """A ZipARError when the folder's (or the file's folder's) name says another Cosmos tokenizer."""
    folder = path if path.is_dir() else path.parent
    found = RELEASE_NAME.search(folder.name)
    if found is None or found.group(0).upper() == "DV8X16X16":
        return
    kind = {"DV": "discrete video", "DI": "discrete image", "CV": "continuous video", "CI": "continuous image"}
    raise ZipARError(f"'{folder}' is named for the Cosmos {found.group(0)} tokenizer "
                     f"({kind[found.group(1).upper()]}); ZipAR reads only DV8x16x16 (SimpleAR's), whose "
                     f"resampling differs from the others' without showing in the weights; {RELEASE_HINT}.")


def load_cosmos(path: str | os.PathLike, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> CosmosDV:
    """Load Cosmos DV8x16x16 from its folder (``decoder.jit``, and ``encoder.jit`` for encoding)
    or from ``decoder.jit`` itself (decode only). The archives are read, never run."""
    path = Path(path).expanduser()
    if path.exists():
        check_release_name(path)
    if path.is_dir():
        dec, enc = path / DECODER_FILE, path / ENCODER_FILE
        if not dec.is_file():
            raise ZipARError(f"'{path}' has no {DECODER_FILE}; {RELEASE_HINT}.")
        encoder_sd = _read_archive(enc) if enc.is_file() else None
        return cosmos_from_archives(_read_archive(dec), encoder_sd, path, device, dtype)
    if path.is_file():
        return cosmos_from_archives(_read_archive(path), None, path, device, dtype)
    raise ZipARError(f"Cosmos tokenizer not found: '{path}'; check the path, or {RELEASE_HINT}.")


def is_cosmos_path(path: str | os.PathLike) -> bool:
    """Cheap check for ``load_vq``: a folder holding ``decoder.jit``, or a ``.jit`` file whose zip
    names a TorchScript archive (only the zip's directory is read)."""
    try:
        path = Path(path).expanduser()
        if path.is_dir():
            return (path / DECODER_FILE).is_file()
        return path.is_file() and path.suffix.lower() == ".jit" and is_torchscript_archive(path)
    except OSError:
        return False


FORMAT = VQFormat(
    name="NVIDIA's Cosmos Tokenizer DV8x16x16 (TorchScript archives), the image tokenizer of SimpleAR",
    files=f"Cosmos Tokenizer DV8x16x16 for SimpleAR (the {RELEASE} folder with {ENCODER_FILE} / {DECODER_FILE})",
    detect=is_cosmos_path, load=load_cosmos)
