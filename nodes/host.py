"""Everything the nodes need from ComfyUI, imported lazily, with plain fallbacks.

Inside ComfyUI: model folders come from ``folder_paths`` (so ``extra_model_paths.yaml``
works), compute runs on ``model_management.get_torch_device()``, progress goes through
``comfy.utils.ProgressBar`` and the queue's cancel button is honoured. Outside ComfyUI
(tests, scripts): models live under ``$ZIPAR_MODELS_DIR`` (or a folder set with
:func:`set_models_dir`) in the same layout (``zipar/`` and ``text_encoders/``), compute
runs on the CPU and there is no progress bar.
"""
from __future__ import annotations

import importlib
import os
import tempfile

import torch

from .engine import ZipARError, api

MODEL_FOLDER = "zipar"  # ComfyUI/models/zipar: AR checkpoints and VQ tokenizers
JANUS_FOLDER = "Janus-Pro"  # ComfyUI/models/Janus-Pro: where the existing Janus pack keeps its folders
TEXT_ENCODER_FOLDER = "text_encoders"  # ComfyUI/models/text_encoders/<flan-t5-xl folder>
MODEL_EXTENSIONS = (".pt", ".pth", ".safetensors", ".ckpt")  # .ckpt: Meta's Chameleon vqgan.ckpt
DEVICES = ["default", "auto", "cpu", "cuda"]

# Files the pack ships (zipar/assets/demo): listed in the loaders under this folder name even
# when models/zipar is empty, so a fresh install runs the demo workflow with zero downloads.
BUILTIN_FOLDER = "zipar-demo"

_modules: dict[str, object] = {}
_models_dir_override: str | None = None


def comfy_module(name: str):
    """ComfyUI's module ``name`` (``folder_paths``, ``comfy.utils`` ...) or None outside ComfyUI."""
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(name)
        except ImportError:
            _modules[name] = None
    return _modules[name]


def forget_modules() -> None:
    """Look ComfyUI's modules up again on next use (tests swap fakes in and out)."""
    _modules.clear()


# ---------------------------------------------------------------------------- model folders

def set_models_dir(path: str | os.PathLike | None) -> None:
    """Outside ComfyUI: the folder holding ``zipar/`` and ``text_encoders/`` (None: back to the default)."""
    global _models_dir_override
    _models_dir_override = None if path is None else str(path)


def fallback_models_dir() -> str:
    return _models_dir_override or os.environ.get("ZIPAR_MODELS_DIR") or os.path.join(tempfile.gettempdir(), "zipar-models")


def register_model_folders() -> None:
    """Add ``models/zipar`` to ComfyUI's folder list, keeping paths set in extra_model_paths.yaml.

    That yaml is read before packs are imported; a name it creates has an empty extension
    set (meaning "any file"), so the checkpoint extensions are set here in that case.
    """
    fp = comfy_module("folder_paths")
    if fp is None:
        return
    default = os.path.join(fp.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER in fp.folder_names_and_paths:
        paths, extensions = fp.folder_names_and_paths[MODEL_FOLDER]
        if default not in paths:
            fp.add_model_folder_path(MODEL_FOLDER, default)
        if not extensions:
            fp.folder_names_and_paths[MODEL_FOLDER] = (paths, set(MODEL_EXTENSIONS))
    else:
        fp.folder_names_and_paths[MODEL_FOLDER] = ([default], set(MODEL_EXTENSIONS))
    janus = os.path.join(fp.models_dir, JANUS_FOLDER)
    if JANUS_FOLDER in fp.folder_names_and_paths:
        if janus not in fp.folder_names_and_paths[JANUS_FOLDER][0]:
            fp.add_model_folder_path(JANUS_FOLDER, janus)
    else:
        fp.folder_names_and_paths[JANUS_FOLDER] = ([janus], set())


def _folder_paths(name: str) -> list[str]:
    fp = comfy_module("folder_paths")
    if fp is not None:
        return fp.get_folder_paths(name)
    return [os.path.join(fallback_models_dir(), name)]


def builtin_models() -> dict[str, str]:
    """Dropdown name -> path of the shipped demo files (missing files are left out)."""
    from .engine import demo_files

    return {f"{BUILTIN_FOLDER}/{p.name}": str(p) for p in demo_files().values() if p.is_file()}


def model_folders() -> dict[str, str]:
    """Hugging Face style model folders (a config.json inside), by name: ``Janus-Pro-1B`` for
    models/zipar/Janus-Pro-1B (or one level deeper, ``BAAI/Emu3-Gen``), ``Janus-Pro/Janus-Pro-7B``
    for models/Janus-Pro/Janus-Pro-7B."""
    found: dict[str, str] = {}
    for folder_name, prefix in ((MODEL_FOLDER, ""), (JANUS_FOLDER, JANUS_FOLDER + "/")):
        for name, path in _config_folders(folder_name).items():
            found.setdefault(prefix + name, path)
    return found


FOLDER_MARKERS = ("config.json", "decoder.jit")  # decoder.jit: NVIDIA's Cosmos tokenizer folders have no config


def _is_model_folder(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, marker)) for marker in FOLDER_MARKERS)


