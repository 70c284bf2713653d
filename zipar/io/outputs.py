"""Every file the pack writes: names settled and checked before the work, files replaced only when complete.

A generation can take minutes, so an output problem found after it (an unknown image format,
a folder that cannot be written, a name that exists once the writer adds its suffix) wastes
that time; and a write that fails half-way (a full disk) must not destroy the file it was
replacing nor leave a stub that blocks the rerun. Hence two steps:

- ``plan_outputs`` settles each final name (``.npy`` added the way NumPy adds it), refuses
  folders, unknown image formats, unwritable places, existing files (unless overwriting)
  and two outputs naming one file, before anything is loaded;
- ``write_atomic`` writes into a temporary file in the target's folder and renames it over
  the target only once the writer has finished and the data is on disk. When the system
  refuses the write (a full disk, a quota, a read-only or failing disk, permissions), it
  removes the temporary file and raises ``WriteFailed``: one line naming the file, the
  reason and that the old file is intact, instead of an ``OSError`` traceback.

Labels (such as a command-line flag) come from the caller, so messages speak its language.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from ..errors import ZipARError

# What Pillow writes from an RGB array, by suffix; the format is passed explicitly because the
# temporary file's name says nothing.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what an ordinary open() would give a new file


@dataclass(frozen=True)
class Output:
    """One file to write: its final path and the label the caller knows it by (for messages)."""

    path: Path
    label: str


def image_output(path: str | os.PathLike, label: str) -> Output:
    path = Path(path)
    if path.suffix.lower() not in IMAGE_FORMATS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ZipARError(f"{label} {path} has {shown}, not an image format this pack writes; end the name in "
                         f"{', '.join(sorted(set(IMAGE_FORMATS)))} (e.g. {path.with_suffix('.png').name}).")
    return Output(path, label)


def npy_output(path: str | os.PathLike, label: str) -> Output:
    """NumPy appends ``.npy`` to a name without it; the name is settled here so that the
    existence check looks at the file that would really be written."""
    path = Path(path)
    return Output(path if path.suffix == ".npy" else path.with_name(path.name + ".npy"), label)


def plain_output(path: str | os.PathLike, label: str) -> Output:
    return Output(Path(path), label)


def numbered_images(path: str | os.PathLike, count: int, label: str) -> list[Output]:
    """out.png for one image; out_0.png, out_1.png ... for several (the format checked once)."""
    first = image_output(path, label)
    if count <= 1:
        return [first]
    p = first.path
    return [Output(p.with_name(f"{p.stem}_{i}{p.suffix}"), label) for i in range(count)]


def _key(path: Path) -> str:
    """The same file, however it was spelled (relative, ``./``, through a symlinked folder)."""
    return os.path.normcase(os.path.join(os.path.realpath(path.parent or Path(".")), path.name))


def _existing_ancestor(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folder: Path, label: str, target: Path) -> None:
    """A folder we can create files in (created later if missing): probe it with a real file,
    which also catches read-only mounts that permission bits do not show."""
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise ZipARError(f"{label} {target}: {base} is a file, not a folder; choose another location.")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".zipar-write-check-")
    except OSError as exc:
        raise ZipARError(f"{label} {target}: cannot write into {base} ({exc.strerror or exc}); choose a folder you "
                         "can write to.") from None
    os.close(fd)
    os.unlink(probe)


def plan_outputs(outputs: list[Output], overwrite: bool, overwrite_hint: str = "allow replacing it") -> list[Output]:
    """Check every output before any work: no folder, no duplicate, a writable place, and no
    existing file unless ``overwrite`` (``overwrite_hint`` says how, in the caller's terms).
    Returns the outputs unchanged, for chaining."""
    seen: dict[str, Output] = {}
    for out in outputs:
        key = _key(out.path)
        if key in seen:
            other = seen[key]
            raise ZipARError(f"{other.label} and {out.label} both name {out.path}; give each output its own file name "
                             "(one would silently replace the other).")
        seen[key] = out
        if out.path.is_dir():
            raise ZipARError(f"{out.label} {out.path} is a folder; give a file name inside it "
                             f"(e.g. {out.path / 'out.png'}).")
        if out.path.exists() and not overwrite:
            raise ZipARError(f"{out.path} already exists; choose another name for {out.label} or {overwrite_hint}.")
    for folder in {out.path.parent for out in outputs}:
        first = next(o for o in outputs if o.path.parent == folder)
        check_writable(folder, first.label, first.path)
    return outputs


# What to do when the system refuses a write, by errno; the reason is the OS's own words, except
# for a full disk, said plainly. Any other errno: the generic advice.
_WRITE_FIXES = {
    errno.ENOSPC: "free some space (or choose a folder on another disk) and run again",
    errno.EROFS: "the file system is mounted read-only; choose a folder you can write to",
    errno.EACCES: "check that the file is not read-only or open in another program, or choose a folder you can "
                  "write to",
    errno.EPERM: "check that the file is not read-only or open in another program, or choose a folder you can "
                 "write to",
    errno.EFBIG: "the file is too large for this file system; choose a folder on another disk",
}
if hasattr(errno, "EDQUOT"):  # not on Windows
    _WRITE_FIXES[errno.EDQUOT] = "free some space within your disk quota (or choose another folder) and run again"
_GENERIC_FIX = "check the disk and the folder, then run again"


class WriteFailed(ZipARError):
    """The system refused to write ``path`` (``os_error``: a full disk, a quota, a read-only or
    failing disk, permissions). The file that was there before, if any, is untouched; ``leftover``
    is a temporary file that could not be removed (None when none is left)."""

    def __init__(self, path: Path, os_error: OSError, existed: bool, leftover: str | None = None):
        self.path, self.os_error, self.existed, self.leftover = path, os_error, existed, leftover
        code = os_error.errno
        words = os_error.strerror or str(os_error) or type(os_error).__name__
        name = errno.errorcode.get(code, str(code))
        reason = f"the disk is full ({words})" if code == errno.ENOSPC else f"{words} ({name})"
        kept = "the old file is intact (nothing was overwritten)" if existed else "no file was created"
        partial = (f"a partial temporary file could not be removed: delete {leftover}" if leftover
                   else "no partial file was left")
        super().__init__(f"could not write {path}: {reason}; {kept} and {partial}; "
                         f"{_WRITE_FIXES.get(code, _GENERIC_FIX)}.")


def _remove(tmp: str | None) -> str | None:
    """Delete a temporary file; returns its name if it is still there."""
    if tmp is None:
        return None
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError:
        return tmp
    return None


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None], overwrite: bool = True) -> Path:
    """Run ``write(file)`` on a temporary file beside ``path`` and rename it into place when done.

    Whatever happens before the rename (an exception in the writer, a full disk, an
    interrupt), the old file, if any, is untouched and no partial file is left behind. An
    ``OSError`` of the system (one with an errno: ENOSPC, EDQUOT, EROFS, EIO, EACCES ...),
    raised while creating the folder or the temporary file, writing, flushing, syncing or
    renaming, becomes ``WriteFailed``; other exceptions pass through unchanged.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and path.exists():  # appeared since the plan was checked
            raise ZipARError(f"{path} already exists (it appeared while this ran); choose another name.")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        leftover = _remove(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:  # Pillow's own errors have none
            raise WriteFailed(path, exc, os.path.lexists(path), leftover) from exc
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    return write_atomic(path, lambda f: f.write(data), overwrite)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite)


def write_json(path: str | os.PathLike, data, overwrite: bool = True) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n", overwrite)


def write_image(path: str | os.PathLike, image, overwrite: bool = True) -> Path:
    """A PIL image, in the format its suffix names."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        image_output(path, "output")  # raises the format message
    return write_atomic(path, lambda f: image.save(f, format=fmt), overwrite)


def write_npy(path: str | os.PathLike, array, overwrite: bool = True) -> Path:
    import numpy as np

    return write_atomic(npy_output(path, "").path, lambda f: np.save(f, array), overwrite)
