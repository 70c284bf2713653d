"""Where a pass's time goes: the card's busy time and kernel count per pass against the wall clock.

The one GPU reading so far (LlamaGen-L NTP compiled on an H200: 1.13 ms per pass against a 0.23 ms
weights-read floor) cannot say whether the pass waits on the host (Python, guards, graph replay
bookkeeping) or on the card (hundreds of small kernels, each with its own start-up). One profiled image
answers that: ``card_busy_over_timed`` (the card's busy time per pass over the unprofiled run's time per
pass) near 1 means the card is the limit (fewer, larger kernels would help), far below 1 means the host
is (less Python per pass would). The profiler slows the host, so the profiled wall time is no timing. ``bench.decode --profile-windows`` adds it to a
report; the GPU suite profiles LlamaGen-L's NTP and ZipAR-8 compiled steps.
"""
from __future__ import annotations

import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from zipar.core.loop import generate


def _is_kernel(event) -> bool:
    kind = getattr(event, "device_type", None)
    return kind is not None and kind != torch.autograd.DeviceType.CPU


def _busy_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals: time the card was running at least one kernel."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        busy += stop - max(start, end)
        end = stop
    return busy


def profile_window(model, cond, grid: tuple[int, int], window: int, opts, compile_mode: str,
                   device: torch.device, seed: int = 0) -> dict:
    """One image at ``window`` under the profiler (after the caller's runs built every step)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    generate(model, cond, grid, window, opts, seed=seed, compile=compile_mode)  # every bucket built and warm
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        result = generate(model, cond, grid, window, opts, seed=seed, compile=compile_mode)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    passes = result.forward_passes
    events = list(prof.events())
    kernels = [e for e in events if _is_kernel(e)]
    row = {"window": window, "compile": compile_mode, "forward_passes": passes,
           "wall_ms_per_pass_profiled": 1000 * wall / passes,
           "cpu_ops_per_pass": sum(1 for e in events if not _is_kernel(e)) / passes,
           # a replayed CUDA graph is one launch on the host, whether or not its kernels are traced
           "graph_launches_per_pass": sum(1 for e in events if e.name == "cudaGraphLaunch") / passes,
           "kernel_launches_per_pass": sum(1 for e in events if e.name in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                           "cudaLaunchKernelExC")) / passes}
    if kernels:
        busy = _busy_us([(e.time_range.start, e.time_range.end) for e in kernels])
        names = Counter()
        times = Counter()
        for e in kernels:
            names[e.name] += 1
            times[e.name] += e.time_range.elapsed_us()
        row |= {"kernels_per_pass": len(kernels) / passes, "card_busy_ms_per_pass": busy / 1000 / passes,
                "card_busy_over_wall": busy / 1e6 / wall,
                "top_kernels": [{"name": n[:120], "count_per_pass": names[n] / passes, "ms_per_pass": t / 1000 / passes}
                                for n, t in times.most_common(8)]}
    return row
