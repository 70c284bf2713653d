"""The taming-transformers VQ network, once, with every switch the published VQs need.

LlamaGen's VQ-16 / VQ-8 (also Janus-Pro's image decoder) and Meta's Chameleon VQGAN
(Lumina-mGPT's) are the same encoder / codebook / decoder: levels of res blocks, attention
after each res block of some levels, a resnet-attention-resnet middle, stride-2 resampling
between levels. They differ only in what ``TamingSpec`` lists (where attention sits, whether
resampling has a conv, whether the codebook is L2-normalised, a tanh on the output...).

The module tree carries LlamaGen's official names (``encoder.conv_blocks.{i}.res.{j}``,
``...attn.{j}``, ``...downsample.conv``, ``encoder.mid.{0,1,2}``, ``decoder.conv_blocks.{k}``
with the deepest level first, ``quantize.embedding``...), so LlamaGen files load and re-save
with no renaming. Formats published under taming's own names (``encoder.down.{i}.block.{j}``,
``mid.block_1``, ``decoder.up.{i}`` indexed by level) translate with ``rename_key``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_code_grid, check_image_batch


@dataclass(frozen=True)
class TamingSpec:
    codebook_size: int
    embed_dim: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int  # per encoder level; the decoder has one more
    z_channels: int
    encoder_attn: tuple[bool, ...]  # per level, shallowest first: attention after each res block
    decoder_attn: tuple[bool, ...]  # per level, indexed like the encoder's (not in decoding order)
    middle_attn: bool = True  # False: the middle is two res blocks (taming's attn_type "none")
    resample_with_conv: bool = True  # False: 2x2 average pool down, bare nearest-neighbour up
    tanh_out: bool = False
    l2_norm: bool = False  # codes looked up in, and latents matched against, the L2-normalised codebook
    usage_len: int = 0  # > 0: a ``quantize.codebook_used`` buffer of that length (LlamaGen's training log)
    float32_distances: bool = False  # match latents to codes in float32 even for 16-bit weights
    distance_rows: int | None = None  # latent vectors per distance block when encoding (bounds memory)
    in_channels: int = 3
    out_channels: int = 3

    @property
    def downsample(self) -> int:
        return downsample_of(self.ch_mult)

    @property
    def widths(self) -> list[int]:
        return [self.ch * m for m in self.ch_mult]


def downsample_of(ch_mult: tuple[int, ...]) -> int:
    """Pixels per code along each side: one stride-2 step between consecutive levels."""
    return 2 ** (len(ch_mult) - 1)


# ----------------------------------------------------------------------------- blocks
def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, plus a 1x1 projection of the skip path when the width changes."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), conv3x3(in_ch, out_ch)
        self.norm2, self.conv2 = group_norm(out_ch), conv3x3(out_ch, out_ch)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1x1 convs as the projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, kernel_size=1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        # [B, C, H, W] -> [B, 1, HW, C]: one head whose width is the channel count
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        # SDPA instead of an explicit HW x HW matrix: same softmax(q k^T / sqrt(C)) v, far less
        # memory on GPU (VQ-8 at 512 px attends over 4096 positions).
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after one zero row/column at the bottom/right only (taming's
    asymmetric padding), or a 2x2 average pool without the conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        if with_conv:
            self.conv = conv3x3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv when it has one."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        if with_conv:
            self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


RESAMPLERS = {"downsample": Downsample, "upsample": Upsample}


class Level(nn.Module):
    """One resolution: res blocks ``res.{j}``, each followed by ``attn.{j}`` when the level has
    attention, then the level's ``downsample`` or ``upsample`` (named after its direction)."""

    def __init__(self, in_ch: int, out_ch: int, n_res: int, with_attn: bool, resample: str | None,
                 resample_with_conv: bool):
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(n_res))
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(n_res if with_attn else 0))
        if resample is not None:
            self.add_module(resample, RESAMPLERS[resample](out_ch, resample_with_conv))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, res in enumerate(self.res):
            x = res(x)
            if len(self.attn):
                x = self.attn[j](x)
        for name in RESAMPLERS:
            if hasattr(self, name):
                x = getattr(self, name)(x)
        return x


