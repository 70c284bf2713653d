"""Live previews of the token grid while it is sampled, cheap enough to leave on.

The VQ decoder is not run per frame: each token is drawn as one flat colour from a palette,
cells not yet generated are grey, and the picture is enlarged with nearest-neighbour to about
256 px. With the VQ connected to the sampler, the palette is the colour the decoder gives each
code: one random grid is decoded once per VQ and a linear map from the codes' vectors to their
patches' mean colours is fitted on it (as ComfyUI's latent previews map latents to RGB with a
small fixed matrix), so the preview shows the picture forming. Without the VQ, the AR model's
code embeddings are projected to RGB (codes the model treats alike look alike; hashed colours
for models without such a table).
Rows appear in ZipAR's zipper pattern. A frame is rendered at most every ``min_interval``
seconds (and always after the last pass), so the cost does not grow with the pass rate.

Switch previews off with the sampler's ``preview`` input or ``ZIPAR_PREVIEW=0``.
"""
from __future__ import annotations

import os
import time
import weakref

import numpy as np
import torch

PREVIEW_PIXELS = 256
MIN_INTERVAL = 0.2  # seconds between frames
UNFILLED = 64  # grey level of cells not generated yet

FIT_GRID = 24  # codes per side of the grid decoded to fit a VQ's colours (576 patches)
_palettes: "weakref.WeakKeyDictionary[object, np.ndarray]" = weakref.WeakKeyDictionary()
_vq_palettes: "weakref.WeakKeyDictionary[object, np.ndarray]" = weakref.WeakKeyDictionary()


def previews_enabled(requested: bool = True) -> bool:
    return bool(requested) and os.environ.get("ZIPAR_PREVIEW", "1").strip().lower() not in ("0", "false", "no", "off")


def hashed_palette(vocab_size: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(40, 256, (vocab_size, 3), generator=gen, dtype=torch.int64).to(torch.uint8).numpy()


@torch.no_grad()
def embedding_palette(weight: torch.Tensor) -> np.ndarray:
    """[vocab, dim] token embeddings -> [vocab, 3] uint8 colours by a fixed random projection,
    each channel stretched between its 2nd and 98th percentile."""
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(weight.shape[1], 3, generator=gen).to(weight.device)
    rgb = (weight.float() @ proj).cpu()
    lo, hi = torch.quantile(rgb, 0.02, dim=0), torch.quantile(rgb, 0.98, dim=0)
    rgb = (rgb - lo) / (hi - lo).clamp_min(1e-6)
    return (rgb.clamp(0, 1) * 215 + 40).round().to(torch.uint8).numpy()


@torch.no_grad()
def fit_vq_palette(vq, side: int = FIT_GRID) -> np.ndarray | None:
    """[codes, 3] uint8: the colour the VQ's decoder gives each code, or None for a VQ that does
    not expose its code vectors. One decode of a random ``side`` x ``side`` grid; the mean colour
    of each code's patch is regressed (ridge, with a bias) on the code's vector."""
    if not callable(getattr(vq, "code_vectors", None)):
        return None
    vectors = vq.code_vectors().detach().float().cpu()
    codes = vectors.shape[0]
    ids = torch.randint(codes, (1, side, side), generator=torch.Generator().manual_seed(0))
    image = vq.decode_codes(ids)[0].float().cpu()  # [3, side*ds, side*ds] in [0, 1]
    ds = image.shape[-1] // side
    patches = image[:, :side * ds, :side * ds].reshape(3, side, ds, side, ds).mean((2, 4))
    targets = patches.reshape(3, -1).T.double()  # [side*side, 3]
    ones = torch.ones(codes, 1)
    table = torch.cat([vectors, ones], 1).double()  # [codes, dim + 1]
    x = table[ids.flatten()]
    gram = x.T @ x
    ridge = 1e-6 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    weights = torch.linalg.solve(gram + ridge, x.T @ targets)
    rgb = (table @ weights).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8).numpy()


def vq_palette(vq) -> np.ndarray | None:
    """The VQ's fitted palette, computed once per loaded VQ."""
    try:
        return _vq_palettes[vq]
    except (KeyError, TypeError):
        pass
    palette = fit_vq_palette(vq)
    if palette is not None:
        try:
            _vq_palettes[vq] = palette
        except TypeError:
            pass
    return palette


def palette_for(model, vq=None) -> np.ndarray:
    """The VQ's colours when a VQ of the model's codebook is given, else the model's own palette.

    ``model`` is a family (``zipar.core.contract.Family``): its ``code_embeddings()`` is part of
    the contract (None for a family without such a table: hashed colours), so it is asked, not probed."""
    if vq is not None and int(getattr(vq, "codebook_size", -1)) == int(model.vocab_size):
        palette = vq_palette(vq)
        if palette is not None:
            return palette
    try:
        return _palettes[model]
    except (KeyError, TypeError):
        pass
    weight = model.code_embeddings()
    vocab = int(model.vocab_size)
    if weight is not None and weight.ndim == 2 and weight.shape[0] >= vocab:
        palette = embedding_palette(weight[:vocab])
    else:
        palette = hashed_palette(vocab)
    try:
        _palettes[model] = palette
    except TypeError:
        pass
    return palette


def render(palette: np.ndarray, tokens: torch.Tensor, filled: torch.Tensor, pixels: int = PREVIEW_PIXELS):
    """One image's grid [H, W] (any device) and its filled mask [H, W] -> a PIL image."""
    from PIL import Image

    ids = tokens.detach().to("cpu", torch.int64).numpy().clip(0, len(palette) - 1)
    rgb = palette[ids]
    rgb[~filled.cpu().numpy().astype(bool)] = UNFILLED
    h, w = ids.shape
    scale = max(1, round(pixels / max(h, w)))
    return Image.fromarray(rgb).resize((w * scale, h * scale), Image.NEAREST)


class TokenPreview:
    """Callable on a decode Progress: a ComfyUI preview tuple, or None while throttled."""

    def __init__(self, model, min_interval: float | None = None, clock=None, pixels: int = PREVIEW_PIXELS, vq=None):
        self.palette = palette_for(model, vq)
        self.min_interval = MIN_INTERVAL if min_interval is None else min_interval
        self.clock = clock or time.perf_counter
        self.pixels = pixels
        self.last = self.clock()
        self.frames = 0

    def __call__(self, progress):
        now = self.clock()
        if progress.step < progress.total and now - self.last < self.min_interval:
            return None
        self.last = now
        self.frames += 1
        return ("JPEG", render(self.palette, progress.tokens[0], progress.filled, self.pixels), None)
