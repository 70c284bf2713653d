"""ZipAR inside ComfyUI on the card, without the server: tokens, seconds and memory against the plain API.

    python -m bench.in_comfyui --comfyui .gpu/ComfyUI --device cuda --json in_comfyui.json
    python -m bench.in_comfyui --comfyui /path/to/ComfyUI --smoke --device cpu --json smoke.json

The server only queues prompts and sends previews; what decides speed and memory inside ComfyUI is
its memory manager (``comfy.model_management``), its ``ModelPatcher`` and the ``comfy.ops`` layers
our networks become. So this imports those modules from a ComfyUI source tree (``--comfyui``;
``bench.gpu_suite --prepare`` copies what they need into ``.gpu/ComfyUI`` for the GPU machine),
loads the pack as ComfyUI loads a custom node (a package from its folder), and runs:

1. the plain API (``api.load_ar_model`` -> ``api.generate``) with ``compile="auto"`` (``--compile``), a first call
   and ``--repeats`` timed seeds, then one eager run (seed 0);
2. Load AR Model -> ImageNet Class -> ZipAR Sampler -> VQ Decode, ``compile: auto``, the same seeds:
   the tokens must equal the API's, and the Sampler's median is compared with the API's (target:
   within 5%, ``node_over_api`` <= 1.05), and no compiled step may be rebuilt after its first call
   (ComfyUI re-requesting a loaded model must not look like moved weights);
3. the same Sampler after "Unload models" with low-VRAM streaming forced (ComfyUI's ``--novram``
   state: every layer waits in system memory and is cast onto the card per use; ``compile: auto``
   runs eager then): tokens equal to the eager API run;
4. "Unload models" again: the card's allocated memory must come back to what it was before the
   first load (``returned_after_unload``).

Weights are random, in the release's file formats (LlamaGen-L ``c2i_L_384.pt`` and ``vq_ds16_c2i.pt``,
written as LlamaGen's training scripts save them) in a temporary models folder. ``--smoke``: a tiny
GPT and VQ of the same layouts, for a CPU check of the whole path (ComfyUI streams only onto a
card, so on the CPU the streaming step makes ComfyUI treat the CPU as one for that step).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PACK = Path(__file__).resolve().parent.parent
PACKAGE = "comfyui_zipar_pack"  # the name the pack is imported under, as ComfyUI imports a custom node folder
AR_FILE, VQ_FILE = "c2i_L_384.pt", "vq_ds16_c2i.pt"  # release names: the grid (24 x 24) comes from the name
CLASS = "207: golden retriever"


def import_comfyui(root: Path, device: str):
    """ComfyUI's memory manager, patcher and ops from the tree at ``root``, with the flags main.py would read."""
    if not (root / "comfy" / "model_management.py").is_file():
        raise SystemExit(f"--comfyui {root}: no comfy/model_management.py there; give a ComfyUI source tree "
                         "(python -m bench.gpu_suite --prepare copies one into .gpu/ComfyUI)")
    sys.path.insert(0, str(root))
    argv, sys.argv = sys.argv, [str(root / "main.py")] + (["--cpu"] if device == "cpu" else [])
    try:
        import comfy.options

        comfy.options.enable_args_parsing()  # as main.py does, so the flags above are read
        import comfy.model_management as mm
        import comfy.model_patcher  # noqa: F401
        import comfy.ops  # noqa: F401
        import folder_paths
    finally:
        sys.argv = argv
    return mm, folder_paths


