"""The GPU suite: the one prepared run that measures seconds and memory on a lent H100/H200.

    python -m bench.gpu_suite --prepare --comfyui-source /path/to/ComfyUI   # here: copy what the ComfyUI entry needs
    python -m bench.gpu_suite --dry-run                                     # here: what it would carry and run
    python -m bench.gpu_suite --device cuda --json gpu_suite.json           # there: at most --budget seconds (450)
    python -m bench.gpu_suite --smoke --device cpu --json smoke.json        # tiny sizes: a CPU check (a test runs it)

GPU time comes in short stretches (a lent machine, 15 minutes, its start included), so the suite
is one command that needs nothing installed there: random weights of the published shapes (no
downloads), bf16, batch 1, each family's CFG. Entries run in order of value (``ENTRIES``), each in
its own process (an out-of-memory error or a CUDA fault cannot take the others down; ComfyUI's
modules do not leak into the plain runs), and one starts only while enough of the budget is left
for it (its estimate for one H100). Each child rewrites its partial report after every timed
row and the suite rewrites its JSON (and markdown) after every entry, so a run cut off at any
point still leaves every number it measured. The last part of the report checks the issue's
targets (``TARGETS``): the measured value, the limit, met or missed, and the card.

The ComfyUI entry (``bench.in_comfyui``) imports ComfyUI's memory manager, patcher and ops from a
ComfyUI source tree carried to the machine in ``.gpu/ComfyUI`` (git-ignored; ``--prepare`` copies
the parts their imports need and checks those imports against the packages the GPU image has).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.gpu_carry import (CARRY_LIMIT, COMFYUI_TREE, GPU_DIR, missing_modules, prepare, tree_bytes,
                              working_tree_bytes)

REPO = Path(__file__).resolve().parent.parent
DEMO = "zipar/assets/demo/demo_c2i_64.safetensors"


@dataclass(frozen=True)
class Entry:
    name: str
    estimate_s: float  # on one H100, compilation included; decides whether it starts
    decode: dict | None = None  # bench.decode arguments; None: the ComfyUI entry
    smoke: dict = field(default_factory=dict)  # overrides for --smoke


# In order of value. Estimates for one H100, compilation included: the 2026-11-29 H200 run (LlamaGen-L NTP compiled:
# first call 36 s, 0.65 s per image) and each model's passes at a few times its weights-read floor. NTP of the
# large grids (9216 passes for Lumina-mGPT 2.0 at 768) takes minutes and is left out of their entries.
ENTRIES = [
    Entry("llamagen-l-24", 250, dict(model="L", grid=24, windows="24,16,8,4", compile="both", repeats=3,
                                     speculative_windows="24,8", speculative_compile="on", draft_length="16",
                                     profile_windows="on:24,on:8"),
          dict(model="tiny", grid=16, windows="16,8,4", speculative_windows="16,8", draft_length="4",
               profile_windows="on:16,on:8")),
    Entry("in-comfyui", 90, None, dict(repeats=1)),
    Entry("janus-pro-1b-384", 60, dict(model="janus-pro-1b", size=384, windows="24,8", compile="on", repeats=3),
          dict(model="janus-tiny", size=64, windows="4,2")),
    Entry("lumina-mgpt-7b-768", 60, dict(model="lumina-mgpt-7b", size=768, windows="16", ntp=False, compile="on",
                                         repeats=1),
          dict(model="lumina-tiny", size=128, windows="2")),
    Entry("lumina-mgpt-2-768", 160, dict(model="lumina-mgpt-2", size=768, windows="16", ntp=False, compile="on",
                                         repeats=1, variants="default,fp8_e4m3fn+int8"),
          dict(model="lumina2-tiny", size=64, windows="2")),
    Entry("janus-pro-7b-384", 70, dict(model="janus-pro-7b", size=384, windows="24,8", compile="on", repeats=2),
          dict(model="janus-tiny", size=64, windows="4,2")),
    Entry("emu3-gen-720", 100, dict(model="emu3-gen", size=720, windows="8", ntp=False, compile="on", repeats=1,
                                    variants="default,fp8_e4m3fn+int8"),
          dict(model="emu3-tiny", size=64, windows="2")),
    Entry("simplear-1.5b-1024", 45, dict(model="simplear-1.5b", size=1024, windows="8", ntp=False, compile="on",
                                         repeats=2),
          dict(model="simplear-tiny", size=64, windows="2")),
    # trained weights, so drafts are accepted as they would be: plain and speculative, compiled
    Entry("demo-speculative", 90, dict(model="B", ar_model=DEMO, downsample=4, cfg=2.0, windows="16,8", compile="on",
                                       repeats=3, speculative=True, draft_length="16,32"),
          dict(windows="16,8", draft_length="4")),
]
BY_NAME = {e.name: e for e in ENTRIES}


# -- the targets (bf16, batch 1, each family's CFG) -------------------------------------------------------------

def _row(report: dict, window: int | None, compile_mode: str = "on", speculative: bool = False,
         weights: str = "default", kv: str = "default") -> dict | None:
    for r in report.get("results", []):
        if (r["compile"] == compile_mode and bool(r.get("speculative")) == speculative
                and r.get("weights", "default") == weights and r.get("kv_dtype", "default") == kv
                and ((window is None and r["mode"].startswith("NTP")) or (window is not None and r["window"] == window
                                                                          and not r["mode"].startswith("NTP")))):
            return r
    return None


def _get(row: dict | None, key: str):
    return None if row is None else row.get(key)


def _first_call(report: dict):
    firsts = [r["first_call_s"] for r in report.get("results", []) if r["compile"] == "on"]
    return max(firsts) if firsts else None


def _peak_gb(report: dict, weights: str, kv: str):
    peaks = [r["peak_memory_mb"] for r in report.get("results", []) if r.get("weights", "default") == weights
             and r.get("kv_dtype", "default") == kv]
    return round(max(peaks) / 1024, 3) if peaks and report.get("device", "cpu").lower().find("cpu") < 0 else None


# (entry, what, limit, value of the entry's report); a limit of True: the value must be True
TARGETS = [
    ("llamagen-l-24", "NTP compiled median s", 0.350, lambda r: _get(_row(r, None), "median_s")),
    ("llamagen-l-24", "ZipAR-8 compiled median s", 0.150, lambda r: _get(_row(r, 8), "median_s")),
    ("llamagen-l-24", "ZipAR-8 compiled time ratio / pass ratio", 1.10,
     lambda r: _get(_row(r, 8), "latency_over_pass_ratio")),
    ("llamagen-l-24", "first call s (compilation included)", 60.0, _first_call),
    ("llamagen-l-24", "NTP speculative / plain, compiled", 1.0,
     lambda r: _get(_row(r, None, speculative=True), "over_plain_same_window")),
    ("llamagen-l-24", "ZipAR-8 speculative / plain, compiled", 1.0,
     lambda r: _get(_row(r, 8, speculative=True), "over_plain_same_window")),
    ("in-comfyui", "Sampler node median / API median (compile auto)", 1.05, lambda r: r.get("node_over_api")),
    ("in-comfyui", "node tokens equal the API's", True, lambda r: r.get("node_tokens_equal_api")),
    ("in-comfyui", "no compiled step rebuilt after the first Sampler call", True,
     lambda r: None if "node_steps_rebuilt_after_first_call" not in r else r["node_steps_rebuilt_after_first_call"] == 0),
    ("in-comfyui", "low-VRAM streamed tokens equal the eager API's", True,
     lambda r: r.get("lowvram_tokens_equal_eager_api") if r.get("lowvram_streamed") else None),
    ("in-comfyui", "card memory returned after unload", True, lambda r: r.get("returned_after_unload")),
    ("janus-pro-1b-384", "ZipAR-8 compiled median s", 0.6, lambda r: _get(_row(r, 8), "median_s")),
    ("lumina-mgpt-7b-768", "ZipAR-16 compiled median s", 6.0, lambda r: _get(_row(r, 16), "median_s")),
    ("lumina-mgpt-2-768", "ZipAR-16 compiled median s", 20.0, lambda r: _get(_row(r, 16), "median_s")),
    ("lumina-mgpt-2-768", "peak GB, 8-bit weights + 8-bit cache", 14.0,
     lambda r: _peak_gb(r, "fp8_e4m3fn", "int8")),
    ("emu3-gen-720", "peak GB, 8-bit weights + 8-bit cache", 11.0, lambda r: _peak_gb(r, "fp8_e4m3fn", "int8")),
    ("simplear-1.5b-1024", "ZipAR-8 compiled median s", 2.0, lambda r: _get(_row(r, 8), "median_s")),
]


def check_targets(reports: dict) -> list[dict]:
    """Each target with the measured value and whether it was met (None: not measured)."""
    out = []
    for name, what, limit, value_of in TARGETS:
        report = reports.get(name, {})
        try:
            value = value_of(report) if "results" in report or name == "in-comfyui" else None
        except (KeyError, TypeError, ZeroDivisionError):
            value = None
        if value is None:
            met = None
        elif limit is True:
            met = bool(value)
        else:
            met = bool(value <= limit)
        out.append({"entry": name, "target": what, "limit": limit, "value": value, "met": met,
                    "device": report.get("device")})
    return out


# -- one entry, in a child process ---------------------------------------------------------------------------

def entry_args(entry: Entry, device: str, precision: str, smoke: bool, compile_override: str | None) -> argparse.Namespace:
    """bench.decode's arguments for a decode entry."""
    spec = dict(entry.decode)
    if smoke:
        spec |= dict(repeats=1) | entry.smoke
    if compile_override:
        spec["compile"] = compile_override
    defaults = dict(grid=None, size=None, batch=1, cfg=None, top_k=None, device=device, precision=precision, threads=0,
                    no_vq=True, json=None, markdown=None, speculative=False, speculative_windows=None,
                    speculative_compile=None, draft_length="16", variants="default", ar_model=None, downsample=16,
                    ntp=True, profile_windows=None)
    if spec.get("ar_model"):
        spec["ar_model"] = str(REPO / spec["ar_model"])
    return argparse.Namespace(**{**defaults, **spec})


