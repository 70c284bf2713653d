"""The compiled decode path: every pass in one of a few fixed shapes, with no host reads.

The eager loop (``loop.py``) feeds each pass exactly its inputs and slices the cache to the
furthest slot written, so every pass has its own shapes: nothing can be captured, and on a
GPU a pass costs hundreds of kernel launches. Here a pass is one call of a step compiled
once per *bucket* (its input count rounded up to a power of two; ``bucket_for``):

- inputs beyond a pass's own are padding: they write the cache's scratch slot, which no
  query sees, and their emits go to a dummy cell past the grid that is then dropped;
- the cache is full length and preallocated (``CachePool``), attended over whole: what
  a query may see is computed inside the step from per-slot tables (raster order, the pass
  that first fills the slot) and the pass number, which comes in as data;
- guidance, temperature, top-k/top-p and the draw happen inside the step, with randomness
  keyed by (seed, image, cell) (``rng.py``), so padding, batch and compilation never change
  a sampled token.

Steps are kept per model for the process, so a second image of the same shape starts at
once; only the first call of each bucket compiles.
"""
from __future__ import annotations

import time
import types
import weakref
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ZipARError
from .cache import CachePool
from .plan import Plan
from .row_ends import expand_pass
from .sampling import SamplingOptions, SamplingTensors, sample_cells, target_probs
from .verify import verify_drafts

class CompileFailed(ZipARError):
    """torch.compile could not build a step (the eager loop gives the same images)."""


NEVER = 1 << 40  # order and fill of the scratch slot: after every query, filled at no pass
COMPILE_MODES = ("auto", "off", "on")


def bucket_for(n: int) -> int:
    """The padded size of a pass with ``n`` inputs: the next power of two.

    Passes grow and shrink by one active row at a time, so a ladder of powers of two gives
    at most log2(largest pass) + 1 shapes (6 up to 32 inputs, 8 up to 128) whatever the
    window, and one compiled set serves NTP and every window of a grid.
    """
    if n < 1:
        raise ValueError(f"a pass has at least one input (got {n})")
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class StaticTables:
    """A plan's passes as padded index rows, one table per bucket size, on the device.

    A row is ``[passes(B), sources(B), offsets(B), order(B), row_end(B), queries(B), emits(B)]``:
    each input's pass, the grid cells whose tokens are fed, the physical slots they fill (after the prefix),
    their raster order (-1 for padding), which inputs are a row's end-of-line token, which
    input predicts each emitted cell, and the emitted cells (``dummy`` for padding).
    """

    rows: dict[int, torch.Tensor]  # bucket -> [passes in it, 7 * bucket] long
    where: tuple[tuple[int, int], ...]  # per pass (0: the prefix, unused): (bucket, row in its table)
    emits: tuple[int, ...]  # per pass: real emitted cells (the rest of its row is padding)
    slot_order: torch.Tensor  # [image_slots + 1] long: raster order of each physical slot; the scratch slot last
    slot_fill: torch.Tensor  # [image_slots + 1] long: first pass that writes each slot
    image_slots: int
    dummy: int  # the cell padded emits write (H * W)
    segments: tuple["Segment", ...] = ()  # per pass (0: None): its unpadded fields (speculative forwards mix them)

    @property
    def buckets(self) -> list[int]:
        return sorted(self.rows)


@dataclass
class Segment:
    """One pass's inputs and emits, unpadded (host lists)."""

    passes: list[int]  # per input: the pass it belongs to (what it may see follows from it)
    sources: list[int]
    offsets: list[int]
    order: list[int]
    row_end: list[int]
    queries: list[int]
    emits: list[int]

    def padded(self, bucket: int, image_slots: int, dummy: int) -> list[int]:
        pad, pad_m = bucket - len(self.sources), bucket - len(self.emits)
        last = self.passes[-1]
        return (self.passes + [last] * pad + self.sources + [0] * pad + self.offsets + [image_slots] * pad
                + self.order + [-1] * pad + self.row_end + [0] * pad + self.queries + [0] * pad_m
                + self.emits + [dummy] * pad_m)


def static_tables(plan: Plan, row_ends: bool) -> StaticTables:
    """Derived once per plan and layout (kept with the plan)."""
    key = ("static", row_ends)
    if key not in plan.derived:
        plan.derived[key] = _build_tables(plan, row_ends)
    return plan.derived[key]


