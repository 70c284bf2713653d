"""The tensors of a TorchScript archive (``torch.jit.save``), read without running it.

Some tokenizers are published only as TorchScript files (NVIDIA's Cosmos tokenizers:
``encoder.jit`` / ``decoder.jit``). ``torch.jit.load`` would compile and run the archive's
``code/`` sources and unpickle its object graph with every global allowed, so ZipAR never calls
it. An archive is a zip holding, under one top folder ``<name>/``:

- ``data.pkl``: the module object graph, a pickle whose objects are ``__torch__.*`` classes
  (one per scripted module), each given its attribute dict by BUILD; submodules are attributes
  holding such objects, parameters and buffers are attributes holding tensors;
- ``data/<key>``: the raw bytes of each tensor storage, named by the pickle's persistent ids;
- ``constants.pkl`` (and ``constants/``), ``code/`` (sources), ``version``, ``byteorder``.

``read_torchscript_tensors`` unpickles ``data.pkl`` with an allow-list: every ``__torch__.*``
class becomes an inert record of the attributes BUILD gives it, only tensor rebuilding,
``collections.OrderedDict`` and TorchScript's list tags are resolved (to our own functions), and
any other global (``os.system``, ``builtins.eval``...) is refused with a ``ZipARError`` before
anything is called. Storages are copied from the zip entries. The result is the flattened graph:
dotted attribute names -> tensors, as ``state_dict`` names them; TorchScript also saves
non-persistent buffers (they are attributes like any other), so those appear too.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ZipARError

# Storage class names in the pickle (``torch.FloatStorage``...) -> element dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
MAX_DEPTH = 64  # module nesting followed when flattening (a real network nests ~10 deep)


class TorchScriptObject:
    """A ``__torch__.*`` object of the archive: its class name and the attributes BUILD gave it.
    It has no behaviour; nothing of the archive's code is ever attached to it."""

    qualified_name = "__torch__"
    attributes: dict = {}  # until BUILD gives the object its own (never written in place)
    state: Any = None

    def __init__(self, *args: Any) -> None:
        self.attributes: dict[str, Any] = {}
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.attributes = dict(state)
        else:
            self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualified_name} with {len(self.attributes)} attributes>"


def _stub_class(module: str, name: str) -> type:
    return type(name, (TorchScriptObject,), {"qualified_name": f"{module}.{name}"})


# Our own stand-ins for the few functions an archive's pickle may name.
def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, requires_grad: bool = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """The tensor view ``size``/``stride``/``offset`` (in elements) of a flat storage tensor."""
    if not isinstance(storage, torch.Tensor):
        raise ZipARError("a tensor in the TorchScript archive names no storage; the file is damaged.")
    try:
        return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))
    except RuntimeError as exc:
        raise ZipARError(f"a tensor in the TorchScript archive lies outside its storage ({exc}); "
                         "the file is damaged or truncated.") from exc


def _identity_list(items: Any) -> Any:
    return items


def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
    return value


def _ordered_dict(*args: Any) -> dict:
    from collections import OrderedDict

    return OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch.jit._pickle", "build_intlist"): _identity_list,
    ("torch.jit._pickle", "build_doublelist"): _identity_list,
    ("torch.jit._pickle", "build_boollist"): _identity_list,
    ("torch.jit._pickle", "build_tensorlist"): _identity_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class _StorageKind:
    """What ``find_class`` returns for ``torch.<X>Storage``: only its dtype is ever read."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.path = archive, root, path
        self.storages: dict[str, torch.Tensor] = {}
        self.stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            key = (module, name)
            if key not in self.stubs:
                self.stubs[key] = _stub_class(module, name)
            return self.stubs[key]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageKind(_STORAGE_DTYPES[name])
        raise ZipARError(f"refusing to read '{self.path}': its TorchScript data.pkl names {module}.{name}, which a "
                         "module's weights never need (ZipAR reads only tensors and module attributes, and never "
                         "runs code from an archive). The file is not a plain torch.jit.save archive; re-download "
                         "it from its publisher.")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageKind) and isinstance(pid[2], str)):
            raise ZipARError(f"'{self.path}' has a TorchScript data.pkl with an unknown persistent id {pid!r:.80}; "
                             "the file is damaged or not a torch.jit.save archive.")
        kind, key = pid[1], pid[2]
        if key not in self.storages:
            member = f"{self.root}/data/{key}"
            try:
                raw = self.archive.read(member)
            except KeyError:
                raise ZipARError(f"'{self.path}' lacks the tensor data '{member}' its data.pkl names; the download "
                                 "is incomplete: re-download it.") from None
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if len(raw) % itemsize:
                raise ZipARError(f"'{self.path}': tensor data '{member}' has {len(raw)} bytes, not a multiple of "
                                 f"{itemsize} ({kind.dtype}); the file is damaged: re-download it.")
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self.storages[key] = flat.view(kind.dtype)
        return self.storages[key]


def archive_root(names: list[str]) -> str | None:
    """The top folder of a TorchScript archive (the one holding ``data.pkl``), or None."""
    roots = [n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    return roots[0] if len(roots) == 1 else None


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Cheap: a zip whose member names are those of a ``torch.jit.save`` archive (a top folder
    with ``data.pkl`` and ``code/``); nothing is read but the zip's directory."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    root = archive_root(names)
    return root is not None and any(n.startswith(f"{root}/code/") for n in names)


def read_torchscript_objects(path: str | os.PathLike) -> TorchScriptObject:
    """The root module of the archive's object graph, as inert ``TorchScriptObject`` records."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ZipARError(f"cannot read '{path}' as a TorchScript archive ({exc}); it should be a zip written by "
                         "torch.jit.save: re-download it.") from exc
    with archive:
        names = archive.namelist()
        root = archive_root(names)
        if root is None or not any(n.startswith(f"{root}/code/") for n in names):
            raise ZipARError(f"'{path}' is a zip but not a TorchScript archive (no single <name>/data.pkl "
                             "beside <name>/code/); "
                             "it should be a file written by torch.jit.save.")
        if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder").strip() not in (b"", b"little"):
            raise ZipARError(f"'{path}' stores its tensors big-endian; ZipAR reads little-endian archives only.")
        unpickler = _ArchiveUnpickler(archive.read(f"{root}/data.pkl"), archive, root, path)
        try:
            obj = unpickler.load()
        except ZipARError:
            raise
        except Exception as exc:  # a damaged pickle can fail in many ways
            raise ZipARError(f"cannot read the module graph of '{path}' ({type(exc).__name__}: {exc}); the file "
                             "is damaged or truncated: re-download it.") from exc
    if not isinstance(obj, TorchScriptObject):
        raise ZipARError(f"'{path}' holds a {type(obj).__name__}, not a TorchScript module; it should be a file "
                         "written by torch.jit.save of a module.")
    return obj


def flatten_tensors(obj: TorchScriptObject, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Dotted attribute names -> tensors, submodules (attributes holding objects) followed."""
    if depth > MAX_DEPTH:
        raise ZipARError(f"the TorchScript module graph nests deeper than {MAX_DEPTH} levels at '{prefix}'; "
                         "the file is damaged.")
    out: dict[str, torch.Tensor] = {}
    for name, value in obj.attributes.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, TorchScriptObject):
            out.update(flatten_tensors(value, f"{prefix}{name}.", depth + 1))
    return out


def read_torchscript_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's modules, by dotted name (float tensors keep their
    saved dtype), read without compiling or running anything from the archive."""
    return flatten_tensors(read_torchscript_objects(path))
