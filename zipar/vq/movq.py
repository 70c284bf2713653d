"""ai-forever's SBER-MoVQGAN: the image tokenizer of Lumina-mGPT 2.0 (16384 codes, 8x downsampling).

Lumina-mGPT 2.0 samples a grid of MoVQGAN codes (its image token ids minus 155000) and decodes
it with ``movqgan_270M.ckpt`` from https://huggingface.co/ai-forever/MoVQGAN. The published file
is a torch pickle of the bare state dict of the ``MOVQ`` module (float32), which the official
code reads with ``load_state_dict(strict=False)``; a Lightning checkpoint ``{"state_dict": ...}``
of the same module, with its training-only ``loss.*`` and EMA (``ema_*``) tensors, is accepted
too (those are skipped, as the official non-strict load skips them), and so are the same
tensors saved as ``.safetensors``. Files are read with ``weights_only=True``.

The network is the taming VQGAN with one change in the decoder (the "modulated" VQ of the
MoVQ paper): every GroupNorm of the decoder is a spatial norm, whose per-pixel scale and shift
are 1x1 convolutions of the code vectors themselves (the codebook rows, before
``post_quant_conv``), nearest-neighbour enlarged to the feature map's size. The encoder is the
plain taming one, so its blocks come from ``zipar.vq.taming``. The module tree carries the
published names (``encoder.down.{i}.block.{j}``, ``decoder.up.{i}`` indexed by level,
``decoder.mid.block_1.norm1.conv_y``, ``quantize.embedding``...), so the file loads strictly
with no renaming.

The file holds no config, so the architecture is read off the tensor names and shapes (widths,
levels, blocks per level, which levels have attention, the latent and code sizes); the release
is ch 256, ch_mult (1, 2, 2, 4), 2 res blocks, attention at the deepest level, z_channels 4,
embed_dim 4, n_embed 16384. The official code writes 8-bit images with
``((x + 1) * 127.5).round()``: this VQ rounds.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZipARError
from ..io.block_counts import indexed_count
from ..io.checkpoint import load_error_detail, refused_by_weights_only, unwrap_state_dict
from .base import VQFormat, check_code_grid, check_image_batch, key_sample
from .taming import (AttnBlock, Downsample, ResnetBlock, TamingSpec, Upsample, VectorQuantizer, conv3x3,
                     downsample_of, group_norm, swish)

RELEASE_FILE = "movqgan_270M.ckpt"
RELEASE_HINT = (f"use ai-forever/MoVQGAN {RELEASE_FILE} (https://huggingface.co/ai-forever/MoVQGAN), the VQ "
                "Lumina-mGPT 2.0 uses")
SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
NAME_MARK = "movqgan"  # in the published file names (movqgan_67M/102M/270M.ckpt)
# Training-run tensors beside the model: the loss (LPIPS, discriminator) and the EMA copies,
# which the official inference never reads (its non-strict load drops them).
SKIPPED_PREFIXES = ("loss.", "ema_")
GROUPS = 32  # every GroupNorm has 32 groups (eps 1e-6), so every width is a multiple of 32
CORE_KEYS = ("encoder.conv_in.weight", "decoder.conv_in.weight", "quantize.embedding.weight", "quant_conv.weight",
             "post_quant_conv.weight")
# A spatial-norm tensor every MoVQ decoder has; plain taming VQGANs have decoder.mid.block_1.norm1.weight.
SPATIAL_NORM_KEY = "decoder.mid.block_1.norm1.conv_y.weight"
# Emu3's VisionTokenizer has the same spatial norms, plus temporal stacks no MoVQGAN has.
EMU3_MARKS = ("time_res_stack", "time_conv")
LLAMAGEN_MARKS = ("encoder.conv_blocks.", "decoder.conv_blocks.")
DISTANCE_ROWS = 2048  # latent vectors per codebook-distance block when encoding (x 16384 codes, float32)
ATTENTION_ROWS = 4096  # query positions per attention block: bounds the score matrix at any grid size
HEADER_LIMIT = 16 << 20  # the largest data.pkl / safetensors header the detector reads (bytes)
LEGACY_HEAD = 4 << 20  # bytes of a legacy file read for names (the release's names take ~60 kB)
# torch.save's pre-zip ("legacy") files open with this pickled magic number
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


# ----------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class MoVQConfig:
    """What the network is, read off a state dict (``infer_movq_config``)."""

    n_embed: int
    embed_dim: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int  # per encoder level; the decoder has one more
    z_channels: int
    encoder_attn: tuple[bool, ...]  # per level, shallowest first: attention after each res block
    decoder_attn: tuple[bool, ...]  # per level, indexed like the encoder's
    resample_with_conv: bool = True
    zq_conv: bool = False  # a 3x3 conv on the enlarged codes inside each spatial norm (MoVQ's add_conv)
    in_channels: int = 3
    out_channels: int = 3

    @property
    def downsample(self) -> int:
        return downsample_of(self.ch_mult)

    @property
    def widths(self) -> list[int]:
        return [self.ch * m for m in self.ch_mult]

    def codebook_spec(self) -> TamingSpec:
        """The same network as a ``TamingSpec``, for taming's codebook (``quantize.embedding``): plain
        rows, nearest codes by the reference's float32 distances in blocks of ``DISTANCE_ROWS``."""
        return TamingSpec(codebook_size=self.n_embed, embed_dim=self.embed_dim, ch=self.ch, ch_mult=self.ch_mult,
                          num_res_blocks=self.num_res_blocks, z_channels=self.z_channels,
                          encoder_attn=self.encoder_attn, decoder_attn=self.decoder_attn,
                          resample_with_conv=self.resample_with_conv, float32_distances=True,
                          distance_rows=DISTANCE_ROWS)

    def summary(self) -> str:
        attn = lambda flags: [i for i, a in enumerate(flags) if a]  # noqa: E731
        return (f"ch {self.ch}, ch_mult {list(self.ch_mult)}, num_res_blocks {self.num_res_blocks}, "
                f"attention at encoder levels {attn(self.encoder_attn)} / decoder levels {attn(self.decoder_attn)}, "
                f"z_channels {self.z_channels}, embed_dim {self.embed_dim}, n_embed {self.n_embed}")