def _build_tables(plan: Plan, row_ends: bool) -> StaticTables:
    sched = plan.schedule
    height, width = sched.height, sched.width
    stride = width + (1 if row_ends else 0)
    image_slots = height * stride
    dummy = height * width
    fill = sched.fill_step()

    slot_fill = [NEVER] * (image_slots + 1)
    for cell, f in enumerate(fill):
        r, c = divmod(cell, width)
        slot_fill[r * stride + c] = f
        if row_ends and c == width - 1:
            slot_fill[r * stride + width] = f  # the EOL is fed with every feed of its row's last cell
    slot_order = list(range(image_slots)) + [NEVER]

    rows: dict[int, list[list[int]]] = {}
    where: list[tuple[int, int]] = [(0, 0)]
    emits_count = [1]
    segments: list[Segment | None] = [None]
    for s, sp in enumerate(sched.passes[1:], start=1):
        cells = [f.cell for f in sp.feeds]
        sources = [f.source for f in sp.feeds]
        queries = list(sp.queries)
        if row_ends:
            offsets, eol_rows, phys_queries, _ = expand_pass(torch.tensor(cells), torch.tensor(queries),
                                                             max(cells) + 1, width)
            offsets, queries = offsets.tolist(), phys_queries.tolist()
            sources = sources + [0] * len(eol_rows)
            row_end = [0] * len(cells) + [1] * len(eol_rows)
        else:
            offsets, row_end = list(cells), [0] * len(cells)
        n, m = len(offsets), len(sp.emits)
        b = bucket_for(max(n, m))
        seg = Segment([s] * n, sources, offsets, list(offsets), row_end, queries, list(sp.emits))
        segments.append(seg)
        table = rows.setdefault(b, [])
        where.append((b, len(table)))
        table.append(seg.padded(b, image_slots, dummy))
        emits_count.append(m)

    device = plan.device

    def tensor(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    return StaticTables({b: tensor(t) for b, t in rows.items()}, tuple(where), tuple(emits_count),
                        tensor(slot_order), tensor(slot_fill), image_slots, dummy, tuple(segments))


# ----------------------------------------------------------------------------- the step

SPEC_FIELDS = 14  # a speculative row: the 7 plain fields, then had, point, forward, positions, branch,
# branch_start (per input) and draft_of (per emit)


def make_step(bucket: int, prefix_len: int, image_slots: int, opts: SamplingOptions,
              speculative: bool = False, branch_slots: int = 0) -> Callable:
    """The pass function for one bucket; ``opts`` only chooses code paths (guidance, greedy,
    filtering), its numbers arrive as tensors.

    A speculative step (``speculative.py``) runs the same forward over inputs of several passes
    (each keeps its own pass number) and checks the drafts fed in it (``verify.py``): its row also holds, per emitted cell, whether
    it has a draft, whether that draft is a point mass, and the forward's number; and for draft
    branches (alternative tokens of a cell, each with its own continuation, in ``branch_slots``
    slots past the scratch slot) each input's position, branch and where its branch starts, and
    each emit's cell (its draft and its uniforms; the emit itself says where the result is written)."""
    slots = image_slots + 1 + branch_slots

    def step(session, tokens, row, slot_order, slot_fill, prefix_mask, seed, image_keys, cfg, temperature, top_k,
             top_p, drafts_q=None, slot_branch=None):
        fields = row.view(SPEC_FIELDS if speculative else 7, bucket).unbind(0)
        passes, src, off, order, row_end, queries, emits = fields[:7]
        ids = tokens.index_select(1, src)
        if opts.guidance:
            ids = torch.cat([ids, ids])
        h = session.embed(ids, row_end.bool())
        ids_of_slots = torch.arange(slots, device=tokens.device)
        # an input sees a slot at or before it in raster order once a pass up to its own has written it;
        # padding sees only the scratch slot
        image = (slot_order[None, :] <= order[:, None]) & (slot_fill[None, :] <= passes[:, None])
        if speculative:  # a branch's inputs see the main slots before the branch, then their own branch
            branch, start = fields[11], fields[12]
            main = (slot_branch == 0)[None, :] & ((branch == 0)[:, None] | (slot_order[None, :] < start[:, None]))
            image = image & (main | ((slot_branch[None, :] == branch[:, None]) & (branch > 0)[:, None]))
        image = image | (ids_of_slots[None, :] == off[:, None])
        n = ids.shape[0]
        mask = torch.cat([prefix_mask.expand(n, 1, bucket, prefix_len), image[None, None].expand(n, 1, bucket, slots)],
                         dim=-1)
        hidden = session.run(h, off, mask, prefix_len + slots, fields[10]) if speculative else \
            session.run(h, off, mask, prefix_len + slots)
        logits = session.logits(hidden.index_select(1, queries))
        params = SamplingTensors(cfg, temperature, top_k, top_p)
        if speculative:  # check the drafts; kept, redrawn or next drafts go into tokens (branches' to a dummy)
            cells = fields[13]
            target = target_probs(logits, opts, params, cells)
            keep, drawn = verify_drafts(target, tokens.index_select(1, cells), drafts_q, fields[7].bool(),
                                        fields[8].bool(), opts.greedy, seed, image_keys, cells, fields[9][0])
            tokens.index_copy_(1, emits, drawn)
            return logits, target, keep, drawn
        drawn = sample_cells(logits, opts, params, seed, image_keys, emits)
        tokens.index_copy_(1, emits, drawn)
        return logits

    # Dynamo keeps compiled graphs per code object and stops at a small limit of variants
    # (failing outright under fullgraph=True); a code object per step gives every bucket and
    # shape its own cache, which goes away with the step when a model is released.
    name = f"zipar_{'verify' if speculative else 'step'}_b{bucket}"
    return types.FunctionType(step.__code__.replace(co_name=name), step.__globals__, name, step.__defaults__,
                              step.__closure__)


@dataclass
class CompiledSteps:
    """What one model keeps for the process: its cache pool, token buffers and compiled steps."""

    pool: CachePool = field(default_factory=CachePool)
    steps: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)
    failed: str = ""  # why building a step failed; 'auto' then stays eager for this model

    def tokens(self, images: int, cells: int, device) -> torch.Tensor:
        key = (images, cells, str(device))
        if key not in self.buffers:
            self.buffers.clear()
            t = torch.zeros(images, cells, dtype=torch.long, device=device)
            torch._dynamo.mark_static_address(t, guard=False)
            self.buffers[key] = t
        t = self.buffers[key]
        t.zero_()
        return t


