"""Speculative forwards per image on the demo model, for settings the quality tables leave out.

    python -m bench.spec_forwards 16:16:off 12:16:off 16:64:on --json spec_forwards.json [--per-class 10]

Each setting is window:draft_length:branches (on or off); ``--per-class`` images of every digit
with the seeds ``bench.quality`` uses (seed 0), one image per call. Forwards only: a
speculative row's images have its window's distribution by construction (the tests check it
exactly), so what changes between settings is the count.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from zipar import api
from zipar.core.sampling import SamplingOptions
from zipar.demo import DEFAULT_CFG, demo_files
from zipar.io import outputs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="+", help="window:draft_length:on|off (draft branches)")
    p.add_argument("--per-class", type=int, default=10)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(p, args)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process keeps its own


def run(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    model = api.load_ar_model(str(demo_files()["ar_model"]), device="cpu")
    opts = SamplingOptions(cfg=DEFAULT_CFG, temperature=1.0)
    rows = []
    for setting in args.settings:
        w, d, branches = setting.split(":")
        if branches not in ("on", "off"):
            p.error(f"{setting!r}: the third field is on or off")
        forwards = []
        for i in range(args.per_class):
            for k in range(10):
                r = api.generate(model, api.class_condition([k]), (16, 16), int(w), opts, seed=i * 10 + k,
                                 speculative=True, draft_length=int(d), draft_branches=branches == "on")
                forwards.append(r.forward_passes)
        row = {"window": int(w), "draft_length": int(d), "branches": branches == "on", "images": len(forwards),
               "forwards": round(sum(forwards) / len(forwards), 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        report = {"benchmark": "bench.spec_forwards", "date": time.strftime("%Y-%m-%d"), "cfg": DEFAULT_CFG,
                  "temperature": 1.0, "torch": torch.__version__, "rows": rows}
        outputs.write_atomic(args.json, lambda f: f.write(json.dumps(report, indent=1).encode()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
