"""The decode loop: run a plan against a model family and sample the token grid.

A pass is a handful of gathers, one forward and one batched sampling call, with no
host-device synchronisation unless a progress callback asks for it (``plan.py`` holds the
index tensors, ``schedule.py`` the rules).
"""
from __future__ import annotations


import logging
import operator
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..errors import ZipARError, free_bytes, memory_guard
from .contract import Condition, Family
from .rng import seed_tensor
from .sampling import SamplingOptions, sample_cells
from .plan import Plan, build_plan
from .schedule import PREFIX, num_passes
from .speculative import DEFAULT_DRAFT_LENGTH, branch_slots_for, check_draft_length, run_speculative
from .static_step import CompileFailed, resolve_compile, run_static, state_of

log = logging.getLogger("zipar")


@dataclass
class Progress:
    """Handed to a callback after every pass (for progress bars, previews, interrupts)."""

    step: int  # passes done
    total: int
    tokens: torch.Tensor  # [images, H, W] on the model's device; only ``filled`` cells are final
    filled: torch.Tensor  # [H, W] bool (CPU)


@dataclass
class GenerationResult:
    tokens: torch.Tensor  # [images, H, W] int64 on the CPU
    forward_passes: int
    seconds: float
    grid: tuple[int, int]
    window: int
    device: str = ""
    dtype: str = ""
    labels: list[str] = field(default_factory=list)
    compiled: bool = False  # ran through the compiled, bucketed step (``static_step.py``)
    compile_seconds: float = 0.0  # first calls of the steps built in this run (0 once they are kept)
    graphs_built: int = 0
    speculative: bool = False  # several passes' cells per forward, with drafts (``speculative.py``)
    draft_length: int = 0
    drafts_accepted: int = 0  # drafted tokens kept, summed over the images
    branch_tokens: int = 0  # tokens committed through draft branches, summed over the images

    @property
    def next_token_passes(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens_per_pass(self) -> float:
        """Tokens of one image per forward pass: 1 for next-token prediction."""
        return self.next_token_passes / self.forward_passes

    @property
    def accepted_per_pass(self) -> float:
        """Drafted tokens kept per forward pass and image (speculative mode; 0 otherwise)."""
        images = max(int(self.tokens.shape[0]), 1)
        return self.drafts_accepted / images / max(self.forward_passes - 1, 1)

    def stats(self) -> dict:
        return {
            "forward_passes": self.forward_passes,
            "next_token_passes": self.next_token_passes,
            "grid": list(self.grid),
            "window": self.window,
            "images": int(self.tokens.shape[0]),
            "seconds": round(self.seconds, 4),
            "device": self.device,
            "dtype": self.dtype,
            "compiled": self.compiled,
            "compile_seconds": round(self.compile_seconds, 3),
            "graphs_built": self.graphs_built,
            "speculative": self.speculative,
            "draft_length": self.draft_length,
            "tokens_per_pass": round(self.tokens_per_pass, 3),
            "accepted_per_pass": round(self.accepted_per_pass, 3),
            "branch_tokens": self.branch_tokens,
        }

    def report(self) -> str:
        """One line for people, e.g. '224 forward passes instead of 576 (-61%), 1.9 s'."""
        saved = 100.0 * (1 - self.forward_passes / self.next_token_passes)
        if self.forward_passes == self.next_token_passes:
            head = f"{self.forward_passes} forward passes (next-token prediction)"
        else:
            head = f"{self.forward_passes} forward passes instead of {self.next_token_passes} (-{saved:.0f}%)"
        if self.speculative:
            head += (f", {self.tokens_per_pass:.2f} tokens per pass ({self.accepted_per_pass:.2f} drafts accepted "
                     f"per pass, draft length {self.draft_length})")
        tail = f", compiled ({self.graphs_built} new steps, {self.compile_seconds:.1f} s to build)" \
            if self.graphs_built and self.compiled else ""
        return f"{head}, {self.seconds:.1f} s{tail}"


ProgressCallback = Callable[[Progress], None]
TraceCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@torch.inference_mode()
def generate(
    model: Family,
    cond: Condition,
    grid: tuple[int, int],
    window: int,
    options: SamplingOptions = SamplingOptions(),
    seed: int = 0,
    batch: int = 1,
    callback: ProgressCallback | None = None,
    trace: TraceCallback | None = None,
    row0_first: bool | None = None,
    compile: str = "off",
    compile_backend: str | None = None,
    first_image: int = 0,
    speculative: bool = False,
    draft_length: int = DEFAULT_DRAFT_LENGTH,
    draft_branches: bool = True,
) -> GenerationResult:
    """Generate ``len(cond) * batch`` token grids with ZipAR (window < width) or NTP.

    ``trace(pass_index, emitted_cells, raw_logits)`` sees the unguided logits of both CFG
    branches for every emitted cell; tests use it to check them against uncached forwards.
    ``row0_first`` overrides when row 1 starts; None follows the family's official code
    (``model.row0_first``). ``compile``: 'off' (eager, exact shapes), 'on' (the bucketed step
    through torch.compile; CUDA graphs on CUDA) or 'auto' (on for CUDA, off on the CPU).
    ``compile_backend`` is for tests: a torch.compile backend name, or 'none' for the
    bucketed step uncompiled. A seed gives the same tokens in every mode.

    ``first_image``: the index of this call's first image in a larger job. An image's random
    draws are keyed by (seed, its index, cell), so image i of a job is the same whether it is
    drawn alone, in any batch or by any process (bulk sampling, ``zipar.bulk``).

    ``speculative``: verify up to ``draft_length`` further passes per forward with drafts
    (``speculative.py``): the same distribution (greedy: the same tokens) in fewer forwards. It
    always runs the bucketed step, compiled when ``compile`` says so. Its images depend on the
    seed and on the batch they are drawn in. ``draft_branches``: also feed the likeliest other
    tokens of each lane's first open cell, each with its continuation (a draft tree; on by
    default, off for comparisons).
    """
    height, width = grid
    options.validate()
    if options.top_k >= int(model.vocab_size):  # keeps every code: the same draw without sorting the vocabulary
        options = replace(options, top_k=0)
    batch = _as_int(batch, "batch")
    if batch < 1:
        raise ZipARError(f"batch must be at least 1 (got {batch}).")
    if len(cond) == 0:
        raise ZipARError("nothing to generate: the condition is empty (give at least one class id or prompt).")
    window = _as_int(window, "window")
    spec = check_draft_length(draft_length) if speculative else 0
    if row0_first is None:
        row0_first = model.row0_first
    static = resolve_compile(compile, model.device) or compile_backend is not None
    if compile == "auto" and state_of(model).failed:
        static = False  # building failed before for this model: auto stays eager
    check_memory(model, len(cond), batch, grid, options.guidance)
    scales = model.guidance_scales(tuple(grid), options.cfg, options.cfg_schedule) if options.guidance else None
    with memory_guard(f"generating {len(cond) * batch} image(s) of {height}x{width} tokens",
                      "lower the batch size or the image size"):
        try:
            return _generate(model, cond, grid, window, options, seed, batch, callback, trace, bool(row0_first),
                             static, compile_backend, _as_int(first_image, "first_image"), spec,
                             bool(draft_branches), scales)
        except CompileFailed as exc:
            if compile != "auto":
                raise
            log.warning("ZipAR: %s Running eager instead (compile=auto).", exc)
            return _generate(model, cond, grid, window, options, seed, batch, callback, trace, bool(row0_first),
                             first_image=_as_int(first_image, "first_image"), draft_length=spec,
                             branches=bool(draft_branches), scales=scales)


def request_bytes(model: Family, images: int, grid: tuple[int, int], guidance: bool) -> int:
    """What a request allocates besides the weights: its key/value cache (two sequences per image
    with guidance) and its token buffers. A memory manager is asked to free this much first."""
    return images * (model.cache_bytes(2 if guidance else 1, grid) + grid[0] * grid[1] * 8)


def check_memory(model: Family, conditions: int, batch: int, grid: tuple[int, int], guidance: bool) -> None:
    """Refuse a request whose key/value cache cannot fit before allocating anything, naming the
    largest batch that would (a huge batch typed into a UI must not take the host down)."""
    images = conditions * batch
    per_image = request_bytes(model, 1, grid, guidance)
    free = free_bytes(model.device)
    if free is None or images * per_image <= free:
        return
    fit = int(free // per_image) // conditions
    advice = (f"lower the batch size to at most {fit}" if fit >= 1 else
              "even a batch of 1 does not fit: lower the image size or use a device with more memory")
    raise ZipARError(f"{images} image(s) of {grid[0]}x{grid[1]} tokens need about {images * per_image / 1e9:.3g} GB "
                     f"for the key/value cache, but only {free / 1e9:.3g} GB is free on {model.device}; {advice}.")


def _generate(model, cond, grid, window, options, seed, batch, callback, trace, row0_first, static=False,
              backend=None, first_image=0, draft_length=0, branches=True, scales=None) -> GenerationResult:
    height, width = grid
    plan = build_plan(height, width, window, str(model.device), row0_first)
    cond = cond.repeat(batch)
    images = len(cond)
    device = model.device
    seed_t = seed_tensor(seed, device)
    image_keys = torch.arange(first_image, first_image + images, device=device)  # index in the job, not the batch
    # the numbers sampling reads: the options themselves, or tensors holding the family's per-cell scales
    params = options if scales is None else options.as_tensors(device, scales)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    branch_slots = branch_slots_for(draft_length) if draft_length and branches else 0
    if static or draft_length:
        pool = state_of(model).pool
        pool.extra_slots = branch_slots  # speculative draft branches live past the scratch slot
        session = model.start(cond, grid, options.guidance, pool)
    else:
        session = model.start(cond, grid, options.guidance)
    session.prepare(plan)  # sessions that need per-pass layouts take them from the plan here, once
    prefix = session.prefix
    rows = prefix.visible.shape[0]
    prefix_mask = prefix.visible[:, None, None, :]
    first = prefix.logits[:, None, :]
    if not bool(torch.isfinite(first).all()):  # one check, on the first pass: the rest would be garbage too
        raise ZipARError("the model's first logits are NaN or infinite: its weights are corrupt, or half precision "
                         "overflowed; try bf16 or fp32 precision, or re-download the model.")
    if trace is not None:
        trace(0, torch.zeros(1, dtype=torch.long), first)
    extra = {}
    if static or draft_length:
        def first_tokens(buffer):
            buffer[:, 0] = sample_cells(first, options, params, seed_t, image_keys, plan.emits[:1])[:, 0]

        def report(s, buffer):
            _report(callback, plan, s, buffer[:, :height * width], grid)

    if draft_length:  # the bucketed step, uncompiled unless compile asks for it
        run = run_speculative(model, session, plan, images, options, seed_t, backend if static else "none",
                              first_tokens, report, trace, image_keys, draft_length, branch_slots, scales)
        extra = dict(compiled=static and backend != "none", compile_seconds=run.compile_seconds,
                     graphs_built=run.graphs_built, speculative=True, draft_length=draft_length,
                     drafts_accepted=run.drafts_accepted, branch_tokens=run.branch_tokens)
        return _finish(model, cond, plan, run.tokens, grid, window, start, extra, forwards=1 + run.forwards)
    if static:

        run = run_static(model, session, plan, images, options, seed_t, backend, first_tokens, report, trace,
                         image_keys, scales)
        extra = dict(compiled=backend != "none", compile_seconds=run.compile_seconds, graphs_built=run.graphs_built)
        return _finish(model, cond, plan, run.tokens, grid, window, start, extra)
    tokens = torch.zeros(images, height * width, dtype=torch.long, device=device)
    tokens[:, 0] = sample_cells(first, options, params, seed_t, image_keys, plan.emits[:1])[:, 0]
    _report(callback, plan, 0, tokens, grid)
    for s in range(1, plan.num_passes):
        p = plan.pass_tensors(s)
        n = p.cells.shape[0]
        ids = tokens[:, p.sources]
        if options.guidance:
            ids = torch.cat([ids, ids])
        visible = plan.visible(p)
        mask = torch.cat([prefix_mask.expand(rows, 1, n, prefix.length), visible.expand(rows, 1, n, p.grid_len)], dim=-1)
        logits = session.step(ids, p.cells, mask, prefix.length + p.grid_len, p.queries, pass_index=s)
        if trace is not None:
            trace(s, p.emits, logits)
        tokens[:, p.emits] = sample_cells(logits, options, params, seed_t, image_keys, p.emits)
        _report(callback, plan, s, tokens, grid)
    return _finish(model, cond, plan, tokens, grid, window, start, extra)


def _finish(model, cond, plan, tokens, grid, window, start, extra, forwards: int | None = None) -> GenerationResult:
    device = model.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    passes = plan.schedule.num_passes if forwards is None else forwards
    return GenerationResult(tokens.reshape(-1, *grid).cpu(), passes, seconds, tuple(grid), window,
                            str(device), str(model.dtype).removeprefix("torch."), list(cond.labels), **extra)


def _as_int(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ZipARError(f"{name} must be a whole number (got {value!r}).") from None


def _report(callback, plan: Plan, step: int, tokens: torch.Tensor, grid) -> None:
    if callback is not None:
        callback(Progress(step + 1, plan.num_passes, tokens.view(-1, *grid), plan.filled_after(step).view(grid)))


def expected_passes(grid: tuple[int, int], window: int, row0_first: bool = True) -> int:
    return num_passes(grid[0], grid[1], window, row0_first)


__all__ = ["generate", "GenerationResult", "Progress", "build_plan", "expected_passes", "PREFIX"]
