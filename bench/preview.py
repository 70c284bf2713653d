"""What the live preview costs: the ZipAR Sampler node with previews on and off, same requests.

    python -m bench.preview --json bench/results/preview_cpu.json

Runs the node (outside ComfyUI the frames are still rendered, just not sent) on the shipped
demo model with its VQ connected, alternating preview off / on, and reports the median
seconds of each, the overhead in percent, the frames drawn per run, and the one-time fit of
the VQ's colours (paid by the first run with a new VQ, not counted in the medians).
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import torch

import nodes
from bench.decode import device_name, write_report
from nodes import preview
from nodes.datatypes import engine_vq

N = nodes.NODE_CLASS_MAPPINGS


def run(name, *args, **kwargs):
    return getattr(N[name](), N[name].FUNCTION)(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--windows", default="8,16", help="windows to time (16 = NTP on the demo's 16-wide grid)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)

    (model,) = run("ZipARLoadARModel", "zipar-demo/demo_c2i_64.safetensors", 0, "fp32", "cpu")
    (vq,) = run("ZipARLoadVQ", "zipar-demo/demo_vq.safetensors", "fp32", "cpu")
    (cond,) = run("ZipARClassID", 3)
    start = time.perf_counter()
    preview.fit_vq_palette(engine_vq(vq))
    fit_seconds = time.perf_counter() - start
    rows = []
    for window in [int(w) for w in args.windows.split(",")]:
        times = {False: [], True: []}
        frames = []
        real = preview.TokenPreview

        class Counting(real):
            def __call__(self, progress):
                out = super().__call__(progress)
                if out is not None:
                    frames[-1] += 1
                return out

        preview.TokenPreview = Counting
        nodes.sampler.TokenPreview = Counting
        try:
            for i in range(args.repeats + 1):
                for on in (False, True):
                    frames.append(0)
                    start = time.perf_counter()
                    run("ZipARSampler", model, cond, window, i, 2.0, 1.0, 0, 1.0, args.batch, on, vq, "off")
                    if i:  # the first round warms up
                        times[on].append(time.perf_counter() - start)
        finally:
            preview.TokenPreview = real
            nodes.sampler.TokenPreview = real
        off, on = statistics.median(times[False]), statistics.median(times[True])
        rows.append({"window": window, "batch": args.batch, "seconds_preview_off": round(off, 4),
                     "seconds_preview_on": round(on, 4), "overhead_percent": round(100 * (on - off) / off, 2),
                     "frames_per_run": max(frames[1::2])})
        print(json.dumps(rows[-1]), flush=True)
    report = {"benchmark": "preview", "date": datetime.date.today().isoformat(), "device": device_name(torch.device("cpu")),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "model": "zipar-demo/demo_c2i_64",
              "vq_palette_fit_seconds": round(fit_seconds, 4), "rows": rows}
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
