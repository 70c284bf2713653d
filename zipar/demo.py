"""The shipped demo model: handwritten digits, small enough to live in the repository.

    python -m zipar demo --out demo.png        # classes x windows contact sheet, ~10 s on a CPU

``zipar/assets/demo/`` holds a class-conditional LlamaGen GPT (``demo_c2i_64.safetensors``)
and its VQ tokenizer (``demo_vq.safetensors``) in the official LlamaGen key layouts, trained
by ``tools/train_demo.py`` on the scikit-learn / UCI handwritten digits (10 classes,
64x64 images, a 16x16 token grid). They load through ``zipar.api`` like any published
checkpoint, so the demo runs the same code paths as the real models.

This module also holds the data recipe the training script and ``bench/quality.py`` share
(stratified split, rendering 8x8 digits as 64x64 ink-on-paper images). Only the data
loader needs scikit-learn, and it imports it lazily: the engine does not depend on it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ASSETS = Path(__file__).resolve().parent / "assets" / "demo"
AR_FILE = "demo_c2i_64.safetensors"
VQ_FILE = "demo_vq.safetensors"
IMAGE_SIZE = 64
CLASS_NAMES = [str(i) for i in range(10)]

# Defaults chosen from bench/quality.py on the shipped model (see MODEL_CARD.md).
DEFAULT_WINDOWS = (16, 8, 4, 2, 1)
DEFAULT_CFG = 2.0

# Rendering: ink strength 0..1 mixed between paper and ink colours.
PAPER = (0.96, 0.94, 0.88)
INK = (0.10, 0.14, 0.36)
# Training augmentation (and the distribution bench/quality.py compares samples with).
AUGMENT = {"shift": 0.06, "rotate_deg": 5.0, "scale": 0.05}
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def demo_files() -> dict[str, Path]:
    """Paths of the shipped demo files: {"ar_model": ..., "vq_model": ...} (for CLI and ComfyUI loaders)."""
    return {"ar_model": ASSETS / AR_FILE, "vq_model": ASSETS / VQ_FILE}


# -- data recipe (training and benchmark) -------------------------------------------------

def load_digit_split(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION):
    """The 1797 scikit-learn digits split per class (stratified) with a fixed seed.

    Returns ``(train_images, train_labels, test_images, test_labels)``: float32 [N, 8, 8] ink
    in 0..1 and int64 labels. Needs scikit-learn (training and benchmarks only).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the demo data needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    return images[~test], labels[~test], images[test], labels[test]


def render_digits(
    digits: np.ndarray | torch.Tensor,
    size: int = IMAGE_SIZE,
    generator: torch.Generator | None = None,
    shift: float = AUGMENT["shift"],
    rotate_deg: float = AUGMENT["rotate_deg"],
    scale: float = AUGMENT["scale"],
) -> torch.Tensor:
    """8x8 ink maps [N, 8, 8] in 0..1 -> RGB images [N, 3, size, size] in [0, 1].

    Bicubic resampling of the 8x8 grid; with a ``generator``, each image also gets a random
    shift (fraction of the half-width), rotation and scale (the training augmentation).
    """
    x = torch.as_tensor(np.asarray(digits), dtype=torch.float32)[:, None]
    n = x.shape[0]
    if generator is not None:
        t = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift
        a = (torch.rand(n, generator=generator) * 2 - 1) * rotate_deg * np.pi / 180
        s = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    else:
        t, a, s = torch.zeros(n, 2), torch.zeros(n), torch.ones(n)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    ink = F.grid_sample(x, grid, mode="bicubic", padding_mode="zeros", align_corners=False).clamp(0, 1)
    paper, inkc = torch.tensor(PAPER).view(1, 3, 1, 1), torch.tensor(INK).view(1, 3, 1, 1)
    return paper + (inkc - paper) * ink


def ink_of(images: torch.Tensor) -> torch.Tensor:
    """Inverse of the colouring: RGB [N, 3, H, W] in [0, 1] -> ink [N, H, W] (least squares, clamped)."""
    paper, inkc = torch.tensor(PAPER).view(1, 3, 1, 1), torch.tensor(INK).view(1, 3, 1, 1)
    d = inkc - paper
    return (((images.float().cpu() - paper) * d).sum(1) / d.pow(2).sum()).clamp(0, 1)