# The 270M release, as its official config builds it (resolution 256, attn_resolutions [32]).
RELEASE_270M = MoVQConfig(n_embed=16384, embed_dim=4, ch=256, ch_mult=(1, 2, 2, 4), num_res_blocks=2, z_channels=4,
                          encoder_attn=(False, False, False, True), decoder_attn=(False, False, False, True))


# ----------------------------------------------------------------------------- decoder blocks
class SpatialNorm(nn.Module):
    """The decoder's norm: ``norm_layer(x) * conv_y(c) + conv_b(c)``, where ``norm_layer`` is an
    ordinary GroupNorm (with its own affine weights) and ``c`` the code vectors enlarged to the
    feature map's size by nearest neighbour (each code covers a square of pixels), passed
    through ``conv`` first when the file has one. Scale and shift thus vary per pixel."""

    def __init__(self, channels: int, code_dim: int, with_conv: bool):
        super().__init__()
        self.norm_layer = group_norm(channels)
        if with_conv:
            self.conv = conv3x3(code_dim, code_dim)
        self.conv_y = nn.Conv2d(code_dim, channels, kernel_size=1)
        self.conv_b = nn.Conv2d(code_dim, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(codes, size=x.shape[-2:], mode="nearest")
        if hasattr(self, "conv"):
            cond = self.conv(cond)
        return self.norm_layer(x) * self.conv_y(cond) + self.conv_b(cond)


class ModulatedResnetBlock(nn.Module):
    """The taming res block with both norms spatial: norm-swish-conv twice, plus a 1x1
    projection of the skip path when the width changes."""

    def __init__(self, in_ch: int, out_ch: int, code_dim: int, zq_conv: bool):
        super().__init__()
        self.norm1, self.conv1 = SpatialNorm(in_ch, code_dim, zq_conv), conv3x3(in_ch, out_ch)
        self.norm2, self.conv2 = SpatialNorm(out_ch, code_dim, zq_conv), conv3x3(out_ch, out_ch)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x, codes)))
        h = self.conv2(swish(self.norm2(h, codes)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(C)) v for [1, 1, N, C] tensors, ``ATTENTION_ROWS`` queries at a time:
    each query row sees every key, so the blocks give the single-call result, while the score
    matrix held at once stays at most ``ATTENTION_ROWS`` x N (a 96x96 grid has N = 9216)."""
    if q.shape[-2] <= ATTENTION_ROWS:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(rows, k, v) for rows in q.split(ATTENTION_ROWS, dim=-2)], dim=-2)


class ModulatedAttnBlock(nn.Module):
    """Single-head self-attention over all pixels (1x1 convs as projections) after a spatial norm."""

    def __init__(self, channels: int, code_dim: int, zq_conv: bool):
        super().__init__()
        self.norm = SpatialNorm(channels, code_dim, zq_conv)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, kernel_size=1) for _ in range(4))

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x, codes)
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = attend(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class PlainAttnBlock(AttnBlock):
    """The encoder's attention: taming's block, with the score matrix bounded like the decoder's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        return x + self.proj_out(attend(q, k, v).transpose(-1, -2).reshape(b, c, h, w))


# ----------------------------------------------------------------------------- encoder and decoder
class EncoderMiddle(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = PlainAttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class EncoderLevel(nn.Module):
    """``block.{j}`` res blocks, each followed by ``attn.{j}`` when the level has attention,
    then ``downsample`` on every level but the deepest."""

    def __init__(self, in_ch: int, out_ch: int, n_res: int, with_attn: bool, down: bool, with_conv: bool):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(n_res))
        self.attn = nn.ModuleList(PlainAttnBlock(out_ch) for _ in range(n_res if with_attn else 0))
        if down:
            self.downsample = Downsample(out_ch, with_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        return self.downsample(x) if hasattr(self, "downsample") else x


class MoVQEncoder(nn.Module):
    """Pixels in [-1, 1] -> z_channels latents: taming's encoder (plain GroupNorms)."""

    def __init__(self, config: MoVQConfig):
        super().__init__()
        widths, last = config.widths, len(config.ch_mult) - 1
        ins = [config.ch] + widths[:-1]
        self.conv_in = conv3x3(config.in_channels, config.ch)
        self.down = nn.ModuleList(
            EncoderLevel(ins[i], widths[i], config.num_res_blocks, config.encoder_attn[i], i != last,
                         config.resample_with_conv) for i in range(len(widths)))
        self.mid = EncoderMiddle(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = conv3x3(widths[-1], config.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class DecoderMiddle(nn.Module):
    def __init__(self, channels: int, code_dim: int, zq_conv: bool):
        super().__init__()
        self.block_1 = ModulatedResnetBlock(channels, channels, code_dim, zq_conv)
        self.attn_1 = ModulatedAttnBlock(channels, code_dim, zq_conv)
        self.block_2 = ModulatedResnetBlock(channels, channels, code_dim, zq_conv)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x, codes), codes), codes)


class DecoderLevel(nn.Module):
    """``block.{j}`` modulated res blocks (one more than the encoder's), each followed by
    ``attn.{j}`` when the level has attention, then ``upsample`` on every level but the shallowest."""

    def __init__(self, in_ch: int, out_ch: int, n_res: int, with_attn: bool, up: bool, config: MoVQConfig):
        super().__init__()
        dim, zq_conv = config.embed_dim, config.zq_conv
        self.block = nn.ModuleList(ModulatedResnetBlock(in_ch if j == 0 else out_ch, out_ch, dim, zq_conv)
                                   for j in range(n_res))
        self.attn = nn.ModuleList(ModulatedAttnBlock(out_ch, dim, zq_conv) for _ in range(n_res if with_attn else 0))
        if up:
            self.upsample = Upsample(out_ch, config.resample_with_conv)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x, codes)
            if len(self.attn):
                x = self.attn[j](x, codes)
        return self.upsample(x) if hasattr(self, "upsample") else x


