"""Janus-Pro's image decoder: LlamaGen's VQ-16 network, read from a Janus-Pro folder.

Janus-Pro (DeepSeek) decodes its image codes with ``gen_vision_model``, which is LlamaGen's
VQ, so the weights load into ``zipar.vq.llamagen.VQModel`` unchanged in value. Only the VQ
tensors of the folder are read (the language model is most of its size). Two layouts exist:

- transformers ``deepseek-community/Janus-Pro-1B`` / ``-7B`` (model_type "janus"): the VQ under
  ``model.vqmodel.`` (or ``vqmodel.``), with transformers' taming names (``encoder.down.{i}.block.{j}``,
  ``mid.block_1``, ``decoder.up.{i}`` in decoding order), renamed here to LlamaGen's;
- original ``deepseek-ai/Janus-Pro-1B`` / ``-7B`` (model_type "multi_modality", or any config with
  a ``gen_head_config``): the VQ under ``gen_vision_model.``, already with LlamaGen's names.

Janus-Pro's official code writes 8-bit images by truncation, so the loaded VQ says so.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from ..errors import ZipARError
from ..io import hf_folder
from .base import VQFormat, weights_prefix
from .llamagen import VQModel, vq_from_state_dict
from .taming import rename_key

HF_TYPE, ORIGINAL_TYPE = "janus", "multi_modality"
HINT = ("use the complete deepseek-community/Janus-Pro-1B (or -7B) folder, or the original deepseek-ai/Janus-Pro-1B "
        "(or -7B) folder, with config.json, the weights and the tokenizer files from one download")
VQ_PREFIXES = {"hf": ("model.vqmodel.", "vqmodel."), "original": ("gen_vision_model.",)}


def folder_layout(config: dict) -> str | None:
    """'hf', 'original' or None (not Janus-Pro) from a folder's config.json."""
    kind = config.get("model_type")
    if kind == HF_TYPE:
        return "hf"
    if kind == ORIGINAL_TYPE or "gen_head_config" in config:
        return "original"
    return None


def hf_vq_key(key: str) -> str:
    """transformers' JanusVQVAE name -> LlamaGen VQ name (the same network, renamed at conversion;
    its decoder levels are already in decoding order)."""
    return rename_key(key, to_taming=False)


def vq_key_map(keys: Iterable[str], layout: str, folder: Path) -> dict[str, str]:
    """LlamaGen VQ name -> file key, for every VQ tensor among ``keys``."""
    keys = list(keys)
    candidates = VQ_PREFIXES[layout]
    prefix = weights_prefix(keys, candidates)
    if prefix is None:
        raise ZipARError(f"'{folder}' has no VQ weights (keys starting with {' or '.join(candidates)}); {HINT}.")
    rename = hf_vq_key if layout == "hf" else (lambda key: key)
    return {rename(k[len(prefix):]): k for k in keys if k.startswith(prefix)}


def is_janus_folder(path: Path) -> bool:
    config = hf_folder.folder_config(path)
    return config is not None and folder_layout(config) is not None


def load_janus_vq(folder: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> VQModel:
    """Only the VQ of a Janus-Pro folder: no language model is read."""
    folder = Path(folder)
    config = hf_folder.read_config(folder, HINT)
    layout = folder_layout(config)
    if layout is None:
        raise ZipARError(f"'{folder}' is not a Janus-Pro folder (model_type {config.get('model_type')!r}); {HINT}.")
    files = hf_folder.keys_by_file(folder, HINT)
    names = vq_key_map(hf_folder.all_keys(files), layout, folder)
    wanted = set(names.values())
    raw = hf_folder.read_tensors(files, wanted.__contains__)
    vq = vq_from_state_dict({ours: raw[theirs] for ours, theirs in names.items()}, device=device, dtype=dtype)
    vq.source_path = str(folder)
    # Janus-Pro's official code clips (x + 1) / 2 * 255 and stores it in a uint8 array: truncation
    vq.truncates_to_uint8 = True
    return vq


FORMAT = VQFormat(
    name="a Janus-Pro folder",
    files="Janus-Pro folders (deepseek-community/Janus-Pro-1B/-7B or deepseek-ai/Janus-Pro-1B/-7B)",
    detect=is_janus_folder, load=load_janus_vq)