# -- the demo command -----------------------------------------------------------------------

MIN_CELL, MAX_CELL = 8, 1024  # pixels per image in the contact sheet


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, help="output PNG (a contact sheet: rows = classes, columns = windows)")
    parser.add_argument("--window", type=int, nargs="+", default=list(DEFAULT_WINDOWS),
                        help="windows to compare; 16 (the grid width) or more is next-token prediction")
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)), help="digits to draw (0..9)")
    parser.add_argument("--cfg", type=float, default=DEFAULT_CFG, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--cell", type=int, default=96, help="pixels per image in the sheet")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def run_demo(args: argparse.Namespace, log=print) -> dict:
    """Generate every class at every window with the same seed, write one labelled PNG."""
    from . import api
    from .errors import ZipARError
    from .core.sampling import SamplingOptions

    from .io import outputs

    (planned,) = outputs.plan_outputs([outputs.image_output(args.out, "--out")], args.overwrite, "pass --overwrite")
    out = planned.path
    if not args.window:
        raise ZipARError("give at least one --window.")
    if not MIN_CELL <= args.cell <= MAX_CELL:
        raise ZipARError(f"--cell must be between {MIN_CELL} and {MAX_CELL} pixels per image (got {args.cell}).")
    files = demo_files()
    for path in files.values():
        if not path.is_file():
            raise ZipARError(f"demo file missing: {path}; reinstall the package or run tools/train_demo.py.")
    device = api.resolve_device(args.device)
    vq = api.load_vq(files["vq_model"], device)
    model = api.load_ar_model(files["ar_model"], device, "fp32" if device.type == "cpu" else "auto")
    cond = api.class_condition(args.classes, [CLASS_NAMES[c] if 0 <= c < 10 else str(c) for c in args.classes])
    grid = api.prepare(model, cond, vq=vq).grid
    options = SamplingOptions(cfg=args.cfg, temperature=args.temperature)
    log(f"{model.describe()}, grid {grid[0]}x{grid[1]}, cfg {args.cfg}, seed {args.seed}")
    columns, rows = [], []
    start = time.perf_counter()
    for window in args.window:
        result = api.generate(model, cond, grid, window, options, seed=args.seed)
        images = api.decode_tokens(vq, result.tokens.to(device)).cpu()
        name = "NTP" if window >= grid[1] else f"window {window}"
        log(f"{name:>10}: {result.forward_passes:4d} forward passes, {result.seconds:6.2f} s")
        columns.append(f"{name} ({result.forward_passes})")
        rows.append(images)
    sheet = contact_sheet(torch.stack(rows, 1), [str(c) for c in args.classes], columns, args.cell)
    outputs.write_image(out, sheet, args.overwrite)
    seconds = time.perf_counter() - start
    log(f"wrote {out} ({len(args.classes)} classes x {len(args.window)} windows) in {seconds:.1f} s")
    return {"out": str(out), "seconds": seconds, "columns": columns}


def contact_sheet(images: torch.Tensor, row_labels: list[str], col_labels: list[str], cell: int = 96):
    """images [rows, cols, 3, h, w] in [0, 1] -> a labelled PIL image."""
    from PIL import Image, ImageDraw

    n_rows, n_cols = images.shape[:2]
    left, top, pad = 28, 22, 4
    sheet = Image.new("RGB", (left + n_cols * (cell + pad), top + n_rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for c, label in enumerate(col_labels):
        draw.text((left + c * (cell + pad) + 2, 5), label, fill="black")
    for r, label in enumerate(row_labels):
        y = top + r * (cell + pad)
        draw.text((8, y + cell // 2 - 6), label, fill="black")
        for c in range(n_cols):
            tile = Image.fromarray(pixels[r, c]).resize((cell, cell), Image.NEAREST if cell % pixels.shape[2] == 0 else Image.BICUBIC)
            sheet.paste(tile, (left + c * (cell + pad), y))
    return sheet


def main(argv: list[str] | None = None) -> int:
    from .errors import ZipARError

    parser = add_arguments(argparse.ArgumentParser(prog="python -m zipar demo", description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    try:
        print(run_demo(args, log=lambda s: print(s, file=sys.stderr))["out"])
    except ZipARError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
