"""Memory benchmark: what the 7-8B models take in bf16, with 8-bit weights and with an 8-bit cache.

    python -m bench.memory --json bench/results/memory_cpu.json            # the four large models, bf16 and fp8
    python -m bench.memory --weights fp8_e4m3fn --kv-dtypes int8 --json bench/results/memory_cpu_kv8.json \
        --markdown bench/results/memory_cpu_kv8.md                          # 8-bit weights and an 8-bit cache
    python -m bench.memory --models janus-tiny --weights bf16,fp8_e4m3fn --json m.json   # what the test runs

Every weight format of ``--weights`` is run with every cache format of ``--kv-dtypes``
(``default``: bf16 like the compute; ``int8``: ``Family.store_cache``, 8-bit values with a scale
per vector).

For each model and weight format, in a fresh process each (peak RSS only grows): the
published network with random weights is built on the meta device and materialised in
bf16 on the CPU, its decoder layers narrowed when asked (``Family.store_weights``), then
two passes run (the prefix and one image pass, batch 1 with the family's CFG). Reported:
weight bytes (parameters and buffers), the key/value cache a whole image allocates, the
resident memory after loading, and the peak during the two passes (Linux ``VmHWM`` after
resetting it through ``/proc/self/clear_refs``), so the peak is what running adds to the
loaded model. On a GPU, ``torch.cuda.max_memory_allocated`` over a whole image is added.
The "card" estimate is the weights plus the larger of the passes' working memory (which holds
the zeroed cache) and the whole-image cache.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import time

import torch

from bench import chat_models
from bench.decode import device_name, write_report
from zipar.core.loop import generate
from zipar.core.sampling import SamplingOptions
from zipar.nets.stored import WEIGHT_DTYPES, parameter_bytes

MODELS = {"janus-pro-7b": 384, "lumina-mgpt-7b": 768, "emu3-gen": 720, "lumina-mgpt-2": 768}  # the published sizes
GB = 1e9


class Stop(Exception):
    """Raised by the progress callback once the passes to measure have run."""


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_one(name: str, weights: str, device: torch.device, passes: int, kv_dtype: str = "default") -> dict:
    spec = chat_models.SPECS[name]
    size = MODELS.get(name, spec.image_size)
    t0 = time.perf_counter()
    model = chat_models.random_model(spec, torch.device("cpu"), torch.bfloat16, size)
    dtype = WEIGHT_DTYPES[weights]
    if dtype is not None and dtype != torch.bfloat16:
        model.store_weights(dtype)
    model.store_cache(kv_dtype)
    if device.type != "cpu":
        model.move_to(device)
    gc.collect()
    cond = chat_models.condition(1)
    grid = model.grid_for(cond, size)
    opts = SamplingOptions(cfg=spec.cfg, temperature=1.0, top_k=spec.top_k)
    rows = 2 if opts.guidance else 1
    row = {"model": spec.title, "family": model.family, "image_size": size, "grid": list(grid), "weights": weights,
           "kv_dtype": kv_dtype, "compute_dtype": "bfloat16", "weight_bytes": parameter_bytes(*model.networks()),
           "kv_cache_bytes": model.cache_bytes(rows, grid), "load_seconds": round(time.perf_counter() - t0, 1),
           "rss_after_load_bytes": status_kb("VmRSS") * 1024}
    exact_peak = reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)

    def stop(progress):
        if progress.step >= passes:
            raise Stop

    t1 = time.perf_counter()
    try:
        generate(model, cond, grid, grid[1] if device.type == "cpu" else 8, opts, seed=0,
                 callback=stop if device.type == "cpu" else None, compile="off")
    except Stop:
        pass
    row["passes"] = passes if device.type == "cpu" else "whole image"
    row["run_seconds"] = round(time.perf_counter() - t1, 1)
    peak = status_kb("VmHWM") * 1024
    row["rss_peak_bytes"] = peak
    row["rss_peak_is_since_load"] = exact_peak
    row["working_bytes"] = max(0, peak - row["rss_after_load_bytes"])  # cache of 2 passes' slots + activations
    if device.type == "cuda":
        row["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        row["cuda_working_bytes"] = row["cuda_max_allocated_bytes"] - base
    row["card_estimate_bytes"] = card_estimate(row)
    return row


def card_estimate(row: dict) -> int:
    """A whole image on a card: the weights plus what running adds. The cache is allocated (and zeroed,
    so resident) before the first pass, so the measured working memory already holds it; the larger of
    the two covers a cache the passes did not fill."""
    return row["weight_bytes"] + max(row["working_bytes"], row["kv_cache_bytes"])


def run_child(name: str, weights: str, device: str, passes: int, kv_dtype: str = "default") -> dict:
    cmd = [sys.executable, "-m", "bench.memory", "--one", name, weights, "--device", device, "--passes", str(passes),
           "--kv-dtypes", kv_dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)) or ".")
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"model": name, "weights": weights, "kv_dtype": kv_dtype, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    lines = [f"{report['device']}, torch {report['torch']}, {report['date']}", "",
             "| model | weights | KV cache | weight GB | KV cache GB (whole image) | RSS after load GB | "
             "peak in 2 passes GB | card estimate GB |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        kv = r.get("kv_dtype", "default")
        if "error" in r:
            lines.append(f"| {r['model']} | {r['weights']} | {kv} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['model']} {r['image_size']} px | {r['weights']} | {kv} | {r['weight_bytes'] / GB:.2f} | "
                     f"{r['kv_cache_bytes'] / GB:.2f} | {r['rss_after_load_bytes'] / GB:.2f} | "
                     f"{r['rss_peak_bytes'] / GB:.2f} | {r['card_estimate_bytes'] / GB:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(chat_models.SPECS)}")
    p.add_argument("--weights", default="bf16,fp8_e4m3fn", help="weight formats (compute stays bf16)")
    p.add_argument("--kv-dtypes", default="default",
                   help="key/value cache formats, each run with every weight format (e.g. default,int8)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--markdown", help="write the table here")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "WEIGHTS"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one[0], args.one[1], torch.device(args.device), args.passes, args.kv_dtypes)))
        return 0
    if not args.json and not args.markdown:
        p.error("give --json and/or --markdown")
    rows = []
    for name in args.models.split(","):
        for weights, kv in [(w, k) for w in args.weights.split(",") for k in args.kv_dtypes.split(",")]:
            print(f"== {name} {weights} cache {kv}", file=sys.stderr)
            rows.append(run_child(name, weights, args.device, args.passes, kv))
            if "error" not in rows[-1]:
                rows[-1]["card_estimate_bytes"] = card_estimate(rows[-1])
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {"benchmark": "memory", "date": datetime.date.today().isoformat(),
              "device": device_name(torch.device(args.device)),
              "torch": torch.__version__, "rows": rows}
    table = markdown(report)
    print(table)
    write_report(report, args.json, args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
