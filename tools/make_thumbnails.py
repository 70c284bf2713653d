"""Writes the template browser's thumbnails, workflows/<name>.jpg, one per shipped workflow.

    python tools/make_thumbnails.py

demo_zipar shows what it makes: the shipped demo model drawing the digit 3, next-token
prediction above ZipAR window 8, same seeds (four images each); demo_speculative the same model
under NTP, ZipAR 12 and ZipAR 12 + speculative, with their pass counts. The others need multi-GB
downloads, so their cards are schematics of the run itself: each token grid as it stands halfway
through the ZipAR run (ZipAR's zipper of rows advancing together; next-token prediction at the same
pass count for comparison), from the engine's own schedule, with the pass counts.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from zipar.core.schedule import build_schedule  # noqa: E402

OUT = ROOT / "workflows"
SIZE = (512, 320)
BG, INK, GREY = (24, 26, 30), (235, 235, 235), (150, 150, 150)

# name -> (title, family line, [(grid h, w, window, label), ...])
SCHEMATICS = {
    "llamagen_c2i_zipar": ("LlamaGen class-to-image", "384 px, 24 x 24 tokens", [(24, 24, 8, "ZipAR window 8")]),
    "llamagen_c2i_ntp_vs_zipar": ("LlamaGen: NTP vs ZipAR", "384 px, 24 x 24 tokens",
                                  [(24, 24, 24, "next-token"), (24, 24, 8, "ZipAR window 8")]),
    "llamagen_c2i_window_sweep": ("LlamaGen: window sweep", "384 px, 24 x 24 tokens",
                                  [(24, 24, w, f"window {w}") for w in (24, 16, 8, 4)]),
    "llamagen_t2i_zipar": ("LlamaGen text-to-image", "512 px, 32 x 32 tokens", [(32, 32, 8, "ZipAR window 8")]),
    "janus_pro_zipar": ("Janus-Pro", "384 px, 24 x 24 tokens", [(24, 24, 8, "ZipAR window 8")]),
    "janus_pro_ntp_vs_zipar": ("Janus-Pro: NTP vs ZipAR", "384 px, 24 x 24 tokens",
                               [(24, 24, 24, "next-token"), (24, 24, 8, "ZipAR window 8")]),
    "emu3_gen_zipar": ("Emu3-Gen", "16:9, 68 x 120 tokens", [(68, 120, 8, "ZipAR window 8")]),
    "lumina_mgpt_768_zipar": ("Lumina-mGPT 768", "768 px, 48 x 48 tokens", [(48, 48, 16, "ZipAR window 16")]),
    "lumina_mgpt_ntp_vs_zipar": ("Lumina-mGPT: NTP vs ZipAR", "768 px, 48 x 48 tokens",
                                 [(48, 48, 48, "next-token"), (48, 48, 16, "ZipAR window 16")]),
    "simplear_1024_zipar": ("SimpleAR: NTP vs ZipAR", "1024 px, 64 x 64 tokens",
                            [(64, 64, 64, "next-token"), (64, 64, 8, "ZipAR window 8")]),
    "lumina_mgpt2_zipar": ("Lumina-mGPT 2.0: NTP vs ZipAR", "768 px, 96 x 96 tokens",
                           [(96, 96, 96, "next-token"), (96, 96, 16, "ZipAR window 16")]),
}


def font(size: int):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default()


def zipper(h: int, w: int, window: int, side: int, at: int) -> tuple[Image.Image, int]:
    """The grid after ``at`` passes: drawn tokens coloured by their pass (early blue, late orange), the
    rest dark; and the run's number of passes. LlamaGen's row-1 rule (the chat families' differ by at
    most a few passes)."""
    schedule = build_schedule(h, w, window)
    steps = np.asarray(schedule.emit_step(), dtype=np.float64).reshape(h, w)
    t = (steps / max(1, at - 1))[..., None]
    low, high = np.array([40, 110, 220.0]), np.array([250, 150, 40.0])
    rgb = np.where(steps[..., None] < at, low + t * (high - low), np.array([52, 54, 60.0])).astype(np.uint8)
    scale = side / max(h, w)
    image = Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST)
    return image, schedule.num_passes


def schematic(title: str, line: str, runs: list) -> Image.Image:
    card = Image.new("RGB", SIZE, BG)
    draw = ImageDraw.Draw(card)
    draw.text((16, 12), title, fill=INK, font=font(24))
    draw.text((16, 44), line + "; tokens drawn so far, coloured by pass", fill=GREY, font=font(13))
    n = len(runs)
    side = min(200, (SIZE[0] - 16 * (n + 1)) // n)
    at = min(build_schedule(h, w, window).num_passes for h, w, window, _ in runs) // 2  # halfway through ZipAR
    for i, (h, w, window, label) in enumerate(runs):
        grid, passes = zipper(h, w, window, side, at)
        x = 16 + i * (side + 16) + (side - grid.width) // 2
        card.paste(grid, (x, 76 + (side - grid.height) // 2))
        draw.text((16 + i * (side + 16), 84 + side), label, fill=INK, font=font(14))
        draw.text((16 + i * (side + 16), 102 + side), f"{passes} passes", fill=GREY, font=font(13))
    draw.text((SIZE[0] - 150, 20), f"after {at} passes", fill=GREY, font=font(13))
    return card


def demo_card() -> Image.Image:
    from zipar import api
    from zipar.conditions import class_condition
    from zipar.core.sampling import SamplingOptions
    from zipar.demo import demo_files

    files = demo_files()
    model = api.load_ar_model(files["ar_model"], "cpu", "fp32")
    vq = api.load_vq(files["vq_model"], "cpu", "fp32")
    cond = class_condition([3])
    grid = api.prepare(model, cond, None, vq).grid
    rows = []
    for window in (grid[1], 8):
        result = api.generate(model, cond, grid, window, SamplingOptions(cfg=2.0, top_k=0), seed=0, batch=4)
        images = api.decode_tokens(vq, result.tokens)  # [4, 3, 64, 64]
        rows.append(torch.cat(list(images), dim=2))
    strip = torch.cat([rows[0], torch.ones(3, 4, rows[0].shape[2]), rows[1]], dim=1)
    pixels = (strip.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    art = Image.fromarray(pixels).resize((4 * 64 * 3 // 2, (2 * 64 + 4) * 3 // 2), Image.NEAREST)
    card = Image.new("RGB", SIZE, BG)
    draw = ImageDraw.Draw(card)
    draw.text((16, 12), "Demo: digits, no downloads", fill=INK, font=font(24))
    card.paste(art, (16, 56))
    draw.text((16 + art.width + 12, 56 + art.height // 4 - 8), "NTP\n256 passes", fill=INK, font=font(14))
    draw.text((16 + art.width + 12, 56 + 3 * art.height // 4 - 8), "ZipAR 8\n144 passes", fill=INK, font=font(14))
    return card


def speculative_card() -> Image.Image:
    """The demo_speculative run itself: NTP, ZipAR 12 and ZipAR 12 + speculative, one image each,
    with the forward passes each took."""
    from zipar import api
    from zipar.conditions import class_condition
    from zipar.core.sampling import SamplingOptions
    from zipar.demo import demo_files

    files = demo_files()
    model = api.load_ar_model(files["ar_model"], "cpu", "fp32")
    vq = api.load_vq(files["vq_model"], "cpu", "fp32")
    cond = class_condition([3])
    grid = api.prepare(model, cond, None, vq).grid
    card = Image.new("RGB", SIZE, BG)
    draw = ImageDraw.Draw(card)
    draw.text((16, 12), "Demo: speculative decoding", fill=INK, font=font(24))
    for i, (window, spec, label) in enumerate([(grid[1], False, "NTP"), (12, False, "ZipAR 12"),
                                               (12, True, "ZipAR 12 + spec.")]):
        result = api.generate(model, cond, grid, window, SamplingOptions(cfg=2.0, top_k=0), seed=0, speculative=spec)
        pixels = (api.decode_tokens(vq, result.tokens)[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round()
        art = Image.fromarray(pixels.astype(np.uint8)).resize((144, 144), Image.NEAREST)
        x = 16 + i * 164
        card.paste(art, (x, 64))
        draw.text((x, 218), f"{label}\n{result.forward_passes} passes", fill=INK, font=font(14))
    return card


def main() -> None:
    torch.manual_seed(0)
    demo_card().save(OUT / "demo_zipar.jpg", quality=90)
    speculative_card().save(OUT / "demo_speculative.jpg", quality=90)
    for name, spec in SCHEMATICS.items():
        schematic(*spec).save(OUT / f"{name}.jpg", quality=90)
    print(f"wrote {2 + len(SCHEMATICS)} thumbnails to {OUT}")


if __name__ == "__main__":
    main()
