"""The one exception type the engine raises for problems a user can fix, and the translation
of the allocator's out-of-memory errors into one.

ComfyUI shows an exception's message in its error dialog and the CLI prints it without a
traceback, so every message names the problem and the fix in plain words.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


class ZipARError(ValueError):
    """Bad input: a missing or wrong file, an out-of-range setting, mismatched models."""


# How the CPU allocator words an allocation it cannot serve (torch raises a plain RuntimeError there).
_CPU_OOM = ("can't allocate memory", "not enough memory", "out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc).lower() for s in _CPU_OOM)


@contextmanager
def memory_guard(what: str, lower: str) -> Iterator[None]:
    """Turn an out-of-memory error of the CPU or CUDA allocator inside the block into a
    ZipARError that says what ran out and what to lower, after freeing what the failed
    attempt held, so the process (ComfyUI) stays usable."""
    try:
        yield
    except ZipARError:
        raise
    except BaseException as exc:
        if not is_out_of_memory(exc):
            raise
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        del exc
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ZipARError(f"out of memory while {what} ({detail}); {lower}.") from None


def free_bytes(device) -> int | None:
    """Memory a new allocation can use on ``device``: the CUDA free memory plus what PyTorch's
    caching allocator holds unused; on the CPU the kernel's MemAvailable. None when unknown."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            import os

            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    return None


class ConditionMismatch(ZipARError):
    """The condition is not of the kind the model reads (a class for a text model, a prompt for a
    class model). ``needs`` is the kind it reads ("class_ids", "caption" or "prompt"); each front
    end adds, in one place, how its users give that kind (a flag, a node)."""

    def __init__(self, message: str, needs: str):
        super().__init__(message)
        self.needs = needs
