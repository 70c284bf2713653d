"""Tiny Emu3 VQ tokenizers written to disk in both published layouts, for the loader tests.

* transformers layout: a whole tiny ``Emu3ForConditionalGeneration`` saved with
  ``save_pretrained``, so the folder has exactly the files and key prefix a real
  BAAI/Emu3-Gen-hf download has (config.json with a vq_config, model*.safetensors).
* original layout (BAAI/Emu3-VisionTokenizer): the same VQ tensors under the original
  module names, attention projections as 1x1 convs, and an original-style config.json.

The inverse renaming here is written independently of ``zipar.vq.emu3`` (regexes,
HF -> original) so a loader bug is not mirrored by a fixture bug; the test file also pins
the resulting original key set against the original architecture.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

# base 32 keeps GroupNorm(32) valid; three levels give 4x downsampling; attention at the
# deepest level (width 32 * 2 = hidden_size), as in the release's attn_resolutions=[3].
TINY_VQ = dict(
    codebook_size=64, embed_dim=4, latent_channels=4, double_latent=False, in_channels=3, out_channels=3,
    temporal_downsample_factor=2, base_channels=32, channel_multiplier=[1, 1, 2], num_res_blocks=1,
    attn_resolutions=[2], hidden_size=64, num_attention_heads=1,
)
TINY_TEXT = dict(
    vocab_size=96, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
# Field names of the original Emu3VisionVQConfig (emu3/tokenizer/configuration_emu3visionvq.py).
ORIGINAL_CONFIG = {
    "architectures": ["Emu3VisionVQModel"],
    "auto_map": {"AutoConfig": "configuration_emu3visionvq.Emu3VisionVQConfig",
                 "AutoModel": "modeling_emu3visionvq.Emu3VisionVQModel"},
    "model_type": "Emu3VisionVQ",
    "codebook_size": 64, "embed_dim": 4, "z_channels": 4, "double_z": False, "in_channels": 3, "out_channels": 3,
    "temporal_downsample_factor": 2, "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1,
    "attn_resolutions": [2], "dropout": 0.0, "torch_dtype": "float32",
}
ORIGINAL_PREPROCESSOR = {"image_processor_type": "Emu3VisionVQImageProcessor", "image_mean": [0.5, 0.5, 0.5],
                         "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255, "spatial_factor": 8}

# transformers name -> original name, applied in order (HF -> original).
_TO_ORIGINAL = [
    (r"\.down_block\.down\.", ".down."),
    (r"\.up_block\.up\.", ".up."),
    (r"\.middle_block\.attn_norm\.", ".mid.attn_1.norm."),
    (r"\.middle_block\.", ".mid."),
    (r"\.attn_norms\.(\d+)\.", r".attn.\1.norm."),
    (r"\.q_proj\.", ".q."),
    (r"\.k_proj\.", ".k."),
    (r"\.v_proj\.", ".v."),
    (r"\.out_proj\.", ".proj_out."),
]


def tiny_emu3_config():
    from transformers import Emu3Config

    return Emu3Config(vq_config=dict(TINY_VQ), text_config=dict(TINY_TEXT), vocabulary_map={"<image>": 3})


def _randomise_batchnorm(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Fresh BatchNorm has mean 0 / var 1, which makes eval and train look alike on
    zero-mean data; give every temporal BatchNorm its own statistics and affine terms."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm3d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            bn.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            bn.weight.data.copy_(1 + torch.randn(n, generator=gen) * 0.2)
            bn.bias.data.copy_(torch.randn(n, generator=gen) * 0.2)
            bn.num_batches_tracked.fill_(11)


def make_tiny_emu3(seed: int = 0):
    """A tiny random Emu3ForConditionalGeneration in eval mode."""
    from transformers import Emu3ForConditionalGeneration

    torch.manual_seed(seed)
    model = Emu3ForConditionalGeneration(tiny_emu3_config()).eval()
    with torch.no_grad():
        _randomise_batchnorm(model.model.vqmodel, torch.Generator().manual_seed(seed + 1))
    return model


def vq_state_dict(model) -> dict[str, torch.Tensor]:
    """The VQ tensors of a tiny model under transformers' Emu3VQVAE names (detached copies)."""
    return {k: v.detach().clone() for k, v in model.model.vqmodel.state_dict().items()}


def write_hf_folder(path: Path, model, max_shard_size: str | None = None) -> Path:
    """``save_pretrained`` output: the real BAAI/Emu3-Gen-hf layout (optionally sharded)."""
    path = Path(path)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return path


def hf_to_original_key(key: str) -> str:
    for pattern, repl in _TO_ORIGINAL:
        key = re.sub(pattern, repl, key)
    return key


def to_original_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original key names; attention projections back to [C, C, 1, 1] conv kernels."""
    out = {}
    for key, value in sd.items():
        name = hf_to_original_key(key)
        if re.search(r"\.(q|k|v|proj_out)\.weight$", name):
            value = value[:, :, None, None]
        out[name] = value.contiguous()
    return out


def write_original_folder(path: Path, sd: dict[str, torch.Tensor], config: dict | None = None,
                          drop_batch_counters: bool = False) -> Path:
    """A BAAI/Emu3-VisionTokenizer-style folder holding ``sd`` (transformers names) renamed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    original = to_original_state_dict(sd)
    if drop_batch_counters:
        original = {k: v for k, v in original.items() if not k.endswith("num_batches_tracked")}
    save_file(original, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config or ORIGINAL_CONFIG, indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps(ORIGINAL_PREPROCESSOR, indent=2))
    return path