class MoVQDecoder(nn.Module):
    """Latents + the code vectors they came from -> pixels in about [-1, 1]. ``up`` is indexed
    by level (shallowest first) as in the file, and run deepest first."""

    def __init__(self, config: MoVQConfig):
        super().__init__()
        widths, dim, zq_conv = config.widths, config.embed_dim, config.zq_conv
        self.conv_in = conv3x3(config.z_channels, widths[-1])
        self.mid = DecoderMiddle(widths[-1], dim, zq_conv)
        # level i reads the width of level i + 1 (the deepest reads its own): data flows deepest first
        ins = widths[1:] + [widths[-1]]
        self.up = nn.ModuleList(
            DecoderLevel(ins[i], widths[i], config.num_res_blocks + 1, config.decoder_attn[i], i != 0, config)
            for i in range(len(widths)))
        self.norm_out = SpatialNorm(widths[0], dim, zq_conv)
        self.conv_out = conv3x3(widths[0], config.out_channels)

    def forward(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z), codes)
        for level in reversed(self.up):
            h = level(h, codes)
        return self.conv_out(swish(self.norm_out(h, codes)))


# ----------------------------------------------------------------------------- the tokenizer
class MoVQGAN(nn.Module):
    """Codes <-> images with SBER-MoVQGAN (frozen once loaded); implements ``base.VQ``.

    Images are decoded and encoded one at a time: at 768 px a 270M decoder holds gigabytes of
    activations per image, and attention runs over the whole code grid (96x96 = 9216 positions).
    """

    vq_name = "MoVQGAN"
    truncates_to_uint8 = False  # Lumina-mGPT 2.0 writes ((x + 1) * 127.5).round()

    def __init__(self, config: MoVQConfig, source_path: str | None = None):
        super().__init__()
        self.config = config
        self.source_path: str | None = source_path  # set by the loader, for messages and UIs
        self.encoder = MoVQEncoder(config)
        self.decoder = MoVQDecoder(config)
        self.quantize = VectorQuantizer(config.codebook_spec())  # taming's: float32 distances, in blocks
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def device(self) -> torch.device:
        return self.quantize.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quantize.embedding.weight.dtype

    def code_vectors(self) -> torch.Tensor:
        """[codes, embed_dim]: the codebook rows, which the decoder reads (twice: through
        ``post_quant_conv`` and in every spatial norm)."""
        return self.quantize.embedding.weight

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, h, w] codebook ids -> float32 images [B, 3, h*ds, w*ds] in [0, 1] (ds 8 in the release)."""
        check_code_grid(codes, self.codebook_size, self.vq_name)
        codes = codes.to(device=self.device, dtype=torch.long)
        images = []
        for grid in codes.split(1):
            vectors = self.quantize.lookup(grid)
            pixels = self.decoder(self.post_quant_conv(vectors), vectors)
            # clamp to [-1, 1], then map to [0, 1] (the same values as mapping first, then clamping)
            images.append((pixels.float().clamp(-1.0, 1.0) + 1.0) / 2.0)
        return torch.cat(images)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> codebook ids [B, H/ds, W/ds] (long)."""
        check_image_batch(images, self.downsample, self.vq_name)
        x = images.to(device=self.device, dtype=self.dtype) * 2 - 1
        return torch.cat([self.quantize.nearest(self.quant_conv(self.encoder(one))) for one in x.split(1)])


