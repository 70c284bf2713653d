"""The GPU suite: the published models' decode times, eager and compiled, in one JSON.

    python -m bench.gpu_suite --device cuda --json gpu_suite.json     # one H100/H200, under 8 minutes
    python -m bench.gpu_suite --smoke --device cpu --json smoke.json   # tiny sizes: checks the script itself

Runs, in this order (random weights, bf16 on CUDA, batch 1, each family's CFG):
LlamaGen-L 24x24 (NTP, ZipAR-16/8/4) eager and compiled; the shipped demo model (trained weights)
at NTP and windows 12 and 8, plain and speculative at draft lengths 16 and 32, eager and
compiled; Janus-Pro-1B and -7B at 384 px
(NTP and ZipAR-8, compiled); Lumina-mGPT-7B at 768 px (ZipAR-16, compiled, one image); Lumina-mGPT 2.0
at 768 px (96 x 96 codes, ZipAR-16, compiled, one image); SimpleAR-1.5B at 1024 px (64 x 64 codes, ZipAR-8,
compiled);
Emu3-Gen at 720 px (ZipAR-8, compiled, one image). Each entry is ``bench.decode``'s report
(per-pass ms, first call with compilation, steps built, ratio to the weights-read floor,
peak memory). The suite then checks the issue's targets and records which were met; an
entry that fails (out of memory, no time left) is recorded with its error and the suite
goes on. ``--budget`` seconds stops starting new entries once spent.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from bench import decode
from zipar.io import outputs

# (name, bench.decode arguments); the smoke variant swaps in the tiny sizes
DEMO = str(Path(__file__).resolve().parent.parent / "zipar" / "assets" / "demo" / "demo_c2i_64.safetensors")
ENTRIES = [
    ("llamagen-l-24", dict(model="L", grid=24, windows="24,16,8,4", compile="both", repeats=3)),
    # trained weights, so drafts are accepted as they would be: plain and speculative (lanes and branches)
    ("demo-speculative", dict(model="B", ar_model=DEMO, downsample=4, cfg=2.0, windows="16,12,8", compile="both",
                              repeats=3, speculative=True, draft_length="16,32")),
    ("janus-pro-1b-384", dict(model="janus-pro-1b", size=384, windows="24,8", compile="on", repeats=3)),
    ("janus-pro-7b-384", dict(model="janus-pro-7b", size=384, windows="24,8", compile="on", repeats=2)),
    ("lumina-mgpt-7b-768", dict(model="lumina-mgpt-7b", size=768, windows="16", compile="on", repeats=1)),
    ("lumina-mgpt-2-768", dict(model="lumina-mgpt-2", size=768, windows="16", compile="on", repeats=1)),
    ("simplear-1.5b-1024", dict(model="simplear-1.5b", size=1024, windows="8", compile="on", repeats=2)),
    ("emu3-gen-720", dict(model="emu3-gen", size=720, windows="8", compile="on", repeats=1)),
]
SMOKE = {"L": "tiny", "janus-pro-1b": "janus-tiny", "janus-pro-7b": "janus-tiny", "lumina-mgpt-7b": "lumina-tiny",
         "lumina-mgpt-2": "lumina2-tiny", "simplear-1.5b": "simplear-tiny",
         "emu3-gen": "emu3-tiny"}
SMOKE_SIZES = {"janus-tiny": 64, "lumina-tiny": 128, "lumina2-tiny": 64, "simplear-tiny": 64, "emu3-tiny": 64}

# the targets (bf16, batch 1, CFG): (entry, what, limit)
TARGETS = [
    ("llamagen-l-24", "NTP compiled median s", 0.350),
    ("llamagen-l-24", "ZipAR-8 compiled median s", 0.150),
    ("llamagen-l-24", "ZipAR-8 compiled time ratio / pass ratio", 1.10),
    ("llamagen-l-24", "first call s (compilation included)", 60.0),
    ("janus-pro-1b-384", "ZipAR-8 compiled median s", 0.6),
    ("lumina-mgpt-7b-768", "ZipAR-16 compiled median s", 6.0),
    ("lumina-mgpt-2-768", "ZipAR-16 compiled median s", 20.0),
    ("simplear-1.5b-1024", "ZipAR-8 compiled median s", 2.0),
]


def entry_args(spec: dict, device: str, precision: str, smoke: bool, compile_override: str | None) -> argparse.Namespace:
    spec = dict(spec)
    if smoke and spec.get("ar_model"):  # the demo model is small already
        spec["repeats"], spec["windows"], spec["draft_length"] = 1, "16,8", "4"
    elif smoke:
        spec["model"] = SMOKE[spec["model"]]
        if spec["model"] == "tiny":
            spec["grid"] = 16
            spec["windows"] = "16,8,4"
        else:
            spec["size"] = SMOKE_SIZES[spec["model"]]
            spec["windows"] = "4,2"
        spec["repeats"] = 1
    if compile_override:
        spec["compile"] = compile_override
    defaults = dict(grid=None, size=None, batch=1, cfg=None, top_k=None, device=device, precision=precision, threads=0,
                    no_vq=True, json=None, markdown=None)
    return argparse.Namespace(**{**defaults, **spec})


def find(report: dict, window_is_ntp: bool, window: int | None, compile_mode: str) -> dict | None:
    for r in report.get("results", []):
        if r["compile"] == compile_mode and ((window_is_ntp and r["mode"] == "NTP") or r["window"] == window):
            return r
    return None


def check_targets(reports: dict) -> list[dict]:
    """Each target with the measured value and whether it was met (None: not measured)."""
    out = []
    for name, what, limit in TARGETS:
        report = reports.get(name, {})
        value = None
        if what.startswith("NTP compiled"):
            r = find(report, True, None, "on")
            value = r and r["median_s"]
        elif what.startswith("ZipAR-8 compiled median"):
            r = find(report, False, 8, "on")
            value = r and r["median_s"]
        elif what.startswith("ZipAR-8 compiled time ratio"):
            r = find(report, False, 8, "on")
            value = r and r["latency_over_pass_ratio"]
        elif what.startswith("ZipAR-16 compiled"):
            r = find(report, False, 16, "on")
            value = r and r["median_s"]
        elif what.startswith("first call"):
            firsts = [r["first_call_s"] for r in report.get("results", []) if r["compile"] == "on"]
            value = max(firsts) if firsts else None
        out.append({"entry": name, "target": what, "limit": limit, "value": value,
                    "met": None if value is None else bool(value <= limit)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check of the script itself)")
    p.add_argument("--compile", choices=["off", "on", "both"], help="override every entry's compile mode")
    p.add_argument("--only", help="comma-separated entry names (default: all)")
    p.add_argument("--budget", type=float, default=450.0, help="seconds after which no new entry starts")
    p.add_argument("--json", required=True, help="where to write the suite's report")
    args = p.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    start = time.perf_counter()
    reports: dict[str, dict] = {}
    for name, spec in ENTRIES:
        if wanted is not None and name not in wanted:
            continue
        if time.perf_counter() - start > args.budget:
            reports[name] = {"skipped": f"budget of {args.budget:.0f} s spent"}
            continue
        t0 = time.perf_counter()
        print(f"== {name}", file=sys.stderr)
        try:
            reports[name] = decode.run(entry_args(spec, args.device, args.precision, args.smoke, args.compile))
        except Exception as exc:  # one entry out of memory must not lose the others' numbers
            reports[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
        reports[name]["entry_seconds"] = round(time.perf_counter() - t0, 2)
        outputs.write_text(args.json, json.dumps(suite(reports, start, args), indent=2))  # progress survives a kill
    report = suite(reports, start, args)
    outputs.write_text(args.json, json.dumps(report, indent=2))
    for t in report["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"{t['entry']}: {t['target']} <= {t['limit']}: {t['value']} ({state})", file=sys.stderr)
    return 0


def suite(reports: dict, start: float, args: argparse.Namespace) -> dict:
    device = next((r["device"] for r in reports.values() if "device" in r), args.device)
    return {"benchmark": "gpu_suite", "date": datetime.date.today().isoformat(), "device": device,
            "torch": torch.__version__, "smoke": args.smoke, "seconds": round(time.perf_counter() - start, 2),
            "targets": check_targets(reports), "entries": reports}


if __name__ == "__main__":
    sys.exit(main())
