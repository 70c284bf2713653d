"""LlamaGen's VQ image tokenizer (VQ-16 / VQ-8) under the official state-dict key names.

The AR model only produces a grid of codebook ids; this module turns such a grid into
pixels (``decode_codes``) and images back into ids (``encode_images``). The module tree
mirrors the released checkpoints (``encoder.conv_blocks.{i}.res.{j}...``, ``quantize...``)
so ``vq_ds16_c2i.pt``, ``vq_ds16_t2i.pt`` and ``vq_ds8_c2i.pt`` load strictly, and the
architecture is read back from tensor shapes because the files carry no usable config.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..io.checkpoint import read_state_dict
from ..errors import ZipARError

USAGE_KEY = "quantize.codebook_used"  # training-time usage log; present in the official files, unused here
USAGE_LEN = 65536
REQUIRED_KEYS = ("quantize.embedding.weight", "encoder.conv_in.weight", "decoder.conv_in.weight")


@dataclass(frozen=True)
class VQConfig:
    codebook_size: int
    codebook_embed_dim: int
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    num_res_blocks: int = 2
    l2_norm: bool = True  # every release looks codes up in the L2-normalised codebook

    @property
    def downsample(self) -> int:
        """Pixels per code along each side: one stride-2 step between consecutive levels."""
        return 2 ** (len(self.ch_mult) - 1)


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
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right only."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution: res blocks (each followed by attention at the deepest level), then an
    optional ``downsample`` or ``upsample`` attribute, named as in the checkpoints."""

    def __init__(self, in_ch: int, out_ch: int, n_res: int, with_attn: bool):
        super().__init__()
        self.res = nn.ModuleList(ResnetBlock(in_ch if j == 0 else out_ch, out_ch) for j in range(n_res))
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(n_res if with_attn else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, res in enumerate(self.res):
            x = res(x)
            if len(self.attn):
                x = self.attn[j](x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


def middle(channels: int) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels), AttnBlock(channels), ResnetBlock(channels, channels)])