# ----------------------------------------------------------------------------- detection
def _mentions_movq(blob: bytes | Iterable[str]) -> bool:
    """Key names (a pickle's bytes or a safetensors header's names) that only a MoVQ decoder
    has, and none of Emu3's temporal blocks (its VisionTokenizer shares the spatial norms)."""
    if isinstance(blob, bytes):
        return SPATIAL_NORM_KEY.encode() in blob and not any(m.encode() in blob for m in EMU3_MARKS)
    names = list(blob)
    return SPATIAL_NORM_KEY in names and not any(m in n for n in names for m in EMU3_MARKS)


def _safetensors_names(path: Path) -> list[str]:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return []
        size = struct.unpack("<Q", head)[0]
        if size > HEADER_LIMIT:
            return []
        header = json.loads(f.read(size))
    return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else []


def _pickle_bytes(path: Path) -> bytes:
    """The pickled part of a torch file, as bytes (never unpickled): the ``data.pkl`` member of
    a zip-format file, or the head of a legacy-format one (its pickle precedes the tensor data)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next((m for m in archive.infolist() if m.filename.endswith("data.pkl")), None)
            if member is None or member.file_size > HEADER_LIMIT:
                return b""
            return archive.read(member)
    with open(path, "rb") as f:
        if f.read(len(LEGACY_MAGIC)) != LEGACY_MAGIC:
            return b""
        return f.read(LEGACY_HEAD)


def is_movqgan_file(path: str | os.PathLike) -> bool:
    """Cheap check for ``load_vq``: a .ckpt / .pt / .pth / .safetensors file whose name says
    movqgan, or whose tensor names (the pickle's bytes or the safetensors header, read without
    unpickling or loading any tensor) include a MoVQ decoder's spatial norms."""
    try:
        path = Path(path).expanduser()
        if not path.is_file() or path.suffix.lower() not in SUFFIXES:
            return False
        if NAME_MARK in path.name.lower():
            return True
        if path.suffix.lower() == ".safetensors":
            return _mentions_movq(_safetensors_names(path))
        return _mentions_movq(_pickle_bytes(path))
    except (OSError, ValueError, zipfile.BadZipFile, struct.error, UnicodeDecodeError):
        return False


