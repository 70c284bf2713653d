"""A tiny Cosmos DV tokenizer with the official structure, run as a full causal 3D network, and
exported as the release is: ``encoder.jit`` / ``decoder.jit`` written by ``torch.jit.trace``.

The official discrete video tokenizer (NVIDIA/Cosmos-Tokenizer ``networks/discrete_video.py``
with ``modules/layers3d.py``' factorized encoder/decoder, ``patching.py``' Haar and
``quantizers.py``' FSQ) is rebuilt here independently of ``zipar.vq.cosmos``, on videos of any
length: causal convs pad time by repeating the first frame, the patcher repeats the first frame
``patch`` times and the unpatcher drops all but the last ``patch`` frames' last, resamplers
change time when their flags say so. The release's archives are traced (its modules keep
``range`` and einops calls that TorchScript cannot script), from ``encoder_jit()`` =
Sequential(encoder, quant_conv, quantizer) and ``decoder_jit()`` = Sequential(inv_quant,
post_quant_conv, decoder); the module and attribute names here are the official ones, so the
archives hold the same tensor names as the release (non-persistent buffers included).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Three levels (widths 8, 16, 16), attention on the middle level (resolution 8 of a 64 px image),
# the release's patch 4, FSQ levels and 16x / 8x compression.
TINY = dict(channels=8, channels_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), resolution=64,
            z_channels=4, embedding_dim=6, levels=(8, 8, 8, 5, 5, 5), patch_size=4, spatial_compression=16,
            temporal_compression=8)
# The release's config (DV8x16x16): shapes only.
RELEASE = dict(channels=128, channels_mult=(2, 4, 4), num_res_blocks=2, attn_resolutions=(32,), resolution=1024,
               z_channels=16, embedding_dim=6, levels=(8, 8, 8, 5, 5, 5), patch_size=4, spatial_compression=16,
               temporal_compression=8)
HAAR_TAPS = torch.tensor([0.7071067811865476, 0.7071067811865476])


def silu(x):
    return x * torch.sigmoid(x)


def frames_to_batch(x):
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), b


def batch_to_frames(x, b):
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class CausalConv3d(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, stride=1, time_stride=1, padding=1):
        super().__init__()
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * 3
        self.time_pad = (k[0] - 1) + (1 - time_stride)
        self.padding = padding
        self.conv3d = nn.Conv3d(cin, cout, k, stride=(time_stride, stride, stride))

    def forward(self, x):
        if self.time_pad > 0:
            x = torch.cat([x[:, :, :1]] * self.time_pad + [x], dim=2)
        p = self.padding
        return self.conv3d(F.pad(x, (p, p, p, p, 0, 0)))


class CausalNormalize(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6, affine=True)

    def forward(self, x):
        y, b = frames_to_batch(x)
        return batch_to_frames(self.norm(y), b)


def factorized(cin, cout):
    return nn.Sequential(CausalConv3d(cin, cout, (1, 3, 3), padding=1), CausalConv3d(cout, cout, (3, 1, 1), padding=0))


class CausalResnetBlockFactorized3d(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = CausalNormalize(cin), factorized(cin, cout)
        self.norm2, self.conv2 = CausalNormalize(cout), factorized(cout, cout)
        self.dropout = nn.Dropout(0.0)
        self.nin_shortcut = CausalConv3d(cin, cout, 1, padding=0) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(self.dropout(silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class _AttnBase(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = CausalNormalize(channels)
        self.q, self.k, self.v, self.proj_out = (CausalConv3d(channels, channels, 1, padding=0) for _ in range(4))


class CausalAttnBlock(_AttnBase):
    """Attention among the positions of each frame."""

    def forward(self, x):
        n = self.norm(x)
        q, b = frames_to_batch(self.q(n))
        k, _ = frames_to_batch(self.k(n))
        v, _ = frames_to_batch(self.v(n))
        bt, c, h, w = q.shape
        scores = torch.einsum("bci,bcj->bij", q.reshape(bt, c, h * w), k.reshape(bt, c, h * w)) / math.sqrt(c)
        out = torch.einsum("bij,bcj->bci", scores.softmax(dim=-1), v.reshape(bt, c, h * w)).reshape(bt, c, h, w)
        return x + self.proj_out(batch_to_frames(out, b))


class CausalTemporalAttnBlock(_AttnBase):
    """Causal attention along time at each position."""

    def forward(self, x):
        n = self.norm(x)
        q, k, v = self.q(n), self.k(n), self.v(n)
        c, t = q.shape[1], q.shape[2]
        scores = torch.einsum("bcihw,bcjhw->bhwij", q, k) / math.sqrt(c)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return x + self.proj_out(torch.einsum("bhwij,bcjhw->bcihw", weights, v))


def attn_pair(channels):
    return nn.Sequential(CausalAttnBlock(channels), CausalTemporalAttnBlock(channels))


class CausalHybridUpsample3d(nn.Module):
    def __init__(self, channels, spatial_up, temporal_up):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (3, 1, 1), padding=0)
        self.conv2 = CausalConv3d(channels, channels, (1, 3, 3), padding=1)
        self.conv3 = CausalConv3d(channels, channels, 1, padding=0)
        self.spatial_up, self.temporal_up = spatial_up, temporal_up

    def forward(self, x):
        if not (self.spatial_up or self.temporal_up):
            return x
        if self.temporal_up:
            factor = 2 if x.shape[2] > 1 else 1
            x = x.repeat_interleave(factor, dim=2)[:, :, factor - 1:]
            x = self.conv1(x) + x
        if self.spatial_up:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            x = self.conv2(x) + x
        return self.conv3(x)


class CausalHybridDownsample3d(nn.Module):
    def __init__(self, channels, spatial_down, temporal_down):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, (1, 3, 3), stride=2, padding=0)
        self.conv2 = CausalConv3d(channels, channels, (3, 1, 1), time_stride=2, padding=0)
        self.conv3 = CausalConv3d(channels, channels, 1, padding=0)
        self.spatial_down, self.temporal_down = spatial_down, temporal_down

    def forward(self, x):
        if not (self.spatial_down or self.temporal_down):
            return x
        if self.spatial_down:
            x = F.pad(x, (0, 1, 0, 1, 0, 0))
            x = self.conv1(x) + F.avg_pool3d(x, (1, 2, 2), (1, 2, 2))
        if self.temporal_down:
            x = torch.cat([x[:, :, :1], x], dim=2)
            x = self.conv2(x) + F.avg_pool3d(x, (2, 1, 1), (2, 1, 1))
        return self.conv3(x)


def _analysis(x, dim):
    """One Haar analysis step along ``dim`` (pairs 2i, 2i+1): low, high."""
    a = HAAR_TAPS[0].item()
    even, odd = x.narrow(dim, 0, x.shape[dim] // 2 * 2).unflatten(dim, (-1, 2)).unbind(dim + 1)
    return a * (even + odd), a * (even - odd)


def _synthesis(low, high, dim):
    a = HAAR_TAPS[0].item()
    return torch.stack((a * (low + high), a * (low - high)), dim=dim + 1).flatten(dim, dim + 1)


class Patcher3D(nn.Module):
    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size
        self.register_buffer("wavelets", HAAR_TAPS.clone(), persistent=False)
        self.register_buffer("_arange", torch.arange(2), persistent=False)
        self.register_buffer("patch_size_buffer", patch_size * torch.ones([1], dtype=torch.int32), persistent=False)

    def forward(self, x):
        x = torch.cat([x[:, :, :1].repeat_interleave(self.patch_size, dim=2), x[:, :, 1:]], dim=2)
        for _ in range(int(math.log2(self.patch_size))):
            bands = [x]
            for dim in (2, 3, 4):  # time, height, width: each band splits into (low, high)
                bands = [part for band in bands for part in _analysis(band, dim)]
            x = torch.cat(bands, dim=1) / (2 * math.sqrt(2.0))
        return x


class UnPatcher3D(nn.Module):
    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size
        self.register_buffer("wavelets", HAAR_TAPS.clone(), persistent=False)
        self.register_buffer("_arange", torch.arange(2), persistent=False)

    def forward(self, x):
        for _ in range(int(math.log2(self.patch_size))):
            bands = list(x.chunk(8, dim=1))
            for dim in (4, 3, 2):  # undo width, then height, then time
                bands = [_synthesis(bands[i], bands[i + 1], dim) for i in range(0, len(bands), 2)]
            x = bands[0] * (2 * math.sqrt(2.0))
        return x[:, :, self.patch_size - 1:]


def _flags(cfg, rank, up):
    s_n = int(math.log2(cfg["spatial_compression"])) - int(math.log2(cfg["patch_size"]))
    t_n = int(math.log2(cfg["temporal_compression"])) - int(math.log2(cfg["patch_size"]))
    if not up:
        return rank < s_n, rank < t_n
    temporal = 0 < rank < t_n + 1
    return temporal or (rank < s_n and s_n > t_n), temporal


class EncoderFactorized(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, n = cfg["channels"], cfg["channels_mult"], len(cfg["channels_mult"])
        p = cfg["patch_size"]
        self.patcher3d = Patcher3D(p)
        self.conv_in = factorized(3 * p ** 3, ch)
        res, block_in = cfg["resolution"] // p, ch
        self.down = nn.ModuleList()
        for i in range(n):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg["num_res_blocks"]):
                level.block.append(CausalResnetBlockFactorized3d(block_in, ch * mult[i]))
                block_in = ch * mult[i]
                if res in cfg["attn_resolutions"]:
                    level.attn.append(attn_pair(block_in))
            if i != n - 1:
                level.downsample = CausalHybridDownsample3d(block_in, *_flags(cfg, i, up=False))
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = CausalResnetBlockFactorized3d(block_in, block_in)
        self.mid.attn_1 = attn_pair(block_in)
        self.mid.block_2 = CausalResnetBlockFactorized3d(block_in, block_in)
        self.norm_out = CausalNormalize(block_in)
        self.conv_out = factorized(block_in, cfg["z_channels"])

    def forward(self, x):
        h = self.conv_in(self.patcher3d(x))
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(silu(self.norm_out(h)))


class DecoderFactorized(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, n = cfg["channels"], cfg["channels_mult"], len(cfg["channels_mult"])
        p = cfg["patch_size"]
        self.unpatcher3d = UnPatcher3D(p)
        block_in = ch * mult[-1]
        res = cfg["resolution"] // p // 2 ** (n - 1)
        self.conv_in = factorized(cfg["z_channels"], block_in)
        self.mid = nn.Module()
        self.mid.block_1 = CausalResnetBlockFactorized3d(block_in, block_in)
        self.mid.attn_1 = attn_pair(block_in)
        self.mid.block_2 = CausalResnetBlockFactorized3d(block_in, block_in)
        ups = []
        for i in reversed(range(n)):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg["num_res_blocks"] + 1):
                level.block.append(CausalResnetBlockFactorized3d(block_in, ch * mult[i]))
                block_in = ch * mult[i]
                if res in cfg["attn_resolutions"]:
                    level.attn.append(attn_pair(block_in))
            if i != 0:
                level.upsample = CausalHybridUpsample3d(block_in, *_flags(cfg, n - i - 1, up=True))
                res *= 2
            ups.insert(0, level)
        self.up = nn.ModuleList(ups)
        self.norm_out = CausalNormalize(block_in)
        self.conv_out = factorized(block_in, 3 * p ** 3)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.unpatcher3d(self.conv_out(silu(self.norm_out(h))))


class FSQuantizer(nn.Module):
    def __init__(self, levels):
        super().__init__()
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        basis = torch.cumprod(torch.tensor([1] + list(levels[:-1])), dim=0).to(torch.int32)
        self.register_buffer("_basis", basis, persistent=False)
        self.project_in, self.project_out = nn.Identity(), nn.Identity()
        self.dtype = torch.float32
        self.register_buffer("implicit_codebook", self.indices_to_codes(torch.arange(math.prod(levels))),
                             persistent=False)

    def indices_to_codes(self, indices):
        half = self._levels // 2
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels
        codes = (digits - half) / half
        return codes.movedim(-1, 1) if indices.ndim >= 3 else codes

    def forward(self, z):  # [B, D, T, H, W] -> indices [B, T, H, W]
        z = z.movedim(1, -1)
        half_l = (self._levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        bounded = (z + (offset / half_l).atanh()).tanh() * half_l - offset
        half = self._levels // 2
        return ((bounded.round() + half) * self._basis).sum(dim=-1).to(torch.int32)


class InvQuantizerJit(nn.Module):
    """Codes cast to the quantizer's dtype (the official ``to()`` sets it with the weights')."""

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, indices):
        return self.quantizer.indices_to_codes(indices).to(self.quantizer.dtype)


class DiscreteVideoTokenizer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = EncoderFactorized(cfg)
        self.decoder = DecoderFactorized(cfg)
        self.quant_conv = CausalConv3d(cfg["z_channels"], cfg["embedding_dim"], 1, padding=0)
        self.post_quant_conv = CausalConv3d(cfg["embedding_dim"], cfg["z_channels"], 1, padding=0)
        self.quantizer = FSQuantizer(cfg["levels"])

    def to(self, *args, **kwargs):
        self.quantizer.dtype = kwargs.get("dtype", self.quantizer.dtype)
        return super().to(*args, **kwargs)

    def encoder_jit(self):
        return nn.Sequential(OrderedDict(encoder=self.encoder, quant_conv=self.quant_conv, quantizer=self.quantizer))

    def decoder_jit(self):
        return nn.Sequential(OrderedDict(inv_quant=InvQuantizerJit(self.quantizer),
                                         post_quant_conv=self.post_quant_conv, decoder=self.decoder))


def make_tokenizer(cfg=TINY, seed=0) -> DiscreteVideoTokenizer:
    """Random weights with norms and biases drawn too, so no tensor is left at its default."""
    torch.manual_seed(seed)
    model = DiscreteVideoTokenizer(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.7, 1.3)
            elif name.endswith("bias"):
                param.uniform_(-0.1, 0.1)
    return model


def write_archives(folder: Path, model: DiscreteVideoTokenizer, grid=(4, 4), encoder: bool = True) -> Path:
    """``encoder.jit`` and ``decoder.jit`` traced as the release's are, on one frame (the encoder
    left out on request: CPU pooling has no bfloat16 kernel to trace a bfloat16 one with)."""
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    h, w = grid
    ds = 16
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed by design, as in the release
        # torch 2.13 / 2.14 mark torch.jit.trace deprecated (Deprecation- / FutureWarning): the release used it
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if encoder:
            frame = torch.rand(1, 3, 1, h * ds, w * ds) * 2 - 1
            torch.jit.trace(model.encoder_jit(), frame, check_trace=False).save(str(folder / "encoder.jit"))
        dec = torch.jit.trace(model.decoder_jit(), torch.zeros(1, 1, h, w, dtype=torch.long), check_trace=False)
    dec.save(str(folder / "decoder.jit"))
    return folder
