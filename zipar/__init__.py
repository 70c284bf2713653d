"""ZipAR: parallel-row decoding for raster-order autoregressive image models."""
import sys

from .torch_support import check_installed_torch

try:
    check_installed_torch()  # an unsupported torch is one clear message here, not a traceback later
except ImportError as _exc:
    if "-m" in sys.orig_argv and sys.orig_argv[sys.orig_argv.index("-m") + 1:][:1] == ["zipar"]:  # the CLI: one line
        raise SystemExit(f"error: {_exc}") from None
    raise

from .errors import ZipARError  # noqa: E402

__all__ = ["ZipARError"]
__version__ = "0.1.0"
