"""Decode-speed benchmark: NTP and ZipAR windows on LlamaGen, Janus-Pro, Emu3-Gen and Lumina-mGPT of the published sizes.

    python -m bench.decode --model B --grid 16 --windows 16,8,4 --device cpu --precision fp32 --json out.json
    python -m bench.decode --model janus-pro-1b --windows 24,12,8,4 --device cuda --json janus1b.json
    python -m bench.decode --model emu3-gen --size 720 --windows 90,16,8,4 --repeats 1 --device cuda --json emu3.json
    python -m bench.decode --model lumina-mgpt-7b --size 768 --windows 48,16,8 --repeats 3 --device cuda --json lumina.json
    python -m bench.decode --model L --grid 24 --windows 24,16,8,4 --compile both --device cuda --json l_compiled.json

Weights are random (decoding time does not depend on them). Every configuration runs in
the same process after a warm-up, so the ratios latency(ZipAR)/latency(NTP) and
passes(ZipAR)/passes(NTP) are measured side by side. A plain eager KV-cache loop (one
token per pass, causal mask, nothing precomputed) is timed as the NTP baseline, and the
VQ-16 decoder separately. Writes JSON and a markdown table (for docs/benchmarks.md).

Janus-Pro-1B/-7B, Emu3-Gen and Lumina-mGPT-7B (bench/chat_models.py) are our own networks with random
weights, built on the meta device and materialised on the target device in the target
dtype (bf16 on CUDA by default), driven through the real family adapters with a stand-in
tokenizer and a prompt of realistic length. ``--size`` sets pixels per side (Janus: grid =
size / 16; Emu3: grid_for, 720 px = 90x90; Lumina: 768 px = 48x48); CFG and top-k default to the official recipes.
Their reports add the weight bytes one forward pass reads and the memory floor
(bytes / 3.0e12 B/s) with each run's ms/pass over it (LlamaGen too). ``--compile on|both`` times
the compiled, bucketed step (``zipar.core.static_step``; CUDA graphs on CUDA) and reports
its first call (compilation included), the seconds spent building steps and the number
built; ratios are taken within each mode. The plain KV loop is LlamaGen only;
the VQ-16 timing runs for Janus (its VQ is that network); Lumina times our Chameleon VQGAN decoder
(random weights, the release's shapes); Emu3's VQ is not timed.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import resource
import statistics
import sys
import time
from typing import Callable

import torch

from bench import chat_models
from zipar.io import outputs
from zipar.api import resolve_device, resolve_dtype
from zipar.conditions import class_condition
from zipar.core.loop import expected_passes, generate
from zipar.nets.llamagen_gpt import GPTConfig, LlamaGenGPT
from zipar.families.llamagen import LlamaGenModel
from zipar.core.rng import seed_tensor
from zipar.core.sampling import SamplingOptions, sample_cells

# (width, layers, heads); "tiny" exists only so tests can smoke-run the harness.
SIZES = {"tiny": (64, 2, 2), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1280, 36, 20), "XXL": (1536, 48, 24), "3B": (3200, 24, 32)}
CHAT_MODELS = chat_models.SPECS  # janus-pro-1b/-7b, emu3-gen, lumina-mgpt-7b (+ *-tiny for tests)
PLAIN_LOOP_SKIPPED = ("LlamaGen only, not run for this family: its left-padded CFG prompt rows and row-end tokens live "
                      "in the family's decode session, and NTP (window = width) already feeds one token per pass "
                      "(plus Emu3's row end) through it")


def published_config(size: str, vocab: int = 16384) -> GPTConfig:
    dim, layers, heads = SIZES[size]
    hidden = int(2 * 4 * dim / 3)
    hidden = -(-hidden // 256) * 256  # LlamaGen rounds the SwiGLU width up to a multiple of 256
    return GPTConfig(dim=dim, n_layer=layers, n_head=heads, n_kv_head=heads, ffn_hidden=hidden, vocab_size=vocab, num_classes=1000)


def random_model(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LlamaGenModel:
    torch.manual_seed(seed)
    with torch.device("meta"):
        gpt = LlamaGenGPT(published_config(size))
    gpt = gpt.to_empty(device=device)
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("norm.weight") else torch.randn_like(p) * 0.02)
        for b in gpt.buffers():
            b.normal_()
    return LlamaGenModel(gpt.to(dtype).eval().requires_grad_(False).fuse())


@torch.inference_mode()
def plain_kv_loop(model: LlamaGenModel, class_ids: list[int], grid: tuple[int, int], opts: SamplingOptions, seed: int) -> float:
    """The textbook baseline: prefill, then one token per pass into a causal KV cache."""
    gpt, dev = model.gpt, model.device
    H, W = grid
    embeds, _ = model.prefix_embeddings(class_condition(class_ids), opts.guidance)
    P = embeds.shape[1]
    rows = embeds.shape[0]
    cache = gpt.new_cache(rows, P + H * W)
    rope = gpt.rope_table(H, W).to(dev)
    seed_t, image_keys = seed_tensor(seed, dev), torch.arange(len(class_ids), device=dev)
    sync(dev)
    start = time.perf_counter()
    h = gpt.hidden(embeds, rope[:P], None, cache, torch.arange(P, device=dev), P)
    logits = gpt.logits(h[:, -1:])
    for i in range(H * W):
        token = sample_cells(logits, opts, opts, seed_t, image_keys, torch.full((1,), i, device=dev))
        if i == H * W - 1:
            break
        ids = torch.cat([token, token]) if opts.guidance else token
        slot = torch.tensor([P + i], device=dev)
        h = gpt.hidden(gpt.tok_embeddings(ids), rope[slot], None, cache, slot, P + i + 1)
        logits = gpt.logits(h)
    sync(dev)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Drop the last run's session and KV cache before the next one allocates its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with the threads torch uses (for every report's header)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_report(report: dict, json_path: str | None, markdown_path: str | None = None,
                 table: str | None = None) -> None:
    """The JSON report and its markdown table, each written atomically when asked for."""
    if json_path:
        outputs.write_text(json_path, json.dumps(report, indent=2))
    if markdown_path and table is not None:
        outputs.write_text(markdown_path, table)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS so far (Linux: KiB)


def time_vq_decode(grid: tuple[int, int], images: int, device: torch.device, repeats: int, family: str = "llamagen") -> dict:
    """fp32 decode of random codes: LlamaGen's VQ-16 (also Janus's), for Lumina-mGPT the Chameleon
    VQGAN at the release's widths (attention in the middle block only: the release's attn_resolutions
    are not public, see docs/models.md), for Lumina-mGPT 2.0 SBER-MoVQGAN-270M's release config."""
    from zipar.vq.chameleon import ChameleonVQ, ChameleonVQConfig
    from zipar.vq.llamagen import VQConfig, VQModel
    from zipar.vq.movq import RELEASE_270M, MoVQGAN

    with torch.device("meta"):
        if family == "lumina-mgpt-2":
            vq = MoVQGAN(RELEASE_270M)
        elif family == "lumina-mgpt":
            vq = ChameleonVQ(ChameleonVQConfig(n_embed=8192, embed_dim=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                                               attn_resolutions=(), z_channels=256, resolution=512))
        else:
            vq = VQModel(VQConfig(codebook_size=16384, codebook_embed_dim=8))
    vq = vq.to_empty(device=device)
    with torch.no_grad():
        for p in vq.parameters():
            p.normal_(0, 0.02)
    vq.eval()
    codes = torch.randint(0, vq.codebook_size, (images, *grid), device=device)
    vq.decode_codes(codes)
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        vq.decode_codes(codes)
        sync(device)
        times.append(time.perf_counter() - t)
    return {"images": images, "grid": list(grid), "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def setup_llamagen(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    if getattr(args, "ar_model", None):  # a real file (e.g. the shipped demo model), loaded as users load it
        from zipar import api

        model = api.load_ar_model(args.ar_model, device, str(dtype).removeprefix("torch.").replace("float32", "fp32")
                                  .replace("bfloat16", "bf16").replace("float16", "fp16"))
        grid = model.grid_for(None, None, args.downsample)
        title, weights = f"{model.describe()} from {args.ar_model}", "trained weights"
    else:
        grid = (args.grid, args.grid)
        model = random_model(args.model, device, dtype)
        title, weights = f"LlamaGen-{args.model}", "random weights"
    classes = model.config.num_classes
    class_ids = [(207 + 13 * i) % classes for i in range(args.batch)]
    opts = SamplingOptions(cfg=args.cfg, temperature=1.0, top_k=args.top_k, top_p=1.0)
    return model, class_condition(class_ids), grid, opts, {"model": f"{title} ({weights})", **floor(model.gpt, title)}


def setup_chat(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    spec = CHAT_MODELS[args.model]
    size = args.size or spec.image_size
    model = chat_models.random_model(spec, device, dtype, size)
    cond = chat_models.condition(args.batch)
    grid = model.grid_for(cond, size)
    opts = SamplingOptions(cfg=args.cfg, temperature=1.0, top_k=args.top_k, top_p=1.0)
    extra = {
        "model": f"{spec.title} (random weights)", "family": model.family, "image_size": size,
        "prompt_tokens": chat_models.prompt_lengths(model, cond, grid, opts.guidance),
        **floor(model.net, spec.title),
    }
    return model, cond, grid, opts, extra


def floor(net: torch.nn.Module, title: str) -> dict:
    """The weights-read floor of one pass: every weight but the embedding tables, read once at BANDWIDTH."""
    total, per_pass = chat_models.weight_bytes(net)
    floor_ms = 1000 * per_pass / chat_models.BANDWIDTH
    print(f"{title}: {total / 1e9:.4g} GB of weights, {per_pass / 1e9:.4g} GB read per pass, "
          f"floor {floor_ms:.4g} ms/pass at {chat_models.BANDWIDTH / 1e12:.1f} TB/s", file=sys.stderr)
    return {"weight_bytes": total, "weight_bytes_per_pass": per_pass,
            "floor_bandwidth_bytes_per_s": chat_models.BANDWIDTH, "floor_ms_per_pass": floor_ms}


def parse_variants(text: str | None) -> list[tuple[str, str]]:
    """``default,fp8_e4m3fn+int8`` -> [("default", "default"), ("fp8_e4m3fn", "int8")]: weight dtype, cache kind.

    Variants run in order on one model (narrowing is in place), so a variant may keep narrower
    weights than the one before it, never wider ones."""
    from zipar.api import WEIGHT_DTYPES
    from zipar.core.cache import KV_DTYPES

    out = []
    for item in (text or "default").split(","):
        weights, _, kv = item.strip().partition("+")
        weights, kv = weights or "default", kv or "default"
        if weights not in WEIGHT_DTYPES or kv not in KV_DTYPES:
            raise SystemExit(f"--variants: {item!r} is not WEIGHTS[+KV] with WEIGHTS in {sorted(WEIGHT_DTYPES)} and "
                             f"KV in {sorted(KV_DTYPES)}")
        if out and out[-1][0] != "default" and weights != out[-1][0]:
            raise SystemExit(f"--variants: {item!r} after {out[-1][0]}: weights are narrowed in place, so once "
                             f"narrowed they stay in that dtype; order the variants widest first")
        out.append((weights, kv))
    return out


def apply_variant(model, weights: str, kv: str) -> None:
    from zipar.api import weight_dtype_of
    from zipar.core import static_step

    if weights != "default" and getattr(model, "weight_dtype", None) != weight_dtype_of(weights):
        model.store_weights(weight_dtype_of(weights))
        static_step.release(model)  # compiled steps (CUDA graphs) captured the wider layers
    model.store_cache(kv)
    release(model.device)


def allocated_mb(device: torch.device) -> float | None:
    return round(torch.cuda.memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def run(args: argparse.Namespace, progress: Callable[[dict], None] | None = None) -> dict:
    """The report; ``progress(report so far)`` after every timed row, so a run cut off still leaves numbers."""
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    chat = args.model in CHAT_MODELS
    if chat:
        spec = CHAT_MODELS[args.model]
        args.cfg = spec.cfg if args.cfg is None else args.cfg
        args.top_k = spec.top_k if args.top_k is None else args.top_k
        model, cond, grid, opts, extra = setup_chat(args, device, dtype)
    else:
        args.grid = args.grid or 16
        args.cfg = 4.0 if args.cfg is None else args.cfg
        args.top_k = 0 if args.top_k is None else args.top_k
        model, cond, grid, opts, extra = setup_llamagen(args, device, dtype)
    width = grid[1]
    windows = parse_windows(args.windows, width, getattr(args, "ntp", True))

    if not chat:  # the chat families' NTP window warms up first below, which is the same run
        generate(model, cond, grid, width, opts, seed=0)  # warm-up: allocator, kernels, plan cache
        plain_kv_loop(model, cond.class_ids, grid, opts, 0)
    results: list[dict] = []
    modes = {"off": ("off",), "on": ("on",), "both": ("off", "on")}[args.compile]
    spec_windows = getattr(args, "speculative_windows", None)
    spec_windows = None if spec_windows is None else {min(int(w), width) for w in str(spec_windows).split(",")}
    spec_modes = getattr(args, "speculative_compile", None) or args.compile
    spec_modes = {"off": ("off",), "on": ("on",), "both": ("off", "on")}[spec_modes]
    variants = parse_variants(getattr(args, "variants", None))
    loaded_mb = allocated_mb(device)
    header = {"benchmark": "decode", "date": datetime.date.today().isoformat(), "device": device_name(device),
              "torch": torch.__version__, "model": extra["model"], "grid": list(grid)}
    for weights, kv in variants:
        apply_variant(model, weights, kv)
        variant = {"weights": weights, "kv_dtype": kv, "weights_allocated_mb": allocated_mb(device)}
        for compile_mode in modes:
            for window in windows:
                results.append(variant | time_window(model, cond, grid, window, opts, compile_mode, args.repeats,
                                                     device, extra))
                if progress:
                    progress(header | {"partial": True, "results": results})
                speculative = getattr(args, "speculative", False) or getattr(args, "speculative_windows", None)
                if speculative and compile_mode in spec_modes and (spec_windows is None or window in spec_windows):
                    for length in str(getattr(args, "draft_length", 16)).split(","):
                        results.append(variant | time_window(model, cond, grid, window, opts, compile_mode,
                                                             args.repeats, device, extra, int(length)))
                        if progress:
                            progress(header | {"partial": True, "results": results})
    profiles = []
    for item in str(getattr(args, "profile_windows", None) or "").split(","):
        if item:  # "on:8": the compiled step at window 8 (after the timed rows built it)
            mode, _, w = item.rpartition(":")
            from bench.pass_profile import profile_window

            profiles.append(profile_window(model, cond, grid, min(int(w), width), opts, mode or "on", device))
            if progress:
                progress(header | {"partial": True, "results": results, "profiles": profiles})
    release(device)
    ntp = results[0]  # the first mode's NTP (or widest window): the plain loop is compared with it
    for r in results:
        same = [x for x in results if x["compile"] == r["compile"] and x["weights"] == r["weights"]
                and x["kv_dtype"] == r["kv_dtype"]]
        base = next(x for x in same if not x.get("speculative"))
        r["latency_ratio"] = r["median_s"] / base["median_s"]
        r["pass_ratio"] = r["forward_passes"] / base["forward_passes"]
        r["latency_over_pass_ratio"] = r["latency_ratio"] / r["pass_ratio"]
        eager = next((x for x in results if x["compile"] == "off" and x["window"] == r["window"]
                      and x.get("speculative") == r.get("speculative") and x["weights"] == r["weights"]
                      and x["kv_dtype"] == r["kv_dtype"]), None)
        if r["compile"] == "on" and eager is not None:
            r["speedup_over_eager"] = eager["median_s"] / r["median_s"]
        plain = next((x for x in same if x["window"] == r["window"] and not x.get("speculative")), None)
        if r.get("speculative") and plain is not None:
            r["over_plain_same_window"] = r["median_s"] / plain["median_s"]
    report = {
        "benchmark": "decode",
        "date": datetime.date.today().isoformat(),
        "device": device_name(device),
        "torch": torch.__version__,
        "model": extra.pop("model"),
        "grid": list(grid), "row0_first": model.row0_first, "batch": args.batch, "cfg": args.cfg, "top_k": args.top_k,
        "precision": str(dtype).removeprefix("torch."), "repeats": args.repeats, "compile": args.compile,
        "allocated_after_load_mb": loaded_mb,
        **extra,
        "results": results,
    }
    for prof in profiles:  # the profiler slows the host: compare the card's busy time with the timed run
        timed = next((r for r in results if r["window"] == prof["window"] and r["compile"] == prof["compile"]
                      and not r.get("speculative")), None)
        if timed is not None and "card_busy_ms_per_pass" in prof:
            prof["card_busy_over_timed"] = prof["card_busy_ms_per_pass"] / timed["ms_per_pass"]
    if profiles:
        report["profiles"] = profiles
    if chat:
        report["plain_kv_loop_ntp_skipped"] = PLAIN_LOOP_SKIPPED
    else:
        baseline = [plain_kv_loop(model, cond.class_ids, grid, opts, r) for r in range(args.repeats)]
        report["plain_kv_loop_ntp"] = {"median_s": statistics.median(baseline), "min_s": min(baseline), "max_s": max(baseline),
                                       "ntp_over_plain": ntp["median_s"] / statistics.median(baseline)}
    family = model.family if chat else "llamagen"
    vq_skipped = family in ("emu3", "simplear")  # Janus's VQ is LlamaGen's VQ-16; Lumina's is our Chameleon VQGAN
    del model
    release(device)
    if not args.no_vq and vq_skipped:
        report["vq_decode_skipped"] = ("Emu3's VQ is transformers' Emu3VQVAE, which this benchmark does not build"
                                       if family == "emu3" else "the Cosmos decoder is not built here (random "
                                       "weights of its shapes are not inferred from archives)")
    elif not args.no_vq:
        report["vq_decode"] = time_vq_decode(grid, args.batch, device, max(1, min(args.repeats, 3)), family)
        report["vq_decode"]["network"] = {"lumina-mgpt": "Chameleon VQGAN",
                                          "lumina-mgpt-2": "SBER-MoVQGAN-270M"}.get(family, "VQ-16")
    return report


def parse_windows(text: str, width: int, ntp: bool = True) -> list[int]:
    """Windows widest first, clipped to the grid's width, with NTP (= width) unless ``ntp`` is False
    (the large grids, where NTP alone takes minutes: ratios are then to the widest window run)."""
    return sorted({min(int(w), width) for w in str(text).split(",")} | ({width} if ntp else set()), reverse=True)


def time_window(model, cond, grid, window: int, opts: SamplingOptions, compile_mode: str, repeats: int,
                device: torch.device, extra: dict, draft_length: int = 0) -> dict:
    """One window in one mode: a first call (compilation included when compiled), then ``repeats`` timed runs.

    ``draft_length`` > 0: speculative decoding; its pass count depends on the seed (which drafts the
    model accepts), so the row gives the mean over the runs and each pass's time at that mean."""
    width = grid[1]
    release(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    spec = dict(speculative=True, draft_length=draft_length) if draft_length else {}
    start = time.perf_counter()
    first = generate(model, cond, grid, window, opts, seed=0, compile=compile_mode, **spec)  # warm-up (plan, steps)
    first_call = time.perf_counter() - start
    runs = [generate(model, cond, grid, window, opts, seed=r, compile=compile_mode, **spec) for r in range(repeats)]
    secs = [r.seconds for r in runs]
    med = statistics.median(secs)
    images = len(cond)
    passes = statistics.mean(r.forward_passes for r in runs)
    mode = "NTP" if window >= width else "ZipAR"
    row = {
        "window": window, "mode": mode + ("+spec" if draft_length else ""), "compile": compile_mode,
        "forward_passes": passes, "median_s": med, "min_s": min(secs), "max_s": max(secs),
        "ms_per_pass": 1000 * med / passes, "images_per_s": images / med,
        "tokens_per_s": images * grid[0] * grid[1] / med, "peak_memory_mb": round(peak_memory_mb(device), 1),
        "first_call_s": first_call, "compile_seconds": first.compile_seconds, "graphs_built": first.graphs_built,
        "graphs_built_after_first_call": sum(r.graphs_built for r in runs),
    }
    if draft_length:
        row |= {"speculative": True, "draft_length": draft_length, "planned_passes": expected_passes(grid, window,
                                                                                                     model.row0_first),
                "accepted_per_pass": statistics.mean(r.accepted_per_pass for r in runs)}
    if "floor_ms_per_pass" in extra:
        row["ms_per_pass_over_floor"] = row["ms_per_pass"] / extra["floor_ms_per_pass"]
    print(f"window {window:>3} compile {compile_mode}{' speculative' if draft_length else ''}: {passes} passes, "
          f"median {med:.3f} s, first call "
          f"{first_call:.2f} s", file=sys.stderr)
    return row


def markdown(report: dict) -> str:
    size = f" ({report['image_size']} px)" if "image_size" in report else ""
    top_k = f", top-k {report['top_k']}" if report.get("top_k") else ""
    head = (f"{report['model'].split(' (')[0]}, {report['grid'][0]}x{report['grid'][1]} grid{size}, "
            f"batch {report['batch']}, CFG {report['cfg']}{top_k}, {report['precision']}, {report['device']}, "
            f"torch {report['torch']}, {report['date']}")
    floor = "floor_ms_per_pass" in report
    variants = len({(r.get("weights"), r.get("kv_dtype")) for r in report["results"]}) > 1
    lines = [head, "", "| mode | compile | window | passes | median s | ms/pass | latency ratio | pass ratio | "
             "ratio / pass ratio | first call s | peak MB |" + (" ms/pass / floor |" if floor else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if floor else "")]
    for r in report["results"]:
        variant = f" ({r['weights']}, cache {r['kv_dtype']})" if variants else ""
        lines.append(f"| {r['mode']}{(' ' + str(r['draft_length'])) if r.get('draft_length') else ''}{variant} | {r.get('compile', 'off')} | {r['window']} | {r['forward_passes']:g} | {r['median_s']:.3f} | "
                     f"{r['ms_per_pass']:.2f} | {r['latency_ratio']:.3f} | {r['pass_ratio']:.3f} | "
                     f"{r['latency_over_pass_ratio']:.3f} | {r.get('first_call_s', 0):.2f} | {r['peak_memory_mb']:.0f} |"
                     + (f" {r['ms_per_pass_over_floor']:.2f} |" if floor else ""))
    lines.append("")
    if floor:
        lines.append(f"Weights: {report['weight_bytes'] / 1e9:.4g} GB; read per pass (all but the embedding tables): "
                     f"{report['weight_bytes_per_pass'] / 1e9:.4g} GB; floor at {report['floor_bandwidth_bytes_per_s'] / 1e12:.1f} TB/s: "
                     f"{report['floor_ms_per_pass']:.4g} ms/pass."
                     + (f" Prompt rows: {report['prompt_tokens']} tokens." if "prompt_tokens" in report else ""))
    if "plain_kv_loop_ntp" in report:
        base = report["plain_kv_loop_ntp"]
        lines.append(f"Plain eager KV-cache loop (NTP baseline): {base['median_s']:.3f} s; our NTP / baseline = {base['ntp_over_plain']:.3f}.")
    else:
        lines.append(f"Plain eager KV-cache loop (NTP baseline): {report['plain_kv_loop_ntp_skipped']}.")
    if "vq_decode" in report:
        v = report["vq_decode"]
        lines.append(f"{v.get('network', 'VQ-16')} decode (fp32) of {v['images']} image(s): {v['median_s']:.3f} s.")
    elif "vq_decode_skipped" in report:
        lines.append(f"VQ decode: not timed ({report['vq_decode_skipped']}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=[*SIZES, *CHAT_MODELS], default="B",
                   help="LlamaGen size, or janus-pro-1b / janus-pro-7b / emu3-gen / lumina-mgpt-7b / lumina-mgpt-2 / "
                        "simplear-0.5b / simplear-1.5b (*-tiny: tests)")
    p.add_argument("--grid", type=int, choices=[16, 24, 32], default=None, help="LlamaGen token grid (default 16)")
    p.add_argument("--size", type=int, default=None,
                   help="Janus-Pro / Emu3 / Lumina: pixels per side (Janus 384 = 24x24, multiple of 16; Emu3 720 = 90x90; "
                        "Lumina 512 / 768 / 1024 = 32x32 / 48x48 / 64x64, multiple of 32)")
    p.add_argument("--ar-model", help="a LlamaGen c2i file to time instead of random weights (e.g. "
                   "zipar/assets/demo/demo_c2i_64.safetensors with --downsample 4); the grid comes from its name")
    p.add_argument("--downsample", type=int, default=16, help="with --ar-model: the VQ's pixels per token")
    p.add_argument("--windows", default="16,12,8,4")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=None, help="default: LlamaGen 4.0, Janus-Pro 5.0, Emu3 3.0, Lumina 4.0")
    p.add_argument("--top-k", type=int, default=None, help="default: 0 (off), Emu3 2048, Lumina 2000")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-ntp", dest="ntp", action="store_false",
                   help="leave NTP out (large grids: minutes per image); ratios are then to the widest window")
    p.add_argument("--compile", choices=["off", "on", "both"], default="off",
                   help="time the eager loop, the compiled bucketed step, or both side by side")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--speculative", action="store_true",
                   help="also time every window with speculative decoding (rows NTP+spec / ZipAR+spec)")
    p.add_argument("--draft-length", default="16",
                   help="--speculative: tokens drafted ahead per row, or a list (16,32: one row each)")
    p.add_argument("--speculative-windows", help="speculative rows for these windows only (implies --speculative)")
    p.add_argument("--speculative-compile", choices=["off", "on", "both"],
                   help="speculative rows in these compile modes only (default: those of --compile)")
    p.add_argument("--variants", default="default",
                   help="weight dtype [+ cache kind] per variant, run in order on one model, e.g. "
                        "default,fp8_e4m3fn+int8 (bf16, then 8-bit weights with the 8-bit cache)")
    p.add_argument("--profile-windows",
                   help="after the timed rows, profile one image per MODE:WINDOW (e.g. on:24,on:8): the card's busy "
                        "time and kernels per pass against the wall clock (bench/pass_profile.py)")
    p.add_argument("--no-vq", action="store_true", help="skip the VQ decode timing")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--markdown", help="write the markdown table here")
    args = p.parse_args(argv)
    if args.model in CHAT_MODELS:
        if args.grid is not None:
            p.error(f"--grid is for LlamaGen; {args.model} takes --size (pixels per side)")
        step = {"janus-pro": 16, "lumina-mgpt": 32, "lumina-mgpt-2": 32, "simplear": 16}.get(
            CHAT_MODELS[args.model].family, 1)
        if args.size is not None and (args.size <= 0 or args.size % step):
            p.error(f"--size must be a positive multiple of {step} for {args.model} (got {args.size})")
    elif args.size is not None:
        p.error("--size is for Janus-Pro / Emu3 / Lumina; LlamaGen takes --grid")
    report = run(args)
    table = markdown(report)
    print(table)
    write_report(report, args.json, args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