_STATE: "weakref.WeakKeyDictionary[object, CompiledSteps]" = weakref.WeakKeyDictionary()


def state_of(model) -> CompiledSteps:
    if model not in _STATE:
        _STATE[model] = CompiledSteps()
    return _STATE[model]


def release(model=None) -> None:
    """Drop the kept caches and compiled steps (of one model, or of all): memory back, next call compiles again."""
    if model is None:
        _STATE.clear()
    else:
        _STATE.pop(model, None)


def free_caches() -> None:
    """Drop every model's pooled cache and token buffer but keep the compiled steps: the VQ
    decoder must not run beside the language model's cache (the next image reallocates it)."""
    for state in _STATE.values():
        state.pool.clear()
        state.buffers.clear()


def resolve_compile(mode: str, device: torch.device) -> bool:
    """'auto' compiles on CUDA (captured graphs) and stays eager on the CPU, where a pass is
    bound by arithmetic rather than launches."""
    if mode not in COMPILE_MODES:
        raise ZipARError(f"compile must be one of {', '.join(COMPILE_MODES)} (got {mode!r}).")
    if mode == "auto":
        return device.type == "cuda"
    return mode == "on"


def _compiler(backend: str | None, device: torch.device):
    """torch.compile for a step: whole graph, fixed shapes; CUDA graphs on CUDA ('reduce-overhead')."""
    if backend == "none":  # the static step without compilation (tests: padding alone)
        return lambda fn: fn
    if backend is None:
        mode = "reduce-overhead" if device.type == "cuda" else None
        return lambda fn: torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)
    return lambda fn: torch.compile(fn, fullgraph=True, dynamic=False, backend=backend)


@dataclass
class StaticRun:
    tokens: torch.Tensor  # [images, H, W] on the device
    compile_seconds: float  # first calls of steps built during this run (compilation included)
    graphs_built: int


