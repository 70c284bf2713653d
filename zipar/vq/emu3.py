"""Emu3-Gen's VQ image tokenizer (BAAI, MoVQ-style: 8x downsampling, 32768 codes).

Emu3-Gen samples a grid of codebook ids; this module turns such a grid into pixels
(``decode_codes``) and images back into ids (``encode_images``). The network is
transformers' own ``Emu3VQVAE`` so the pixels match what ``Emu3ForConditionalGeneration``
would produce; this file only finds, renames and checks the weights.

Users hold the tokenizer in one of two published layouts, and both are accepted:

* transformers format (``BAAI/Emu3-Gen-hf``): ``config.json`` with ``model_type`` "emu3"
  and a ``vq_config`` sub-dict, weights in ``model*.safetensors`` shards. The VQ tensors
  sit under ``vqmodel.``: transformers 5.x keeps them at ``model.vqmodel.`` in memory but
  ``save_pretrained`` maps that back to ``vqmodel.`` (checked with 5.23), as the published
  conversion did; ``model.vqmodel.`` is accepted too. The folder is ~17 GB, almost all of
  it the language model, so only the VQ tensors are read (via the index json if sharded).
* original format (``BAAI/Emu3-VisionTokenizer``): ``config.json`` with ``model_type``
  "Emu3VisionVQ" (a remote-code config, never executed here) and ``model.safetensors``
  under the original key names, renamed in memory by ``original_to_hf_key``.

transformers is imported inside functions so the rest of the package imports without it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ZipARError
from ..io import hf_folder
from ..io.block_counts import check_block_counts
from .base import VQFormat, check_code_grid, check_image_batch, key_sample, weights_prefix

HF_PREFIXES = ("vqmodel.", "model.vqmodel.")  # on disk / in memory; the first found wins
HF_MODEL_TYPE = "emu3"  # Emu3ForConditionalGeneration folder (config has a vq_config)
HF_VQ_MODEL_TYPE = "emu3_vqgan"  # a bare Emu3VQVAE saved on its own (keys without prefix)
ORIGINAL_MODEL_TYPE = "Emu3VisionVQ"
VQ_MODEL_TYPES = (HF_MODEL_TYPE, HF_VQ_MODEL_TYPE, ORIGINAL_MODEL_TYPE)  # folders that hold the VQ
ORIGINAL_LM_MODEL_TYPE = "Emu3"  # BAAI/Emu3-Gen: the language model alone, its VQ in another folder
PREPROCESSOR_FILE = "preprocessor_config.json"
RELEASE_MEAN_STD = 0.5  # Emu3-VisionTokenizer's image processor: pixels in [-1, 1]
FIX_HINT = ("use the complete, unmodified BAAI/Emu3-Gen-hf or BAAI/Emu3-VisionTokenizer folder "
            "(config.json and the .safetensors files from the same download)")

# Original config field -> (Emu3VQVAEConfig field, default of the original config class).
ORIGINAL_CONFIG_FIELDS = {
    "codebook_size": ("codebook_size", 32768),
    "embed_dim": ("embed_dim", 4),
    "z_channels": ("latent_channels", 4),
    "double_z": ("double_latent", False),
    "in_channels": ("in_channels", 3),
    "out_channels": ("out_channels", 3),
    "temporal_downsample_factor": ("temporal_downsample_factor", 4),
    "ch": ("base_channels", 256),
    "ch_mult": ("channel_multiplier", [1, 2, 2, 4]),
    "num_res_blocks": ("num_res_blocks", 2),
    "attn_resolutions": ("attn_resolutions", [3]),
}

# Original module names -> transformers module names (see original_to_hf_key).
SECTIONS = {"down": "down_block.down", "up": "up_block.up", "mid": "middle_block"}
ATTN_PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "proj_out": "out_proj"}


# ----------------------------------------------------------------------------- key mapping
def _rename_mid(rest: list[str]) -> list[str]:
    """``mid.attn_1.norm.*`` -> ``attn_norm.*``; ``mid.attn_1.q.*`` -> ``attn_1.q_proj.*``."""
    if len(rest) > 2 and rest[0] == "attn_1":
        if rest[1] == "norm":
            return ["attn_norm", *rest[2:]]
        if rest[1] in ATTN_PROJECTIONS:
            return ["attn_1", ATTN_PROJECTIONS[rest[1]], *rest[2:]]
    return rest


def _rename_level(rest: list[str]) -> list[str]:
    """Inside one resolution level: ``attn.{j}.norm.*`` -> ``attn_norms.{j}.*`` and
    ``attn.{j}.q.*`` -> ``attn.{j}.q_proj.*``; blocks and up/downsample keep their names."""
    if len(rest) > 3 and rest[0] == "attn":
        index, name, tail = rest[1], rest[2], rest[3:]
        if name == "norm":
            return ["attn_norms", index, *tail]
        if name in ATTN_PROJECTIONS:
            return ["attn", index, ATTN_PROJECTIONS[name], *tail]
    return rest


def original_to_hf_key(key: str) -> str:
    """One Emu3-VisionTokenizer state-dict key -> the name inside transformers' ``Emu3VQVAE``.

    The two trees differ only in grouping: transformers wraps the level lists in
    ``down_block`` / ``up_block``, calls ``mid`` ``middle_block``, and lifts attention norms
    out of the attention blocks. Everything else (quantize, quant convs, temporal stacks,
    conv_in/out, norm_out, resnet blocks) already has the same name.
    """
    parts = key.split(".")
    if len(parts) < 3 or parts[0] not in ("encoder", "decoder") or parts[1] not in SECTIONS:
        return key
    head = [parts[0], SECTIONS[parts[1]]]
    if parts[1] == "mid":
        return ".".join(head + _rename_mid(parts[2:]))
    return ".".join(head + [parts[2]] + _rename_level(parts[3:]))


def _is_attention_projection(hf_key: str) -> bool:
    return hf_key.endswith(".weight") and hf_key.split(".")[-2] in ATTN_PROJECTIONS.values()


def original_to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key, and turn the 1x1-conv attention weights [C, C, 1, 1] into the
    [C, C] matrices of transformers' linear projections (same numbers, no copy)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new_key = original_to_hf_key(key)
        if _is_attention_projection(new_key) and value.ndim == 4 and tuple(value.shape[2:]) == (1, 1):
            value = value.reshape(value.shape[0], value.shape[1])
        out[new_key] = value
    return out


# ----------------------------------------------------------------------------- folder reading
def _resolve_folder(source: str | os.PathLike) -> Path:
    """Accept the folder itself, or any file inside it (config.json, a shard)."""
    path = Path(source).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ZipARError(f"Emu3 VQ folder '{path}' does not exist; point to the downloaded "
                         "BAAI/Emu3-Gen-hf or BAAI/Emu3-VisionTokenizer folder.")
    return path




def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ZipARError(f"no config.json in '{folder}'; {FIX_HINT}.")
    return hf_folder.read_json(path, "config")


def detect_format(config: dict[str, Any], folder: Path | str = "") -> str:
    """'hf' (Emu3 model folder), 'hf_vq' (bare Emu3VQVAE) or 'original' (VisionTokenizer).

    ``model_type`` decides when present; otherwise the field names do (``vq_config`` is
    transformers', ``ch``/``ch_mult``/``z_channels`` are the original config's).
    """
    model_type = config.get("model_type")
    if model_type == HF_MODEL_TYPE or (model_type is None and "vq_config" in config):
        return "hf"
    if model_type == HF_VQ_MODEL_TYPE or (model_type is None and "channel_multiplier" in config):
        return "hf_vq"
    if model_type == ORIGINAL_MODEL_TYPE or (model_type is None and "ch_mult" in config):
        return "original"
    raise ZipARError(f"config.json in '{folder}' is for model type '{model_type}', not an Emu3 VQ tokenizer; "
                     f"{FIX_HINT}.")


def _vq_config_dict(config: dict[str, Any], fmt: str, folder: Path) -> dict[str, Any]:
    """The keyword arguments of ``Emu3VQVAEConfig`` for this folder."""
    if fmt == "hf":
        vq = config.get("vq_config")
        if not isinstance(vq, dict):
            raise ZipARError(f"config.json in '{folder}' (model type 'emu3') has no vq_config; {FIX_HINT}.")
        return {k: v for k, v in vq.items() if k != "model_type"}
    if fmt == "hf_vq":
        return {k: v for k, v in config.items() if k != "model_type"}
    return _original_vq_config_dict(config)


def _original_vq_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """Translate the original field names; the original attention is single-head at the
    width of the deepest level, which is what ``hidden_size`` describes in transformers."""
    out = {hf: config.get(orig, default) for orig, (hf, default) in ORIGINAL_CONFIG_FIELDS.items()}
    mult = out["channel_multiplier"]
    if isinstance(mult, (list, tuple)) and mult and isinstance(out["base_channels"], int):
        out["hidden_size"] = out["base_channels"] * mult[-1]
    out["num_attention_heads"] = 1
    return out


def _build_config(kwargs: dict[str, Any], folder: Path):
    from transformers.models.emu3.configuration_emu3 import Emu3VQVAEConfig

    mult = kwargs.get("channel_multiplier")
    if not isinstance(mult, (list, tuple)) or not mult:
        raise ZipARError(f"config.json in '{folder}' has no usable channel multiplier list ({mult!r}); {FIX_HINT}.")
    try:
        return Emu3VQVAEConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ZipARError(f"config.json in '{folder}' is not a valid Emu3 VQ config ({exc}); {FIX_HINT}.") from exc



def _choose_prefix(keys_by_file: dict[Path, list[str]], candidates: tuple[str, ...], folder: Path) -> str:
    prefix = weights_prefix(hf_folder.all_keys(keys_by_file), candidates)
    if prefix is not None:
        return prefix
    shown = " or ".join(f"'{p}'" for p in candidates)
    raise ZipARError(f"no VQ tokenizer weights (keys starting with {shown}) in '{folder}'; this Emu3 folder "
                     f"lacks its image tokenizer: {FIX_HINT}.")




def read_vq_state_dict(folder: Path, fmt: str) -> dict[str, torch.Tensor]:
    """The VQ tensors of the folder under transformers' ``Emu3VQVAE`` names."""
    keys_by_file = hf_folder.keys_by_file(folder, FIX_HINT)
    if fmt == "hf":
        prefix = _choose_prefix(keys_by_file, HF_PREFIXES, folder)
        sd = hf_folder.read_tensors(keys_by_file, lambda k: k.startswith(prefix))
        return {k[len(prefix):]: v for k, v in sd.items()}
    sd = hf_folder.read_tensors(keys_by_file, lambda k: True)
    return original_to_hf_state_dict(sd) if fmt == "original" else sd