# ----------------------------------------------------------------------------- reading
def read_movq_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a MoVQGAN file: a bare state dict (the release), ``{"state_dict": ...}``
    (a Lightning checkpoint) or ``.safetensors``. Pickles are read with ``weights_only=True``
    (they cannot run code), memory-mapped when in torch's zip format."""
    path = Path(path)
    if not path.is_file():
        raise ZipARError(f"MoVQGAN VQ not found: '{path}' is not a file; check the path, or {RELEASE_HINT}.")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types
            raise ZipARError(f"cannot read '{path}' as safetensors ({exc}); the file may be truncated: re-download "
                             f"it, or {RELEASE_HINT}.") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if refused_by_weights_only(exc):
            raise ZipARError(
                f"refusing to load '{path}': it pickles Python objects other than tensors and plain values "
                f"({load_error_detail(exc)}), and ZipAR never unpickles code from a checkpoint. The published "
                f"{RELEASE_FILE} holds only weights: re-download it, or re-save just the weights with "
                "torch.save(state_dict, path).") from exc
        raise ZipARError(f"cannot read '{path}' as a torch checkpoint ({load_error_detail(exc)}); the download may "
                         f"be incomplete: re-download it, or {RELEASE_HINT}.") from exc
    except Exception as exc:
        raise ZipARError(f"cannot read '{path}' as a torch checkpoint ({load_error_detail(exc)}); the download may "
                         f"be incomplete: re-download it, or {RELEASE_HINT}.") from exc
    try:
        return unwrap_state_dict(obj, f"'{path}'")
    except ZipARError as exc:
        raise ZipARError(f"'{path}' holds no state dict (a dict of tensors, bare or under 'state_dict'); it is not "
                         f"a MoVQGAN checkpoint: {RELEASE_HINT}.") from exc


