"""LlamaGen's VQ image tokenizer (VQ-16 / VQ-8) under the official state-dict key names.

The network is the shared taming one (``zipar.vq.taming``), whose canonical names are the
released checkpoints' (``encoder.conv_blocks.{i}.res.{j}...``, ``quantize...``), so
``vq_ds16_c2i.pt``, ``vq_ds16_t2i.pt`` and ``vq_ds8_c2i.pt`` load strictly with no renaming.
What is LlamaGen's own lives here: the architecture is read back from tensor shapes, because
the files carry no usable config, and the file checks and their messages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ZipARError
from ..io.checkpoint import read_state_dict
from .base import VQFormat
from .taming import TamingSpec, TamingVQ, downsample_of

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
        return downsample_of(self.ch_mult)

    def spec(self) -> TamingSpec:
        """Every LlamaGen VQ puts attention after each res block of the deepest level only."""
        deepest = tuple(i == len(self.ch_mult) - 1 for i in range(len(self.ch_mult)))
        return TamingSpec(codebook_size=self.codebook_size, embed_dim=self.codebook_embed_dim, ch=self.ch,
                          ch_mult=self.ch_mult, num_res_blocks=self.num_res_blocks, z_channels=self.z_channels,
                          encoder_attn=deepest, decoder_attn=deepest, l2_norm=self.l2_norm, usage_len=USAGE_LEN)


class VQModel(TamingVQ):
    """LlamaGen's VQ: the taming network with attention at the deepest level only, resampling
    convs, the L2-normalised codebook and the usage log (``quantize.codebook_used``), whose
    ``state_dict()`` is exactly an official file's."""

    # How 8-bit files are written from [0, 1] pixels: LlamaGen's sampler rounds (torchvision's
    # save_image). Janus-Pro's official code, whose VQ is this network, truncates: its loader
    # (``zipar.vq.janus``) sets True on the instance.
    truncates_to_uint8 = False

    def __init__(self, config: VQConfig):
        super().__init__(config.spec())
        self.config = config


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


def is_vq_file(path: Path) -> bool:
    """Any file: LlamaGen's loader reads every checkpoint container and says what a file holds
    when it is not a LlamaGen VQ (a GPT, another model), so it is the loader of last resort."""
    return Path(path).is_file()


FORMAT = VQFormat(
    name="a LlamaGen VQ image tokenizer",
    files="LlamaGen VQ files (vq_ds16_c2i.pt, vq_ds16_t2i.pt, vq_ds8_c2i.pt, or .safetensors under the same names)",
    detect=is_vq_file, load=load_vq, catch_all=True)