class Encoder(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mults = config.ch, config.ch_mult
        self.conv_in = conv3x3(3, ch)
        self.conv_blocks = nn.ModuleList()
        width = ch
        for i, mult in enumerate(mults):
            deepest = i == len(mults) - 1
            level = Level(width, ch * mult, config.num_res_blocks, with_attn=deepest)
            width = ch * mult
            if not deepest:
                level.downsample = Downsample(width)
            self.conv_blocks.append(level)
        self.mid = middle(width)
        self.norm_out = group_norm(width)
        self.conv_out = conv3x3(width, config.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in [*self.conv_blocks, *self.mid]:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Mirror of the encoder, deepest level first, with one extra res block per level."""

    def __init__(self, config: VQConfig):
        super().__init__()
        ch, mults = config.ch, config.ch_mult
        width = ch * mults[-1]
        self.conv_in = conv3x3(config.z_channels, width)
        self.mid = middle(width)
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(mults))):
            level = Level(width, ch * mults[i], config.num_res_blocks + 1, with_attn=i == len(mults) - 1)
            width = ch * mults[i]
            if i != 0:
                level.upsample = Upsample(width)
            self.conv_blocks.append(level)
        self.norm_out = group_norm(width)
        self.conv_out = conv3x3(width, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in [*self.mid, *self.conv_blocks]:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, embed_dim: int, l2_norm: bool):
        super().__init__()
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        # Kept only so the official files load strictly and re-save with the same keys.
        self.register_buffer("codebook_used", torch.zeros(USAGE_LEN))

    def codebook(self) -> torch.Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, H, W] ids -> [B, D, H, W] latents."""
        return self.codebook()[codes].permute(0, 3, 1, 2).contiguous()

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """[B, D, H, W] latents -> [B, H, W] ids of the closest codebook entries."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.l2_norm:
            flat = F.normalize(flat, p=2, dim=-1)
        codebook = self.codebook()
        # |z|^2 + |e|^2 - 2 z.e, written as LlamaGen does so that near-ties resolve the same way
        dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
        return dist.argmin(dim=1).reshape(b, h, w)


class VQModel(nn.Module):
    # How 8-bit files are written from [0, 1] pixels: LlamaGen's sampler rounds (torchvision's save_image);
    # Janus-Pro's official code, whose VQ is this network, truncates (set per instance by its loaders).
    truncates_to_uint8 = False

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.source_path: str | None = None  # set by load_vq, for messages and UIs
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.codebook_size, config.codebook_embed_dim, config.l2_norm)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, kernel_size=1)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample(self) -> int:
        return self.config.downsample

    def _weight(self) -> torch.Tensor:
        return self.quant_conv.weight  # any parameter: tells the model's device and dtype

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, H, W] codebook ids -> float32 images [B, 3, H*ds, W*ds] in [0, 1]."""
        if not isinstance(codes, torch.Tensor) or codes.ndim != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ZipARError(f"VQ decode expects codes shaped [batch, rows, cols]; got {shape}.")
        if codes.is_floating_point() or codes.dtype in (torch.bool, torch.complex64, torch.complex128):
            raise ZipARError(f"VQ decode expects integer token ids; got dtype {codes.dtype}.")
        if codes.numel():
            for bad in (codes.min().item(), codes.max().item()):
                if not 0 <= bad < self.codebook_size:
                    raise ZipARError(f"token id {bad} out of range for a VQ with {self.codebook_size} codes.")
        weight = self._weight()
        latents = self.quantize.lookup(codes.to(device=weight.device, dtype=torch.long))
        pixels = self.decoder(self.post_quant_conv(latents.to(weight.dtype)))
        return ((pixels.float() + 1) / 2).clamp_(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, h, w] in [0, 1] -> codebook ids [B, h/ds, w/ds]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ZipARError(f"VQ encode expects images shaped [batch, 3, height, width]; got {tuple(images.shape)}.")
        if not images.is_floating_point():
            raise ZipARError(f"VQ encode expects float images in [0, 1]; got dtype {images.dtype}.")
        h, w = images.shape[-2:]
        ds = self.downsample
        if h % ds or w % ds:
            raise ZipARError(f"image size {h}x{w} is not a multiple of the VQ downsampling factor {ds}; "
                             f"resize or crop it to multiples of {ds}.")
        weight = self._weight()
        x = images.to(device=weight.device, dtype=weight.dtype) * 2 - 1
        return self.quantize.nearest(self.quant_conv(self.encoder(x)))


def is_vq_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return all(k in sd for k in REQUIRED_KEYS)


def infer_vq_config(sd: dict[str, torch.Tensor]) -> VQConfig:
    """Read a VQConfig off the tensor shapes of an official (or re-saved) VQ checkpoint."""
    if not is_vq_state_dict(sd):
        if "tok_embeddings.weight" in sd:
            raise ZipARError(
                "this checkpoint looks like a LlamaGen GPT (AR model) checkpoint (it has tok_embeddings.weight), "
                "not a VQ image tokenizer. Give it to the AR model input and pick a VQ file (e.g. vq_ds16_c2i.pt) "
                "for the VQ input.")
        missing = [k for k in REQUIRED_KEYS if k not in sd]
        raise ZipARError(f"not a LlamaGen VQ tokenizer checkpoint: missing {', '.join(missing)}. "
                         "Expected a file like vq_ds16_c2i.pt, vq_ds16_t2i.pt or vq_ds8_c2i.pt.")

    def first_conv(level: int, block: int) -> str:
        return f"encoder.conv_blocks.{level}.res.{block}.conv1.weight"

    ch = sd["encoder.conv_in.weight"].shape[0]
    n_levels = next(i for i in range(len(sd) + 1) if first_conv(i, 0) not in sd)
    num_res_blocks = next(j for j in range(len(sd) + 1) if first_conv(0, j) not in sd)
    if n_levels == 0 or num_res_blocks == 0:
        raise ZipARError("VQ checkpoint has no encoder res blocks (encoder.conv_blocks.0.res.0...); "
                         "the file is incomplete or not a LlamaGen VQ.")
    widths = [sd[first_conv(i, 0)].shape[0] for i in range(n_levels)]
    if any(wd % ch for wd in widths):
        raise ZipARError(f"VQ encoder level widths {widths} are not multiples of its base width {ch}.")
    codebook_size, embed_dim = sd["quantize.embedding.weight"].shape
    z_channels = sd["decoder.conv_in.weight"].shape[1]  # the decoder reads z_channels-wide latents
    return VQConfig(codebook_size=codebook_size, codebook_embed_dim=embed_dim, ch=ch,
                    ch_mult=tuple(wd // ch for wd in widths), z_channels=z_channels, num_res_blocks=num_res_blocks)


def vq_from_state_dict(sd: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> VQModel:
    """Build the VQ the weights describe and load them strictly (only the usage log may be absent)."""
    config = infer_vq_config(sd)
    with torch.device("meta"):  # skip a throwaway random init of ~70M parameters
        model = VQModel(config)
    # Empty tensors on the target device and dtype; load_state_dict copies (and casts) into
    # them, so the model never aliases the caller's tensors.
    model = model.to_empty(device=device).to(dtype)
    sd = dict(sd)
    if USAGE_KEY not in sd or sd[USAGE_KEY].shape != (USAGE_LEN,):
        sd[USAGE_KEY] = torch.zeros(USAGE_LEN)
    floats = [k for k, v in sd.items() if k != USAGE_KEY and not v.is_floating_point()]
    if floats:
        raise ZipARError(f"VQ checkpoint tensor {floats[0]!r} holds {sd[floats[0]].dtype} values where weights must be "
                         "floating point; the file is damaged or not a LlamaGen VQ: re-download it.")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line or "Missing" in line or "Unexpected" in line),
                      lines[-1] if lines else "")
        raise ZipARError(f"VQ checkpoint does not match the LlamaGen VQ layout inferred from it ({detail}); the file is "
                         "damaged or another model: re-download the official VQ (vq_ds16_c2i.pt / vq_ds16_t2i.pt).") from None
    return model.eval().requires_grad_(False)


def load_vq(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> VQModel:
    """Load an official LlamaGen VQ file (.pt/.pth, any wrapper, or .safetensors)."""
    model = vq_from_state_dict(read_state_dict(path), device=device, dtype=dtype)
    model.source_path = str(path)
    return model
