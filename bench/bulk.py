"""Bulk sampling throughput: images per second of ``python -m zipar sample`` on 1 and N processes.

    python -m bench.bulk --json bench/results/bulk_cpu.json

Runs the shipped demo model (its VQ, window 8, CFG 2) for the same job with one process and under
``torchrun --nproc_per_node N`` (one thread per process in both, as torchrun sets it), each into a
fresh folder, and checks the two wrote the same images. Wall time includes starting the processes
and loading the model, as a user sees it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.decode import device_name, write_report

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "zipar" / "assets" / "demo"


def job(out: Path, args) -> list[str]:
    return ["-m", "zipar", "sample", "--ar-model", str(DEMO / "demo_c2i_64.safetensors"),
            "--vq-model", str(DEMO / "demo_vq.safetensors"), "--classes", "all", "--per-class", str(args.per_class),
            "--window", str(args.window), "--cfg", "2", "--top-k", "0", "--seed", "0", "--batch", str(args.batch),
            "--shard-size", str(args.shard_size), "--device", "cpu", "--out", str(out), "--quiet"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--per-class", type=int, default=8, help="images per digit (10 digits)")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=10)
    p.add_argument("--json")
    args = p.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rows, arrays = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.processes):
            out = Path(tmp) / f"p{n}"
            launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                         "--standalone", f"--nproc_per_node={n}"]
            start = time.perf_counter()
            subprocess.run(launcher + job(out, args), env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            images = json.loads((out / "manifest.json").read_text())["images"]
            arrays.append(np.load(out / "samples.npz")["arr_0"])
            rows.append({"processes": n, "threads_per_process": 1, "images": images, "seconds": round(seconds, 2),
                         "images_per_second": round(images / seconds, 3)})
            print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "bulk", "date": datetime.date.today().isoformat(), "device": device_name(torch.device("cpu")),
              "torch": torch.__version__, "model": "zipar-demo/demo_c2i_64", "window": args.window, "batch": args.batch,
              "same_images": bool(np.array_equal(arrays[0], arrays[1])), "rows": rows,
              "speedup": round(rows[1]["images_per_second"] / rows[0]["images_per_second"], 3)}
    print(json.dumps({k: report[k] for k in ("same_images", "speedup")}))
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