class Steps:
    """Calls a model's bucketed steps for one request, building (and timing) the ones it lacks.

    The plain loop and speculative decoding share it, so both run the same compiled step, with
    the same buckets, and a failed build is reported the same way."""

    def __init__(self, model, session, images: int, options: SamplingOptions, backend: str | None,
                 image_slots: int, speculative: bool = False, branch_slots: int = 0,
                 scales: torch.Tensor | None = None):
        self.model, self.session, self.options, self.backend = model, session, options, backend
        self.state = state_of(model)
        self.device = model.device
        self.cuda = self.device.type == "cuda"
        self.compiler = _compiler(backend, self.device)
        prefix = session.prefix
        self.prefix_len = prefix.length
        self.prefix_mask = prefix.visible[:, None, None, :]
        self.image_slots = image_slots
        self.speculative, self.branch_slots = speculative, branch_slots
        self.key = (self.prefix_len, image_slots, prefix.visible.shape[0], images, model.dtype, options.mode,
                    options.guidance, backend, speculative, branch_slots, scales is not None)
        self.params = options.as_tensors(self.device, scales)  # scales: a per-cell table as the cfg input
        self.compile_seconds, self.built = 0.0, 0

    def __call__(self, bucket: int, row: torch.Tensor, tokens, tables: "StaticTables", seed_t, image_keys,
                 *extra, slot_tables: tuple[torch.Tensor, torch.Tensor] | None = None):
        key = (bucket,) + self.key
        fn = self.state.steps.get(key)
        fresh = fn is None
        if fresh:
            fn = self.state.steps[key] = self.compiler(make_step(bucket, self.prefix_len, self.image_slots,
                                                                 self.options, self.speculative, self.branch_slots))
            self.built += 1
            if self.cuda:
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
        if self.cuda and self.backend is None:
            torch.compiler.cudagraph_mark_step_begin()
        p = self.params
        try:
            order, fill = slot_tables if slot_tables is not None else (tables.slot_order, tables.slot_fill)
            out = fn(self.session, tokens, row, order, fill, self.prefix_mask, seed_t,
                     image_keys, p.cfg, p.temperature, p.top_k, p.top_p, *extra)
        except torch._dynamo.exc.TorchDynamoException as exc:  # tracing or the backend failed, not the model
            if not fresh:
                raise
            self.state.steps.pop(key, None)
            inner = getattr(exc, "inner_exception", None) or exc  # the backend's own error, when it raised one
            reason = f"{type(inner).__name__}: {(str(inner).strip().splitlines() or [''])[0][:300]}"
            self.state.failed = reason
            raise CompileFailed(f"torch.compile could not build the decode step ({reason}); set compile to off: the "
                                "eager loop gives the same images.") from exc
        if fresh:
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self.compile_seconds += time.perf_counter() - t0
        return out


def checked_tables(plan: Plan, session) -> StaticTables:
    tables = static_tables(plan, session.row_ends)
    if session.image_slots != tables.image_slots:
        raise ZipARError(f"internal: the session lays out {session.image_slots} image slots, the plan "
                         f"{tables.image_slots}.")
    return tables


def run_static(model, session, plan: Plan, images: int, options: SamplingOptions, seed_t: torch.Tensor,
               backend: str | None, first_tokens: Callable, report: Callable, trace=None,
               image_keys: torch.Tensor | None = None, scales: torch.Tensor | None = None) -> StaticRun:
    """Every pass after the prefix through the bucketed step (the prefix pass is the caller's).

    ``seed_t`` from ``rng.seed_tensor``; ``first_tokens(buffer)`` writes cell 0 of every image,
    ``report(pass, buffer)`` is called after every pass (progress, previews, cancel)."""
    device = model.device
    tables = checked_tables(plan, session)
    height, width = plan.schedule.height, plan.schedule.width
    tokens = state_of(model).tokens(images, height * width + 1, device)
    if image_keys is None:
        image_keys = torch.arange(images, device=device)
    first_tokens(tokens)
    report(0, tokens)
    steps = Steps(model, session, images, options, backend, tables.image_slots, scales=scales)
    for s in range(1, plan.num_passes):
        bucket, row = tables.where[s]
        logits = steps(bucket, tables.rows[bucket][row], tokens, tables, seed_t, image_keys)
        if trace is not None:
            m = tables.emits[s]
            trace(s, plan.pass_tensors(s).emits, logits[:, :m])
        report(s, tokens)
    return StaticRun(tokens[:, :height * width].clone(), steps.compile_seconds, steps.built)