def level_stack(spec: TamingSpec, order: list[int], start: int, n_res: int, attn: tuple[bool, ...],
                resample: str) -> nn.ModuleList:
    """The levels ``order`` (level indices in the order data flows through them), each ending in
    ``resample`` but the last; each reads the width of the one before it, the first ``start``."""
    widths = spec.widths
    ins = [start] + [widths[i] for i in order[:-1]]
    last = len(order) - 1
    return nn.ModuleList(
        Level(ins[n], widths[i], n_res, attn[i], resample if n < last else None, spec.resample_with_conv)
        for n, i in enumerate(order))


def middle(channels: int, with_attn: bool) -> nn.ModuleList:
    """``mid.0`` -> ``mid.1`` -> ``mid.2`` (taming: block_1, attn_1, block_2); without attention
    ``mid.1`` is an identity with no weights."""
    attn = AttnBlock(channels) if with_attn else nn.Identity()
    return nn.ModuleList([ResnetBlock(channels, channels), attn, ResnetBlock(channels, channels)])


class Encoder(nn.Module):
    """Pixels in [-1, 1] -> z_channels latents, shallowest level first, then the middle."""

    def __init__(self, spec: TamingSpec):
        super().__init__()
        deepest = spec.widths[-1]
        self.conv_in = conv3x3(spec.in_channels, spec.ch)
        self.conv_blocks = level_stack(spec, list(range(len(spec.ch_mult))), spec.ch, spec.num_res_blocks,
                                       spec.encoder_attn, "downsample")
        self.mid = middle(deepest, spec.middle_attn)
        self.norm_out = group_norm(deepest)
        self.conv_out = conv3x3(deepest, spec.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in [*self.conv_blocks, *self.mid]:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """The middle, then the levels deepest first with one more res block each than the encoder."""

    def __init__(self, spec: TamingSpec):
        super().__init__()
        self.tanh_out = spec.tanh_out
        deepest = spec.widths[-1]
        self.conv_in = conv3x3(spec.z_channels, deepest)
        self.mid = middle(deepest, spec.middle_attn)
        self.conv_blocks = level_stack(spec, list(reversed(range(len(spec.ch_mult)))), deepest,
                                       spec.num_res_blocks + 1, spec.decoder_attn, "upsample")
        self.norm_out = group_norm(spec.widths[0])
        self.conv_out = conv3x3(spec.widths[0], spec.out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in [*self.mid, *self.conv_blocks]:
            h = block(h)
        h = self.conv_out(swish(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


class VectorQuantizer(nn.Module):
    """The codebook ``quantize.embedding``: ids -> latents, and latents -> nearest ids."""

    def __init__(self, spec: TamingSpec):
        super().__init__()
        self.l2_norm = spec.l2_norm
        self.float32_distances = spec.float32_distances
        self.distance_rows = spec.distance_rows
        self.embedding = nn.Embedding(spec.codebook_size, spec.embed_dim)
        if spec.usage_len:
            # Kept only so the official files load strictly and re-save with the same keys.
            self.register_buffer("codebook_used", torch.zeros(spec.usage_len))

    def codebook(self) -> torch.Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, H, W] ids -> [B, D, H, W] latents."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] latents -> [B, H, W] ids of the closest codebook entries.

        |z|^2 + |e|^2 - 2 z.e, written as the reference code does so that near-ties resolve the
        same way; float32 where the format asks (8192 near-equal distances in bf16 would tie).
        """
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.l2_norm:
            flat = F.normalize(flat, p=2, dim=-1)
        codebook = self.codebook()
        if self.float32_distances:
            flat, codebook = flat.float(), codebook.float()
        squares = codebook.pow(2).sum(1)
        blocks = flat.split(self.distance_rows) if self.distance_rows else (flat,)
        ids = [(rows.pow(2).sum(1, keepdim=True) + squares - 2 * rows @ codebook.t()).argmin(dim=1) for rows in blocks]
        return torch.cat(ids).reshape(b, h, w)


# ----------------------------------------------------------------------------- the tokenizer
class TamingVQ(nn.Module):
    """Codes <-> images through the taming network (frozen once loaded); implements ``base.VQ``."""

    truncates_to_uint8: bool = False
    vq_name: ClassVar[str | None] = None  # names the VQ in input errors; None: "VQ" alone

    def __init__(self, spec: TamingSpec, source_path: str | None = None):
        super().__init__()
        self.spec = spec
        self.source_path: str | None = source_path  # set by the loaders, for messages and UIs
        self.encoder = Encoder(spec)
        self.decoder = Decoder(spec)
        self.quantize = VectorQuantizer(spec)
        self.quant_conv = nn.Conv2d(spec.z_channels, spec.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(spec.embed_dim, spec.z_channels, kernel_size=1)

    @property
    def codebook_size(self) -> int:
        return self.spec.codebook_size

    @property
    def downsample(self) -> int:
        return self.spec.downsample

    @property
    def device(self) -> torch.device:
        return self.quantize.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quantize.embedding.weight.dtype

    def code_vectors(self) -> torch.Tensor:
        """[codes, dim] what the decoder reads for each code (for preview colours)."""
        return self.quantize.codebook()

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, h, w] codebook ids -> float32 images [B, 3, h*ds, w*ds] in [0, 1]."""
        check_code_grid(codes, self.codebook_size, self.vq_name)
        latents = self.quantize.lookup(codes.to(device=self.device, dtype=torch.long))
        pixels = self.decoder(self.post_quant_conv(latents))
        # clamp to [-1, 1], then map to [0, 1] (bit for bit the same as mapping first, then clamping)
        return (pixels.float().clamp(-1.0, 1.0) + 1.0) / 2.0

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> codebook ids [B, H/ds, W/ds] (long)."""
        check_image_batch(images, self.downsample, self.vq_name)
        x = images.to(device=self.device, dtype=self.dtype) * 2 - 1
        return self.quantize.nearest(self.quant_conv(self.encoder(x)))


# ----------------------------------------------------------------------------- taming's names
LEVEL_LISTS = {"encoder": "down", "decoder": "up"}  # taming's name of each side's level list
MIDDLE = (("0", "1", "2"), ("block_1", "attn_1", "block_2"))  # canonical and taming names of the middle


def rename_key(key: str, to_taming: bool, reversed_levels: int | None = None) -> str:
    """One state-dict key between the canonical names and taming's, in either direction.

    ``encoder.conv_blocks.{i}.res.{j}`` <-> ``encoder.down.{i}.block.{j}``, ``decoder.conv_blocks``
    <-> ``decoder.up``, ``mid.{0,1,2}`` <-> ``mid.{block_1,attn_1,block_2}``; anything else is
    the same in both. ``reversed_levels`` (the level count) flips the decoder's level index, for
    files that index ``up`` by level (taming, Chameleon) rather than in decoding order (Janus).
    """
    parts = key.split(".")
    if len(parts) < 4 or parts[0] not in LEVEL_LISTS:
        return key
    levels = ("conv_blocks", LEVEL_LISTS[parts[0]])
    blocks = ("res", "block")
    src, dst = (0, 1) if to_taming else (1, 0)
    if parts[1] == "mid" and parts[2] in MIDDLE[src]:
        parts[2] = MIDDLE[dst][MIDDLE[src].index(parts[2])]
    elif parts[1] == levels[src] and parts[2].isdigit():
        index = int(parts[2])
        if reversed_levels is not None and parts[0] == "decoder":
            index = reversed_levels - 1 - index
        parts[1], parts[2] = levels[dst], str(index)
        if parts[3] == blocks[src]:
            parts[3] = blocks[dst]
    return ".".join(parts)