def decode_command(entry: Entry, smoke: bool = False) -> str:
    """The same measurement as a bench.decode command line (to rerun one entry by hand)."""
    args = vars(entry_args(entry, "cuda", "auto", smoke, None))
    parts = ["python -m bench.decode"]
    for key in ("model", "ar_model", "downsample", "grid", "size", "windows", "cfg", "compile", "repeats",
                "speculative_windows", "speculative_compile", "draft_length", "variants", "profile_windows"):
        value = args.get(key)
        if value is None or (key == "downsample" and not args.get("ar_model")) or (key == "variants" and value == "default"):
            continue
        if key == "draft_length" and not (args.get("speculative") or args.get("speculative_windows")):
            continue
        if key == "ar_model":
            value = Path(value).relative_to(REPO).as_posix()  # as it would be typed in the checkout
        parts.append(f"--{key.replace('_', '-')} {value}")
    if args.get("speculative"):
        parts.append("--speculative")
    if not args.get("ntp", True):
        parts.append("--no-ntp")
    return " ".join(parts + ["--device cuda --no-vq"])


def run_child(args: argparse.Namespace) -> int:
    """One entry in this process (the suite's child); its report, partial after every row, to --json."""
    from zipar.io import outputs

    entry = BY_NAME[args.child]

    def write(report: dict) -> None:
        outputs.write_text(args.json, json.dumps(report, indent=2, default=str))

    from bench import in_comfyui

    if args.compile_backend:  # smoke test: the compiled path traced by dynamo, without inductor's C++ build
        from zipar.core import static_step

        in_comfyui.use_backend(static_step, args.compile_backend)  # (the ComfyUI entry's pack copy: in run)
    if entry.decode is None:
        device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
        # auto: what artists run (compiled on CUDA); the smoke test's stand-in backend compiles on the CPU too
        ns = argparse.Namespace(comfyui=args.comfyui, device=device, window=8, cfg=4.0,
                                compile="on" if args.compile_backend else "auto", compile_backend=args.compile_backend,
                                repeats=entry.smoke.get("repeats", 3) if args.smoke else 3, smoke=args.smoke)
        write(in_comfyui.run(ns, write))
        return 0
    from bench import decode

    write(decode.run(entry_args(entry, args.device, args.precision, args.smoke, args.compile),
                     lambda partial: write(partial)))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def child_command(name: str, args: argparse.Namespace, part: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bench.gpu_suite", "--child", name, "--device", args.device,
           "--precision", args.precision, "--json", str(part)]
    if args.smoke:
        cmd.append("--smoke")
    if args.compile:
        cmd += ["--compile", args.compile]
    if args.compile_backend:
        cmd += ["--compile-backend", args.compile_backend]
    if args.comfyui:
        cmd += ["--comfyui", str(args.comfyui)]
    return cmd