# ----------------------------------------------------------------------------- architecture from the weights
def _not_movq(path: Path, what: str) -> ZipARError:
    return ZipARError(f"'{path}' {what}; it is not a MoVQGAN checkpoint: {RELEASE_HINT}.")


def _reject_foreign(sd: dict[str, torch.Tensor], path: Path) -> None:
    """Clear words for another model's file, before any shape is read."""
    keys = list(sd)
    if any(m in k for k in keys for m in EMU3_MARKS):
        raise _not_movq(path, "is Emu3's VQ tokenizer (it has temporal time_res_stack / time_conv blocks); load the "
                              "BAAI/Emu3-VisionTokenizer folder for Emu3-Gen")
    if any(k.startswith(LLAMAGEN_MARKS) for k in keys):
        raise _not_movq(path, "is a LlamaGen VQ tokenizer (it has encoder.conv_blocks.* tensors)")
    if "tok_embeddings.weight" in sd or any(k.startswith(("model.layers.", "layers.")) for k in keys):
        raise _not_movq(path, "is a language model (an AR model), not a VQ; pick it as the AR model")
    missing = [k for k in CORE_KEYS if k not in sd]
    if missing:
        example = next(iter(sorted(keys)), "")
        raise _not_movq(path, f"has no {', '.join(missing)} (its first tensor is '{example}')")
    if SPATIAL_NORM_KEY not in sd:
        if "decoder.mid.block_1.norm1.weight" in sd:
            raise _not_movq(path, "is a taming VQGAN whose decoder has plain GroupNorms (such as Meta's Chameleon "
                                  "vqgan.ckpt, which needs its vqgan.yaml beside it), not MoVQ's spatial norms")
        raise _not_movq(path, f"has no spatial-norm tensor {SPATIAL_NORM_KEY}")


def _shape(sd: dict[str, torch.Tensor], key: str, ndim: int, path: Path) -> tuple[int, ...]:
    tensor = sd.get(key)
    if tensor is None:
        raise _not_movq(path, f"has no tensor '{key}'")
    if tensor.ndim != ndim:
        raise _not_movq(path, f"has tensor '{key}' of shape {list(tensor.shape)} (expected {ndim} dimensions)")
    return tuple(tensor.shape)


def _numbered(keys: list[str], prefix: str, path: Path) -> int:
    """How many numbered blocks ``prefix`` + N. the weights hold, each of 0..N-1 present: the
    network built from the count then costs no more than the file's own size, whatever its names."""
    count = indexed_count(keys, prefix)
    held = {k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)}
    if held != {str(i) for i in range(count)}:
        raise _not_movq(path, f"numbers its '{prefix}N' blocks with gaps (0..{count - 1} expected)")
    return count