def import_pack():
    """The pack as ComfyUI imports a custom node: its folder as a package (our ``nodes`` is not ComfyUI's)."""
    spec = importlib.util.spec_from_file_location(PACKAGE, PACK / "__init__.py", submodule_search_locations=[str(PACK)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def write_models(folder: Path, smoke: bool) -> None:
    """Random LlamaGen-L c2i and VQ-16 (tiny ones with ``smoke``) saved as LlamaGen's scripts save them."""
    from bench.decode import published_config
    from zipar.nets.llamagen_gpt import GPTConfig, LlamaGenGPT
    from zipar.vq.llamagen import VQConfig, VQModel

    torch.manual_seed(0)
    if smoke:  # width 128: 2 heads, what the loader infers for an unpublished width
        config = GPTConfig(dim=128, n_layer=2, n_head=2, n_kv_head=2, ffn_hidden=352, vocab_size=64, num_classes=1000)
        vq_config = VQConfig(codebook_size=64, codebook_embed_dim=8, ch=32, z_channels=32)
    else:  # the published LlamaGen-L (343 M) and VQ-16 (72 M)
        config, vq_config = published_config("L"), VQConfig(codebook_size=16384, codebook_embed_dim=8)
    folder.mkdir(parents=True, exist_ok=True)
    for net, name in ((LlamaGenGPT(config), AR_FILE), (VQModel(vq_config), VQ_FILE)):
        with torch.no_grad():
            for key, p in net.named_parameters():
                p.copy_(torch.ones_like(p) if key.endswith("norm.weight") else torch.randn_like(p) * 0.02)
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        torch.save({"model": state, "steps": 0}, folder / name)  # {"model": ...}: the release's wrapper


def use_backend(static_step, backend: str) -> None:
    """Compile the decode steps with another torch.compile backend (a smoke test's ``eager``: the compiled
    path traced end to end without inductor's build). ``static_step``: the module the nodes use."""
    static_step._compiler = lambda _backend, _device: (
        lambda fn: torch.compile(fn, fullgraph=True, dynamic=False, backend=backend))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def allocated_mb(device: torch.device) -> float | None:
    return round(torch.cuda.memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def streaming_forced(mm, device: torch.device):
    """ComfyUI's --novram state for the next load: every layer stays in system memory, cast per use.

    ComfyUI never streams onto the CPU (its loader treats a CPU model as fully loaded), so on the
    CPU (the smoke run) the CPU counts as a card inside this block only."""
    state, is_cpu = mm.vram_state, mm.is_device_cpu
    mm.vram_state = mm.VRAMState.NO_VRAM
    if device.type == "cpu":
        mm.is_device_cpu = lambda _device: False
    try:
        yield
    finally:
        mm.vram_state, mm.is_device_cpu = state, is_cpu


def run(args: argparse.Namespace, progress=None) -> dict:
    device = torch.device("cpu" if args.device == "cpu" else args.device)
    mm, folder_paths = import_comfyui(Path(args.comfyui).resolve(), device.type)
    pack = import_pack()
    if getattr(args, "compile_backend", None):  # tests: dynamo's eager backend stands in for inductor's build
        use_backend(sys.modules[f"{PACKAGE}.zipar.core.static_step"], args.compile_backend)
    nodes, api = pack.NODE_CLASS_MAPPINGS, sys.modules[f"{PACKAGE}.zipar.api"]
    SamplingOptions = sys.modules[f"{PACKAGE}.zipar.core.sampling"].SamplingOptions
    streamed = sys.modules[f"{PACKAGE}.nodes.memory"].streamed
    comfy_device = mm.get_torch_device()
    if comfy_device.type != device.type:
        raise SystemExit(f"ComfyUI chose {comfy_device} but --device is {device}")
    device = torch.device(comfy_device)

    def node(name, *a, **k):
        return getattr(nodes[name](), nodes[name].FUNCTION)(*a, **k)

    # what the Sampler node's own generate calls report (steps built, compiled or not), observed, not changed
    generated: list = []
    plain_generate = api.generate

    def observed_generate(*a, **k):
        generated.append(plain_generate(*a, **k))
        return generated[-1]

    report: dict = {"benchmark": "in_comfyui", "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "comfyui": comfyui_version(Path(args.comfyui)), "smoke": args.smoke, "window": args.window,
                    "cfg": args.cfg, "repeats": args.repeats}

    def note(**items):
        report.update(items)
        if progress:
            progress(report)

    models = Path(tempfile.mkdtemp(prefix="zipar-in-comfyui-"))
    _, secs = timed(device, lambda: write_models(models / "zipar", args.smoke))
    folder_paths.add_model_folder_path("zipar", str(models / "zipar"))
    note(files_written_s=round(secs, 2), allocated_before_mb=allocated_mb(device))
    seeds = list(range(args.repeats))
    (cond,) = node("ZipARImageNetClass", CLASS)
    opts = SamplingOptions(cfg=args.cfg, temperature=1.0, top_k=0, top_p=1.0)

    # 1. the plain API on the same card
    ar = api.load_ar_model(models / "zipar" / AR_FILE, device, "auto")
    grid = ar.grid_for(None, None, 16)
    reset_peak(device)
    first, first_s = timed(device, lambda: api.generate(ar, cond, grid, args.window, opts, seed=seeds[0],
                                                        compile=args.compile))
    api_runs = [timed(device, lambda s=s: api.generate(ar, cond, grid, args.window, opts, seed=s, compile=args.compile))
                for s in seeds]
    eager = api.generate(ar, cond, grid, args.window, opts, seed=seeds[0], compile="off")
    api_tokens = [r.tokens.cpu() for r, _ in api_runs]
    note(grid=list(grid), passes=first.forward_passes, api_first_call_s=round(first_s, 3),
         api_median_s=statistics.median(s for _, s in api_runs), api_seconds=[round(s, 4) for _, s in api_runs],
         api_peak_mb=peak_mb(device), api_compiled=bool(first.graphs_built or first.compile_seconds),
         api_compiled_equals_eager=bool(torch.equal(first.tokens.cpu(), eager.tokens.cpu())))
    eager_tokens = eager.tokens.cpu()
    ar = first = api_runs = eager = None  # the API's model goes before the nodes load theirs
    api.release_plans()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    note(allocated_after_api_mb=allocated_mb(device))

    # 2. the nodes, compile auto, the same seeds
    reset_peak(device)
    (model,) = node("ZipARLoadARModel", AR_FILE, 0, "auto", "default")
    (vq,) = node("ZipARLoadVQ", VQ_FILE, "fp32", "default")
    settings = dict(window=args.window, cfg=args.cfg, temperature=1.0, top_k=0, top_p=1.0, batch_size=1,
                    preview=False, vq=vq, compile=args.compile)
    api.generate = observed_generate
    try:
        _, node_first_s = timed(device, lambda: node("ZipARSampler", model, cond, seed=seeds[0], **settings))
        node_runs = [timed(device, lambda s=s: node("ZipARSampler", model, cond, seed=s, **settings)) for s in seeds]
    finally:
        api.generate = plain_generate
    (images,), decode_s = timed(device, lambda: node("ZipARVQDecode", vq, node_runs[0][0][0]))
    node_median = statistics.median(s for _, s in node_runs)
    note(node_first_call_s=round(node_first_s, 3), node_median_s=node_median,
         node_seconds=[round(s, 4) for _, s in node_runs], node_over_api=node_median / report["api_median_s"],
         node_tokens_equal_api=all(torch.equal(r[0].tokens.cpu(), t) for (r, _), t in zip(node_runs, api_tokens)),
         node_compiled=bool(generated[0].compiled), node_steps_built=[r.graphs_built for r in generated],
         node_steps_rebuilt_after_first_call=sum(r.graphs_built for r in generated[1:]),
         node_peak_mb=peak_mb(device), node_loaded_mb=allocated_mb(device), vq_decode_s=round(decode_s, 3),
         image_shape=list(images.shape), node_streamed=streamed(model.patcher),
         loaded_by_comfyui=[type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None])
    node_runs = images = None

    # 3. low-VRAM streaming forced, after "Unload models"
    mm.unload_all_models()
    reset_peak(device)
    with streaming_forced(mm, device):
        (low, _), low_s = timed(device, lambda: node("ZipARSampler", model, cond, seed=seeds[0], **settings))
        note(lowvram_s=round(low_s, 3), lowvram_streamed=streamed(model.patcher),
             lowvram_tokens_equal_eager_api=bool(torch.equal(low.tokens.cpu(), eager_tokens)),
             lowvram_peak_mb=peak_mb(device), lowvram_loaded_mb=allocated_mb(device))
    low = None

    # 4. "Unload models": what the card gets back
    mm.unload_all_models()
    mm.soft_empty_cache()
    model = vq = cond = None  # what ComfyUI's node cache would drop on /free
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    after = allocated_mb(device)
    note(allocated_after_unload_mb=after,
         returned_after_unload=None if after is None else bool(after <= report["allocated_before_mb"] + 16),
         reserved_after_unload_mb=round(torch.cuda.memory_reserved(device) / 2**20, 1) if device.type == "cuda" else None,
         loaded_after_unload=len([m for m in mm.current_loaded_models if m.model is not None]))
    shutil.rmtree(models, ignore_errors=True)  # the random checkpoints (1.7 GB at the published sizes)
    return report


def comfyui_version(root: Path) -> str | None:
    try:
        text = (root / "comfyui_version.py").read_text()
        return text.split("=", 1)[1].strip().strip("\"'")
    except (OSError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.in_comfyui", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", required=True, help="a ComfyUI source tree (its comfy/ and folder_paths.py)")
    p.add_argument("--device", default="cuda", help="cuda (the card ComfyUI picks) or cpu")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="the API's and the Sampler's compile setting (auto: compiled on CUDA; on: also on the CPU)")
    p.add_argument("--smoke", action="store_true", help="tiny model files (a CPU check of the whole path)")
    p.add_argument("--compile-backend", help=argparse.SUPPRESS)  # tests: e.g. 'eager' (dynamo without inductor)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    from zipar.io import outputs

    def write(report: dict) -> None:
        outputs.write_text(args.json, json.dumps(report | {"partial": True}, indent=2, default=str))

    report = run(args, write)
    outputs.write_text(args.json, json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