def run_entry(name: str, args: argparse.Namespace, seconds: float, workdir: Path) -> dict:
    """The child's report; on a crash or timeout, what it wrote before, with the error."""
    part = workdir / f"{name}.json"
    proc = subprocess.Popen(child_command(name, args, part), cwd=REPO, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    error = None
    try:
        code = proc.wait(timeout=max(1.0, seconds))
        if code:
            error = f"exit status {code}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its compile workers
        proc.wait()
        error = f"stopped at the suite's budget after {seconds:.0f} s"
    try:
        report = json.loads(part.read_text())
    except (OSError, ValueError):
        report = {}
    if error:
        report["error"] = error
    return report


# -- the suite -------------------------------------------------------------------------------------------------

def suite_report(reports: dict, start: float, args: argparse.Namespace) -> dict:
    import torch

    device = next((r["device"] for r in reports.values() if r.get("device")), args.device)
    return {"benchmark": "gpu_suite", "date": datetime.date.today().isoformat(), "device": device,
            "torch": torch.__version__, "smoke": args.smoke, "budget_s": args.budget,
            "seconds": round(time.perf_counter() - start, 2), "order": [e.name for e in ENTRIES],
            "targets": check_targets(reports), "entries": reports}


def markdown(report: dict) -> str:
    """The targets table and each entry's rows, as docs/benchmarks.md shows them."""
    from bench import decode

    lines = [f"GPU suite: {report['device']}, torch {report['torch']}, {report['date']}, {report['seconds']:.0f} s"
             + (" (smoke: tiny sizes)" if report["smoke"] else ""), "",
             "| entry | target | limit | measured | met |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        value = t["value"] if not isinstance(t["value"], float) else f"{t['value']:.3g}"
        state = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['entry']} | {t['target']} | {t['limit']} | {value if value is not None else ''} | {state} |")
    for name, r in report["entries"].items():
        lines += ["", f"### {name}", ""]
        if r.get("skipped"):
            lines.append(f"Not run: {r['skipped']}.")
            continue
        if r.get("error"):
            lines.append(f"Error: {r['error']}.")
        if r.get("results") and not r.get("partial"):
            r = {"batch": 1, "cfg": None, "precision": "", "date": report["date"], "torch": report["torch"],
                 "plain_kv_loop_ntp_skipped": "not in this report", **r}
            lines.append(decode.markdown(r))
        elif r.get("results"):  # cut off: the rows it timed, without the ratios computed at the end
            lines += ["| mode | compile | window | weights | cache | passes | median s | first call s | peak MB |",
                      "|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {x.get('mode')} | {x.get('compile')} | {x.get('window')} | {x.get('weights')} | "
                      f"{x.get('kv_dtype')} | {x.get('forward_passes')} | {x.get('median_s')} | {x.get('first_call_s')} | "
                      f"{x.get('peak_memory_mb')} |" for x in r["results"]]
        elif r.get("benchmark") == "in_comfyui":
            keys = ("api_median_s", "node_median_s", "node_over_api", "api_first_call_s", "node_first_call_s",
                    "node_tokens_equal_api", "node_compiled", "node_steps_built", "lowvram_s", "lowvram_streamed",
                    "lowvram_tokens_equal_eager_api", "api_peak_mb", "node_peak_mb", "lowvram_peak_mb",
                    "allocated_before_mb", "allocated_after_unload_mb", "returned_after_unload")
            lines += ["| measure | value |", "|---|---|"] + [f"| {k} | {r.get(k)} |" for k in keys if k in r]
        for prof in r.get("profiles", []):
            lines.append(f"\nProfiled, window {prof['window']} compile {prof['compile']}: "
                         + ", ".join(f"{k} {prof[k]:.3g}" for k in ("kernels_per_pass", "card_busy_ms_per_pass",
                                                                     "card_busy_over_timed", "cpu_ops_per_pass")
                                     if k in prof))
    return "\n".join(lines) + "\n"


def run_suite(args: argparse.Namespace) -> int:
    from zipar.io import outputs

    wanted = set(args.only.split(",")) if args.only else None
    unknown = (wanted or set()) - set(BY_NAME)
    if unknown:
        raise SystemExit(f"--only: no entry {', '.join(sorted(unknown))}; the entries: {', '.join(BY_NAME)}")
    start = time.perf_counter()
    reports: dict[str, dict] = {}
    workdir = Path(tempfile.mkdtemp(prefix="zipar-gpu-suite-"))

    def save() -> dict:
        report = suite_report(reports, start, args)
        outputs.write_text(args.json, json.dumps(report, indent=2, default=str))
        if args.markdown:
            outputs.write_text(args.markdown, markdown(report))
        return report

    for entry in ENTRIES:
        if wanted is not None and entry.name not in wanted:
            continue
        left = args.budget - (time.perf_counter() - start)
        if entry.decode is None and not args.comfyui:
            reports[entry.name] = {"skipped": "no ComfyUI source tree (--comfyui, or .gpu/ComfyUI from --prepare)"}
        elif not args.smoke and left < 0.6 * entry.estimate_s:
            reports[entry.name] = {"skipped": f"{left:.0f} s of the {args.budget:.0f} s budget left, "
                                              f"estimate {entry.estimate_s:.0f} s"}
        else:
            print(f"== {entry.name} ({left:.0f} s of the budget left)", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            reports[entry.name] = run_entry(entry.name, args, left, workdir)
            reports[entry.name]["entry_seconds"] = round(time.perf_counter() - t0, 2)
        save()
    report = save()
    shutil.rmtree(workdir, ignore_errors=True)
    for t in report["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        limit = "is true" if t["limit"] is True else f"<= {t['limit']}"
        print(f"{t['entry']}: {t['target']} {limit}: {t['value']} ({state})", file=sys.stderr)
    return 0


# -- what travels, and the dry run ---------------------------------------------------------------------------

DEVICE_COMMAND = ("PYTHONUNBUFFERED=1 python3 -m bench.gpu_suite --device cuda --json $OUT/gpu_suite.json "
                  "--markdown $OUT/gpu_suite.md 2>&1 | tee $OUT/gpu_suite.log")


def dry_run(args: argparse.Namespace) -> int:
    """Print what the run would carry and run, and check what can be checked without a GPU."""
    problems = []
    tree = Path(args.comfyui) if args.comfyui else None
    print("GPU suite, dry run: nothing is run.\n")
    work = working_tree_bytes()
    carried = tree_bytes(GPU_DIR)
    print(f"travels: the working tree {work / 2**20:.1f} MiB + carry ['.gpu'] {carried / 2**20:.1f} MiB = "
          f"{(work + carried) / 2**20:.1f} MiB of {CARRY_LIMIT / 2**20:.0f} MiB")
    if work + carried > CARRY_LIMIT:
        problems.append("what travels is over the device tool's 64 MiB")
    if tree is None:
        problems.append("no ComfyUI tree: the in-comfyui entry would be skipped "
                        "(python -m bench.gpu_suite --prepare --comfyui-source PATH)")
    elif not (tree / "comfy" / "model_management.py").is_file():
        problems.append(f"{tree} holds no comfy/model_management.py")
    elif not tree.resolve().is_relative_to(REPO):
        problems.append(f"{tree} is outside the checkout and would not travel "
                        f"(python -m bench.gpu_suite --prepare --comfyui-source {tree})")
    else:
        missing = missing_modules(tree)
        print(f"ComfyUI tree: {tree} (version {_version(tree)}), {tree_bytes(tree) / 2**20:.1f} MiB; "
              f"module-level imports the GPU image lacks: {', '.join(missing) or 'none'}")
        if missing:
            problems.append(f"carry wheels for {', '.join(missing)} (the device library's README says how)")
    print(f"\nthe call: run(command={DEVICE_COMMAND!r}, carry=['.gpu'], timeout_s=540)")
    print("   (python3 there holds torch, numpy, safetensors, pillow: nothing to install)\n")
    print(f"entries, in order (budget {args.budget:.0f} s; an entry starts while 60% of its estimate is left):")
    at = 0.0
    for i, e in enumerate(ENTRIES, 1):
        starts = args.budget - at >= 0.6 * e.estimate_s
        what = decode_command(e) if e.decode else (
            "python -m bench.in_comfyui --comfyui .gpu/ComfyUI --device cuda (Load AR Model -> Sampler -> VQ Decode, "
            "then low-VRAM streaming, then unload)")
        print(f"{i:>3}  {e.name:<20} ~{e.estimate_s:>4.0f} s  from {at:>4.0f} s  "
              f"{'' if starts else '(after the budget: runs only if the ones before are quicker) '}{what}")
        at += e.estimate_s
        if e.decode:
            try:
                from bench import decode

                decode.parse_variants(e.decode.get("variants"))
            except SystemExit as exc:
                problems.append(f"{e.name}: {exc}")
    print("\ntargets:")
    for name, what, limit, _ in TARGETS:
        print(f"  {name}: {what} {'is true' if limit is True else f'<= {limit}'}")
    print("\nnext call, if time is left (warm machine): the same command with --only and the entries not run")
    if problems:
        print("\nNOT READY:\n  " + "\n  ".join(problems))
        return 1
    print("\nready.")
    return 0


def _version(tree: Path) -> str:
    from bench.in_comfyui import comfyui_version

    return comfyui_version(tree) or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check of the suite itself)")
    p.add_argument("--compile", choices=["off", "on", "both"], help="override every decode entry's compile mode")
    p.add_argument("--compile-backend", help=argparse.SUPPRESS)  # smoke test: e.g. 'eager' (dynamo without inductor)
    p.add_argument("--only", help="comma-separated entry names (default: all)")
    p.add_argument("--budget", type=float, default=450.0,
                   help="seconds for the whole suite: an entry starts while 60%% of its estimate is left, and is "
                        "stopped when the budget is spent (its rows so far are kept)")
    p.add_argument("--comfyui", help="ComfyUI source tree for the in-comfyui entry (default: .gpu/ComfyUI if there)")
    p.add_argument("--json", help="where to write the suite's report (required to run)")
    p.add_argument("--markdown", help="also write the report as markdown tables")
    p.add_argument("--dry-run", action="store_true", help="print what would travel and run; run nothing")
    p.add_argument("--prepare", action="store_true", help="copy ComfyUI's needed parts into .gpu/ComfyUI")
    p.add_argument("--comfyui-source", help="--prepare: a ComfyUI checkout or its git directory")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one entry, in the suite's child process
    args = p.parse_args(argv)
    if args.comfyui is None and (COMFYUI_TREE / "comfy").is_dir():
        args.comfyui = str(COMFYUI_TREE)
    if args.prepare:
        if not args.comfyui_source:
            p.error("--prepare needs --comfyui-source (a ComfyUI checkout or git directory)")
        return prepare(Path(args.comfyui_source))
    if args.dry_run:
        return dry_run(args)
    if not args.json:
        p.error("--json is required to run the suite")
    if args.child:
        return run_child(args)
    return run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