# ----------------------------------------------------------------------------- checking and building
def _fill_batch_counters(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """BatchNorm's ``num_batches_tracked`` only counts training steps and never affects eval
    output; a file saved without these counters is complete, so supply zeros."""
    for key, ref in expected.items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros((), dtype=ref.dtype)


def check_state_dict(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], folder: Path) -> None:
    """One-line ZipARError for missing, unexpected or wrong-shaped tensors.

    ``load_state_dict(strict=True)`` would catch the same, but as a multi-line RuntimeError
    listing hundreds of names; this names the first offender of each kind and the fix.
    """
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"'{k}' is {list(sd[k].shape)} in the file but {list(expected[k].shape)} in the config"
             for k in sorted(set(sd) & set(expected)) if sd[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors, e.g. {key_sample(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors, e.g. {key_sample(unexpected)}")
    if wrong:
        more = f" (and {len(wrong) - 1} more shape mismatches)" if len(wrong) > 1 else ""
        problems.append(f"{wrong[0]}{more}")
    if problems:
        raise ZipARError(f"Emu3 VQ weights in '{folder}' do not match its config.json: "
                         f"{'; '.join(problems)}. Fix: {FIX_HINT}.")


def build_vq_module(config, sd: dict[str, torch.Tensor], folder: Path, device: str | torch.device,
                    dtype: torch.dtype) -> nn.Module:
    """transformers' ``Emu3VQVAE`` holding exactly ``sd``, in eval mode.

    Built on the meta device (the release has ~270M parameters; random init would be
    wasted work) and filled by a strict ``load_state_dict(assign=True)``.
    """
    from transformers.models.emu3.modeling_emu3 import Emu3VQVAE

    levels, blocks = len(config.channel_multiplier), int(config.num_res_blocks)
    check_block_counts(sd, {"encoder.down_block.down.": levels, "encoder.down_block.down.0.block.": blocks,
                            "decoder.up_block.up.": levels, "decoder.up_block.up.0.block.": blocks + 1},
                       f"the Emu3 VQ in '{folder}'", f"config.json and the weights do not belong together; {FIX_HINT}")
    try:
        with torch.device("meta"):
            module = Emu3VQVAE(config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ZipARError(f"config.json in '{folder}' describes a VQ that cannot be built ({exc}); "
                         f"{FIX_HINT}.") from exc
    expected = module.state_dict()
    _fill_batch_counters(sd, expected)
    check_state_dict(sd, expected, folder)
    try:
        module.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ZipARError(f"Emu3 VQ weights in '{folder}' do not load ({first}). Fix: {FIX_HINT}.") from exc
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _read_normalisation(folder: Path) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the VQ's image processor; the release uses 0.5/0.5, i.e.
    pixels in [-1, 1], which is also the default when the folder has no processor file."""
    path = folder / PREPROCESSOR_FILE
    data = hf_folder.read_json(path, "image processor config") if path.is_file() else {}
    return (_three_floats(data.get("image_mean", RELEASE_MEAN_STD), path, "image_mean"),
            _three_floats(data.get("image_std", RELEASE_MEAN_STD), path, "image_std"))


def _three_floats(value: Any, path: Path, name: str) -> list[float]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        values = list(values) * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ZipARError(f"{name} in '{path}' should be one number or three; got {value!r}. Re-download the file.")
    if name == "image_std" and any(v <= 0 for v in values):
        raise ZipARError(f"image_std in '{path}' must be positive; got {value!r}. Re-download the file.")
    return [float(v) for v in values]


# ----------------------------------------------------------------------------- the tokenizer
class Emu3VQ(nn.Module):
    """Codes <-> images for Emu3-Gen, around transformers' ``Emu3VQVAE`` (frozen, eval mode).

    The VQ is a video tokenizer: an image is encoded as ``temporal_downsample_factor``
    identical frames and a code grid decodes to that many frames, of which the image is
    the first. transformers already does both for 4-D images / 3-D code grids.
    """

    # Emu3's official image processor clips pixel * 255 and casts to uint8: truncation (api.save_images)
    truncates_to_uint8 = True

    def __init__(self, vq: nn.Module, mean: list[float] | None = None, std: list[float] | None = None,
                 source_path: str | None = None):
        super().__init__()
        self.vq = vq.eval().requires_grad_(False)
        self.mean = list(mean or [RELEASE_MEAN_STD] * 3)
        self.std = list(std or [RELEASE_MEAN_STD] * 3)
        self.source_path = source_path  # for messages and UIs
        self.codebook_size: int = int(vq.config.codebook_size)
        self.downsample: int = 2 ** (len(vq.config.channel_multiplier) - 1)

    def train(self, mode: bool = True) -> "Emu3VQ":
        """Always eval: the temporal blocks' BatchNorm must use its running statistics."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.vq.quantize.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vq.quantize.embedding.weight.dtype

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        return mean, std

    def code_vectors(self) -> torch.Tensor:
        """[codes, dim] the codebook the decoder reads (for preview colours)."""
        return self.vq.quantize.embedding.weight

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, h, w] codebook ids -> float32 images [B, 3, h*ds, w*ds] in [0, 1]."""
        check_code_grid(codes, self.codebook_size, "Emu3")
        pixels = self.vq.decode(codes.to(device=self.device, dtype=torch.long))
        if pixels.ndim == 5:  # a video: the image is its first frame
            pixels = pixels[:, 0]
        mean, std = self._stats(pixels.device)
        return (pixels.float() * std + mean).clamp_(0, 1)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] -> codebook ids [B, H/ds, W/ds] (long)."""
        check_image_batch(images, self.downsample, "Emu3")
        x = images.to(device=self.device, dtype=torch.float32)
        mean, std = self._stats(x.device)
        x = ((x - mean) / std).to(self.dtype)
        b, _, h, w = x.shape
        sizes = torch.tensor([[h, w]] * b, device=x.device)
        out = self.vq.encode(x, image_sizes=sizes)
        # transformers 5.x returns an output object, 4.5x the list of per-image token grids
        tokens = out.image_tokens if hasattr(out, "image_tokens") else out
        return torch.stack(list(tokens)).long()


def load_emu3_vq(source: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> Emu3VQ:
    """Load Emu3-Gen's VQ tokenizer from a BAAI/Emu3-Gen-hf or BAAI/Emu3-VisionTokenizer folder.

    The format is told by config.json; only the VQ tensors are read (the HF folder is
    ~17 GB of which the VQ is a small part). Any mismatch between config and weights is a
    ZipARError naming the folder and the fix, never a silently half-loaded model.
    """
    folder = _resolve_folder(source)
    config_json = _read_config(folder)
    fmt = detect_format(config_json, folder)
    config = _build_config(_vq_config_dict(config_json, fmt, folder), folder)
    sd = read_vq_state_dict(folder, fmt)
    module = build_vq_module(config, sd, folder, device, dtype)
    mean, std = _read_normalisation(folder)
    return Emu3VQ(module, mean, std, source_path=str(folder))


def is_emu3_vq_folder(path: Path) -> bool:
    """A folder whose config.json names a model type that holds the VQ (the transformers
    Emu3-Gen folder, a bare Emu3VQVAE, or BAAI/Emu3-VisionTokenizer)."""
    config = hf_folder.folder_config(path)
    return config is not None and config.get("model_type") in VQ_MODEL_TYPES


FORMAT = VQFormat(
    name="Emu3's VQ image tokenizer",
    files="Emu3 folders holding the VQ (BAAI/Emu3-Gen-hf or BAAI/Emu3-VisionTokenizer)",
    detect=is_emu3_vq_folder, load=load_emu3_vq,
    no_vq_folders={ORIGINAL_LM_MODEL_TYPE: "is the original BAAI/Emu3-Gen language model, which has no VQ; pick the "
                                           "BAAI/Emu3-VisionTokenizer folder for the VQ."})
