"""ZipAR: parallel-row decoding for raster-order autoregressive image models."""
from .errors import ZipARError

__all__ = ["ZipARError"]
__version__ = "0.1.0"
