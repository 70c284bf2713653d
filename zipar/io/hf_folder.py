"""Reading Hugging Face style model folders: config.json and (sharded) weights, lazily.

The chat-style families ship 3-17 GB folders of which one model needs a part (Janus's
understanding tower, Emu3's VQ in the language-model folder). Weights are read tensor by
tensor: safetensors through ``safe_open``, pickled ``.bin`` shards (the original Janus
releases) through ``torch.load(weights_only=True, mmap=True)``, so nothing but tensors is
unpickled and shards without a wanted key are never opened when an index lists them.
Tokenizers are built from the folder's own files, offline and without remote code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

import torch

from .checkpoint import load_error_detail, refused_by_weights_only
from ..errors import ZipARError

INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ZipARError(f"cannot read {what} '{path}': {exc}; re-download it.") from exc
    if not isinstance(data, dict):
        raise ZipARError(f"{what} '{path}' is not a JSON object; re-download it.")
    return data


def folder_config(path: Path) -> dict[str, Any] | None:
    """The config.json of a model folder, for families recognising their folders; None for a file
    or a folder without one (a damaged config is an error naming it)."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    return read_json(path / "config.json", "config")


def read_config(folder: Path, hint: str) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ZipARError(f"no config.json in '{folder}'; {hint}.")
    return read_json(path, "config")


def shard_path(folder: Path, value: object) -> Path:
    """Where an index's shard name points, refused unless it names a file inside ``folder``: the
    index is downloaded data, and an absolute or ``..`` path would make us read any file on disk.
    Symlinked shards inside the folder (as the Hugging Face cache lays them out) are fine."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ZipARError(f"the weight index of '{folder}' names no usable file ({value!r}); re-download it.")
    absolute = value.startswith(("/", "\\")) or bool(PureWindowsPath(value).drive) or os.path.isabs(value)
    if absolute or ".." in value.replace("\\", "/").split("/"):
        raise ZipARError(f"the weight index of '{folder}' points outside the folder ({value}); re-download it.")
    return folder / value


def weight_files(folder: Path, hint: str) -> tuple[list[Path], dict[str, Path] | None]:
    """The weight files to look in, plus an index's key -> file map when there is one."""
    folder = Path(folder)
    for name in INDEX_FILES:
        index_path = folder / name
        if index_path.is_file():
            weight_map = read_json(index_path, "weight index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise ZipARError(f"'{index_path}' has no weight_map; re-download it.")
            paths = {key: shard_path(folder, value) for key, value in weight_map.items()}
            return sorted(set(paths.values())), paths
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("*.safetensors"))
    files = files or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ZipARError(f"no weights (.safetensors or pytorch_model.bin) in '{folder}'; {hint}.")
    return files, None


def _open_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # unpickling errors come in many types
        if refused_by_weights_only(exc):
            raise ZipARError(f"cannot read weight file '{path}': it pickles Python objects other than tensors "
                             f"({load_error_detail(exc)}), and ZipAR never runs code from a model file; re-download "
                             "the official file.") from exc
        raise ZipARError(f"cannot read weight file '{path}' as tensors only ({load_error_detail(exc)}); "
                         "re-download it.") from exc
    if not isinstance(sd, dict):
        raise ZipARError(f"'{path}' does not hold a state dict; re-download it.")
    return sd


def file_keys(path: Path) -> list[str]:
    if not path.is_file():
        raise ZipARError(f"weight file '{path}' is missing; re-download the complete folder.")
    if path.suffix == ".bin":
        return list(_open_bin(path))
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ZipARError(f"cannot read weight file '{path}' ({exc}); re-download it.") from exc


def keys_by_file(folder: Path, hint: str) -> dict[Path, list[str]]:
    """Key lists per file, from the index when present (so unneeded shards stay unopened)."""
    files, weight_map = weight_files(folder, hint)
    if weight_map is None:
        return {path: file_keys(path) for path in files}
    grouped: dict[Path, list[str]] = {}
    for key, path in weight_map.items():
        grouped.setdefault(path, []).append(key)
    return grouped


def read_tensors(keys: dict[Path, list[str]], keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """Read only the wanted tensors; files without any are never opened."""
    out: dict[str, torch.Tensor] = {}
    for path, names in keys.items():
        wanted = [k for k in names if keep(k)]
        if not wanted:
            continue
        if path.suffix == ".bin":
            sd = _open_bin(path) if path.is_file() else file_keys(path)
            present = set(sd)
            get = sd.__getitem__
        else:
            from safetensors import safe_open

            file_keys(path)  # clear message for a missing or damaged shard
            handle = safe_open(str(path), framework="pt")
            present = set(handle.keys())
            get = handle.get_tensor
        for key in wanted:
            if key not in present:
                raise ZipARError(f"'{path}' lacks '{key}' although the index lists it there; "
                                 "re-download the complete folder.")
            out[key] = get(key)
    return out


def all_keys(keys: dict[Path, list[str]]) -> set[str]:
    return {k for names in keys.values() for k in names}


def load_tokenizer(folder: Path, hint: str):
    """The folder's own tokenizer, offline and without remote code.

    With a ``tokenizer.json`` the fast tokenizer is built from it directly, so a config.json
    that points at remote code (the original BAAI/Emu3-Gen) is never consulted.
    """
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ZipARError("Janus-Pro, Emu3 and Lumina-mGPT need the transformers package: pip install transformers") from exc
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise ZipARError(f"'{folder}' has no tokenizer (tokenizer.json / tokenizer_config.json); {hint}.")
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it warns that a "multi_modality" config is no tokenizer config
    try:
        if (folder / "tokenizer.json").is_file():
            # Built from tokenizer.json alone: tokenizer_config.json files differ between transformers
            # 4.x and 5.x (a 5.x "extra_special_tokens" list breaks 4.57), and only the vocabulary and
            # the BOS / pad names are needed here.
            tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
            for name, value in _special_token_names(folder).items():
                setattr(tok, name, value)
            return tok
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for broken tokenizer files
        raise ZipARError(f"cannot load the tokenizer in '{folder}' without running its remote code "
                         f"({str(exc).splitlines()[0]}); ZipAR needs a tokenizer.json: {hint}.") from exc
    finally:
        hf_logging.set_verbosity(level)


def _special_token_names(folder: Path) -> dict[str, str]:
    """bos_token / eos_token / pad_token / unk_token as the folder's tokenizer files name them."""
    names: dict[str, str] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / file
        if not path.is_file():
            continue
        data = read_json(path, "tokenizer file")
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and key not in names:
                names[key] = value
    return names