def _config_folders(folder_name: str) -> dict[str, str]:
    """Folders holding a config.json (or a Cosmos tokenizer's decoder.jit) under ComfyUI's
    ``folder_name`` paths, one or two levels deep (``flan-t5-xl``, ``google/flan-t5-xl``); the first
    path that has a name wins."""
    found: dict[str, str] = {}
    for base in _folder_paths(folder_name):
        if not os.path.isdir(base):
            continue
        seen = {_dir_id(base)}
        for entry in sorted(os.listdir(base)):
            first = os.path.join(base, entry)
            if not os.path.isdir(first) or not _first_visit(first, seen):
                continue
            if _is_model_folder(first):
                found.setdefault(entry, first)
                continue
            for sub in sorted(os.listdir(first)):
                second = os.path.join(first, sub)
                if _is_model_folder(second) and _first_visit(second, seen):
                    found.setdefault(f"{entry}/{sub}", second)
    return found


def _dir_id(path: str) -> tuple[int, int] | None:
    """Identity of the real folder behind ``path`` (links followed), or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _first_visit(path: str, seen: set[tuple[int, int] | None]) -> bool:
    """False for a folder already listed under another name: a symlink back up the tree
    (models/zipar/loop -> models/zipar) would otherwise be walked forever or listed twice."""
    key = _dir_id(path)
    if key is None or key in seen:
        return False
    seen.add(key)
    return True


def _walk_files(base: str) -> list[str]:
    """Files under ``base`` ('/'-separated, relative). Symlinked folders are followed, since users
    link in model folders kept on other disks, but each real folder is entered once."""
    names: list[str] = []
    seen = {_dir_id(base)}
    for root, dirs, files in os.walk(base, followlinks=True):
        dirs[:] = [d for d in sorted(dirs) if _first_visit(os.path.join(root, d), seen)]
        names += [os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/") for f in files]
    return names


def list_models(kind: str | None = None) -> list[str]:
    """Checkpoint files and model folders under models/zipar (relative names, '/' separated),
    folders under models/Janus-Pro, then the shipped demo files. ``kind`` ("ar" or "vq"): only
    those the AR model or VQ loader can read, told apart without loading weights (``zipar.model_kind``)."""
    names = _all_models()
    if kind is None:
        return names
    from .engine import model_kind

    folders, builtins = model_folders(), builtin_models()  # scanned once, not once per name

    def readable(name: str) -> bool:
        path = _resolve(name, folders, builtins)
        return path is None or kind in model_kind(path)

    return [n for n in names if readable(n)]


def _all_models() -> list[str]:
    builtins = [n for n in builtin_models()]
    folders = list(model_folders())

    def loose(name: str) -> bool:  # the shards inside a model folder are not models of their own
        return not any(name.startswith(f + "/") for f in folders)

    fp = comfy_module("folder_paths")
    if fp is not None:
        names = [n for n in fp.get_filename_list(MODEL_FOLDER) if loose(n)]
        names += [n for n in folders if n not in names]
        return names + [n for n in builtins if n not in names]
    names = [n for base in _folder_paths(MODEL_FOLDER) for n in _walk_files(base)
             if n.lower().endswith(MODEL_EXTENSIONS)]
    names = sorted({n for n in names if loose(n)})
    names += [n for n in folders if n not in names]
    return names + [n for n in builtins if n not in names]


def checked_name(name: object, what: str, fix: str) -> str:
    """``name`` with '/' separators, refused unless it stays inside its models folder.

    Names come from node inputs, and those are untrusted: an API prompt can send any string, and
    a value wired in from another node skips ComfyUI's check against the list. The check is on
    the text only; symlinks inside the models folder (to files or folders elsewhere) still work.
    """
    text = name if isinstance(name, str) else ""
    parts = [p for p in text.replace(os.sep, "/").split("/") if p not in ("", ".")]
    if not isinstance(name, str):
        problem = "is not text"
    elif not parts:
        problem = "is empty"
    elif "\0" in text:
        problem = "contains a NUL byte"
    elif text.startswith(("/", os.sep)) or os.path.isabs(text) or os.path.splitdrive(text)[0]:
        problem = "is an absolute path"
    elif ".." in parts:
        problem = "climbs out of the models folder with '..'"
    else:
        return "/".join(parts)
    raise ZipARError(f"{what} name {name!r} {problem}; {fix}.")


def _inside(base: str, name: str) -> str | None:
    """``base`` joined with the checked name, or None if the result is not under ``base`` (by
    the path text, symlinks not resolved: a linked file or folder in the models folder is allowed)."""
    base = os.path.normpath(base)
    path = os.path.normpath(os.path.join(base, *name.split("/")))
    return path if os.path.commonpath([base, path]) == base and path != base else None


def model_path(name: str) -> str:
    """Full path of a file listed by :func:`list_models`, or a clear error."""
    name = checked_name(name, "model", "pick a file from the list (model files go in ComfyUI/models/zipar)")
    path = _resolve(name, model_folders(), builtin_models())
    if not path:
        raise ZipARError(
            f"model file {name!r} not found in {', '.join(_folder_paths(MODEL_FOLDER))}; put the checkpoint "
            "there (ComfyUI/models/zipar) and press R in ComfyUI to refresh the lists."
        )
    return path


# What the text-encoder list shows when there is nothing to pick: where to put what (a real
# folder can never have this name, and picking it fails with the same advice).
NO_TEXT_ENCODER = "(none found: download google/flan-t5-xl into models/text_encoders/flan-t5-xl)"


def _resolve(name: str, folders: dict[str, str], builtins: dict[str, str]) -> str | None:
    """A checked name's file in the models folders, else its model folder, else the shipped file of
    that name (a user's own file of the same name wins)."""
    fp = comfy_module("folder_paths")
    if fp is not None:
        path = fp.get_full_path(MODEL_FOLDER, name)
    else:
        candidates = (_inside(base, name) for base in _folder_paths(MODEL_FOLDER))
        path = next((p for p in candidates if p and os.path.isfile(p)), None)
    return path or folders.get(name) or builtins.get(name)


def list_text_encoders() -> list[str]:
    """Folders under models/text_encoders holding a Hugging Face model (a config.json), two levels
    deep; on a bare install one entry that says what to download and where."""
    return sorted(_config_folders(TEXT_ENCODER_FOLDER)) or [NO_TEXT_ENCODER]


def text_encoder_path(name: str) -> str:
    """Full path of a folder listed by :func:`list_text_encoders`, or a clear error."""
    name = checked_name(name, "text encoder", "pick a folder from the list (download google/flan-t5-xl into "
                        "ComfyUI/models/text_encoders/flan-t5-xl)")
    for base in _folder_paths(TEXT_ENCODER_FOLDER):
        path = _inside(base, name)
        if path and os.path.isfile(os.path.join(path, "config.json")):
            return path
    raise ZipARError(
        f"text encoder folder {name!r} not found (with a config.json) in {', '.join(_folder_paths(TEXT_ENCODER_FOLDER))}; "
        "download google/flan-t5-xl into ComfyUI/models/text_encoders/flan-t5-xl."
    )


# ---------------------------------------------------------------------------- devices

def torch_device(choice: str = "default") -> torch.device:
    """'default' is ComfyUI's compute device (cpu under --cpu), or the CPU outside ComfyUI."""
    if choice == "default":
        mm = comfy_module("comfy.model_management")
        return torch.device(mm.get_torch_device()) if mm is not None else torch.device("cpu")
    if choice not in DEVICES:
        raise ZipARError(f"device must be one of {', '.join(DEVICES)} (got {choice!r}).")
    device = api.resolve_device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def intermediate_device() -> torch.device:
    """Where IMAGE tensors passed between nodes live (the CPU unless ComfyUI says otherwise)."""
    mm = comfy_module("comfy.model_management")
    return torch.device(mm.intermediate_device()) if mm is not None else torch.device("cpu")


# ---------------------------------------------------------------------------- progress, cancel

class _NoProgressBar:
    def __init__(self, total: int):
        self.total = total

    def update_absolute(self, value, total=None, preview=None) -> None:
        pass


def progress_bar(total: int):
    utils = comfy_module("comfy.utils")
    return utils.ProgressBar(total) if utils is not None else _NoProgressBar(total)


def throw_if_interrupted() -> None:
    """Raises ComfyUI's InterruptProcessingException once the queue's cancel was pressed."""
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def soft_empty_cache() -> None:
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