def infer_movq_config(sd: dict[str, torch.Tensor], path: str | os.PathLike = RELEASE_FILE) -> MoVQConfig:
    """The architecture a MoVQGAN state dict describes, from its tensor names and shapes only
    (no tensor is read): widths from the encoder's first conv of each level, levels and blocks
    from the numbered names, attention where ``attn.0`` exists, sizes from the codebook and the
    quant convs. Whether every tensor fits is checked afterwards, against the built network."""
    path = Path(path)
    _reject_foreign(sd, path)
    keys = list(sd)
    n_embed, embed_dim = _shape(sd, "quantize.embedding.weight", 2, path)
    ch, in_channels = _shape(sd, "encoder.conv_in.weight", 4, path)[:2]
    z_channels = _shape(sd, "quant_conv.weight", 4, path)[1]
    out_channels = _shape(sd, "decoder.conv_out.weight", 4, path)[0]
    levels = _numbered(keys, "encoder.down.", path)
    blocks = _numbered(keys, "encoder.down.0.block.", path)
    if levels == 0 or blocks == 0:
        raise _not_movq(path, "has no encoder.down.0.block.0 tensors")
    widths = [_shape(sd, f"encoder.down.{i}.block.0.conv1.weight", 4, path)[0] for i in range(levels)]
    if any(w % ch for w in widths):
        raise _not_movq(path, f"has level widths {widths} that are not multiples of its base width {ch}")
    if any(w % GROUPS for w in [ch, *widths]):
        raise _not_movq(path, f"has widths {[ch, *widths]}, not all multiples of {GROUPS} (the GroupNorm group count)")
    if (in_channels, out_channels) != (3, 3):
        raise _not_movq(path, f"reads {in_channels}-channel and writes {out_channels}-channel images (RGB has 3)")
    return MoVQConfig(
        n_embed=n_embed, embed_dim=embed_dim, ch=ch, ch_mult=tuple(w // ch for w in widths), num_res_blocks=blocks,
        z_channels=z_channels,
        encoder_attn=tuple(f"encoder.down.{i}.attn.0.q.weight" in sd for i in range(levels)),
        decoder_attn=tuple(f"decoder.up.{i}.attn.0.q.weight" in sd for i in range(levels)),
        resample_with_conv=levels == 1 or "encoder.down.0.downsample.conv.weight" in sd,
        zq_conv="decoder.norm_out.conv.weight" in sd)


def check_movq_state_dict(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], config: MoVQConfig,
                          path: Path) -> dict[str, torch.Tensor]:
    """The inference tensors of ``sd`` (``loss.*`` and ``ema_*`` dropped), or a one-line ZipARError
    naming the first missing / unexpected / wrong-shaped tensor."""
    weights = {k: v for k, v in sd.items() if not k.startswith(SKIPPED_PREFIXES)}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"tensor '{k}' is {list(weights[k].shape)} where the rest of the file implies {list(expected[k].shape)}"
             for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    problems = []
    if wrong:
        more = f" (and {len(wrong) - 1} more shape mismatches)" if len(wrong) > 1 else ""
        problems.append(wrong[0] + more)
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {key_sample(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors a MoVQGAN has no place for, e.g. {key_sample(unexpected)}")
    if problems:
        raise ZipARError(f"MoVQGAN weights '{path}' are incomplete or damaged (read as {config.summary()}): "
                         f"{'; '.join(problems)}. Re-download the file, or {RELEASE_HINT}.")
    return weights


def movqgan_from_state_dict(sd: dict[str, torch.Tensor], path: str | os.PathLike = RELEASE_FILE,
                            device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> MoVQGAN:
    """A ``MoVQGAN`` holding exactly the tensors of ``sd``: built on the meta device (the release
    has ~270M parameters; a random init would be thrown away), filled with
    ``load_state_dict(assign=True)``, then moved and cast."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ZipARError(f"the MoVQGAN VQ needs a floating-point dtype (float32, bfloat16, float16); got {dtype!r}.")
    path = Path(path)
    config = infer_movq_config(sd, path)
    with torch.device("meta"):
        model = MoVQGAN(config, source_path=str(path))
    weights = check_movq_state_dict(sd, model.state_dict(), config, path)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # the check above should make this unreachable
        first = str(exc).strip().splitlines()[0]
        raise ZipARError(f"MoVQGAN weights '{path}' do not load ({first}); {RELEASE_HINT}.") from exc
    model = model.to(device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


def load_movqgan(path: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> MoVQGAN:
    """Load SBER-MoVQGAN (Lumina-mGPT 2.0's image tokenizer) from ``movqgan_270M.ckpt`` or the
    same tensors in another container (see ``read_movq_state_dict``)."""
    path = Path(path).expanduser()
    return movqgan_from_state_dict(read_movq_state_dict(path), path, device=device, dtype=dtype)


FORMAT = VQFormat(
    name="ai-forever's SBER-MoVQGAN, the image tokenizer of Lumina-mGPT 2.0",
    files=f"SBER-MoVQGAN for Lumina-mGPT 2.0 ({RELEASE_FILE} from ai-forever/MoVQGAN)",
    detect=is_movqgan_file, load=load_movqgan)
