"""Bulk sampling for evaluation: many images, sharded over processes, resumable, the same at any world size.

    python -m zipar sample --ar-model c2i_L_384.pt --vq-model vq_ds16_c2i.pt --classes all --per-class 50 \\
        --window 8 --out samples/
    torchrun --nproc_per_node 8 -m zipar sample ...        # the same command on 8 GPUs (or nodes)

The job is a numbered list of images: image i has condition ``conditions[i]`` (class-major: every
image of class 0, then class 1 ...; or prompt-major for ``--prompts``) and its random draws are
keyed by (seed, i, cell), so it does not depend on the batch, the world size or which process drew
it. The list is cut into fixed shards; process ``rank`` of ``world`` takes shards ``rank``,
``rank + world`` ... Each shard writes its PNGs, then its ``.npz``, then a small done-marker, each
file atomically (written beside, renamed into place): a shard counts as done only once its marker
exists, so a killed process loses at most its unfinished shard, and a rerun with the same settings
skips finished shards and redoes the rest. The settings are recorded in ``manifest.json`` at the
start; a different job in the same folder is refused. Rank 0 shows one progress line for the whole
job and, once every shard is done, writes ``samples.npz`` (``arr_0``: uint8 [N, H, W, 3], the layout
the common FID evaluators read) and the manifest's per-shard numbers.

``torch.distributed`` is initialised from torchrun's environment (``WORLD_SIZE`` > 1): NCCL on GPUs,
gloo on the CPU; one process per device (``LOCAL_RANK``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import api
from .errors import ZipARError
from .io import outputs

MANIFEST = "manifest.json"
MERGED = "samples.npz"


@dataclass(frozen=True)
class Settings:
    """Everything that decides the images (not the batch, the world size or the process count)."""

    ar_model: str
    vq_model: str
    conditions: tuple  # per image: a class id (int) or a prompt (str)
    window: int
    cfg: float
    temperature: float
    top_k: int
    top_p: float
    seed: int
    image_size: int | None
    precision: str
    weight_dtype: str
    device_type: str
    shard_size: int
    kv_dtype: str = "default"  # the key/value cache's format (changes the images, so it is a setting)

    def key(self) -> str:
        settings = asdict(self)
        if settings["kv_dtype"] == "default":  # folders started before the option existed keep their key
            del settings["kv_dtype"]
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def init_world(device: str = "auto") -> World:
    """This process's place in the job: from torchrun's environment, or a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = api.resolve_device(device)
    if want.type == "cuda" and want.index is None:
        want = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    if size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if want.type == "cuda" else "gloo"
        if want.type == "cuda":
            torch.cuda.set_device(want)
        torch.distributed.init_process_group(backend)
    return World(rank, size, want, size > 1)


def shard_ranges(count: int, shard_size: int) -> list[range]:
    return [range(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def check_manifest(out: Path, settings: Settings, world: World) -> None:
    """Record the settings (rank 0), or refuse a folder that holds another job."""
    path = out / MANIFEST
    if world.rank == 0 and not path.exists():  # the folder is made by the write, which words its errors
        outputs.write_json(path, {"settings_key": settings.key(), "settings": asdict(settings),
                                  "versions": versions(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    world.barrier()
    old = json.loads(path.read_text())  # every rank checks, so that none waits for a rank that stopped
    if old.get("settings_key") != settings.key():
        recorded = old.get("settings", {})
        changed = [k for k, v in asdict(settings).items()
                   if json.dumps(recorded.get(k, "default" if k == "kv_dtype" else None)) != json.dumps(v)]
        raise ZipARError(f"{out} holds samples of other settings ({', '.join(changed) or 'unknown'} differ); "
                         "use a new --out folder, or the settings it was started with.")


def versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def to_uint8(images: torch.Tensor, truncate: bool) -> np.ndarray:
    """[N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3], rounded or floored as the family's own code writes files."""
    scaled = images.float().clamp(0, 1) * 255
    return (scaled if truncate else scaled.round()).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def condition_for(model, items: list, encoder=None):
    if model.reads == "class_ids":
        return api.class_condition([int(c) for c in items])
    if model.reads == "prompt":
        return api.prompt_condition([str(p) for p in items])
    if encoder is None:
        raise ZipARError("a LlamaGen text-to-image model needs --text-encoder (a local flan-t5-xl folder) for --prompts.")
    return encoder.condition([str(p) for p in items])


def run_shard(index: int, images: range, settings: Settings, out: Path, model, vq, grid, options, batch: int,
              encoder=None, on_images=None) -> dict:
    """Draw, decode and write one shard; its done-marker last. Returns the marker's content."""
    folder = out / shard_name(index)
    for stale in [*folder.glob(".*.part"), *out.glob(f".{shard_name(index)}.*.part")]:  # a killed write's leftovers
        stale.unlink()
    start, passes, arrays = time.perf_counter(), 0, []
    for first in range(images.start, images.stop, batch):
        last = min(first + batch, images.stop)
        cond = condition_for(model, list(settings.conditions[first:last]), encoder)
        result = api.generate(model, cond, grid, settings.window, options, seed=settings.seed, first_image=first,
                              compile="auto")
        passes += result.forward_passes
        # one image per decoder call: a convolution's last bits depend on the batch it runs in, and
        # the tokens (which do not) must give the same bytes however the images were grouped
        pixels = np.concatenate([to_uint8(api.decode_tokens(vq, grid_[None]), vq.truncates_to_uint8)
                                 for grid_ in result.tokens])
        from PIL import Image

        for i, array in zip(range(first, last), pixels):
            outputs.write_image(folder / f"{i:08d}.png", Image.fromarray(array))
            maybe_die(i)
        arrays.append(pixels)
        if on_images is not None:
            on_images(last - first)
    outputs.write_atomic(out / f"{shard_name(index)}.npz", lambda f: np.savez(f, arr_0=np.concatenate(arrays)))
    marker = {"shard": index, "first_image": images.start, "images": len(images), "passes": passes,
              "seconds": round(time.perf_counter() - start, 3)}
    outputs.write_json(out / f"{shard_name(index)}.done.json", marker)
    return marker


def maybe_die(image: int) -> None:
    """Tests: ZIPAR_TEST_KILL_AT=i kills this process (SIGKILL) right after image i is written."""
    if os.environ.get("ZIPAR_TEST_KILL_AT") == str(image):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class Progress:
    """Rank 0's one line for the whole job: images done (every rank's finished shards, read from the
    done markers, plus its own shard in progress), images per second, ETA."""

    def __init__(self, out: Path, total: int, enabled: bool):
        self.out, self.total, self.enabled = out, total, enabled
        self.start = time.perf_counter()
        self.base = self.on_disk()  # done before this run (a resumed job)
        self.shown = False

    def on_disk(self) -> int:
        return sum(json.loads(p.read_text())["images"] for p in self.out.glob("shard_*.done.json"))

    def show(self, in_progress: int = 0) -> None:
        if not self.enabled:
            return
        done = self.on_disk() + in_progress
        rate = (done - self.base) / max(1e-9, time.perf_counter() - self.start)
        eta = f"{(self.total - done) / rate / 60:.1f} min" if rate > 0 else "?"
        sys.stderr.write(f"\r{done}/{self.total} images, {rate:.2f} images/s, ETA {eta}   ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        """End the line, so that what follows (the summary, an error) starts on its own."""
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False


def sample(settings: Settings, out: str | os.PathLike, batch: int, world: World, model=None, encoder=None,
           quiet: bool = False) -> dict:
    """Run (or resume) the job in ``out``; every process calls this with the same settings."""
    out = Path(out)
    if batch < 1:
        raise ZipARError(f"--batch must be at least 1 (got {batch}).")
    if settings.shard_size < 1:
        raise ZipARError(f"--shard-size must be at least 1 (got {settings.shard_size}).")
    with resumable(out):
        return _sample(settings, out, batch, world, model, encoder, quiet)


@contextmanager
def resumable(out: Path) -> Iterator[None]:
    """A write the system refused (a full disk ...) ends the job with the file, the reason and how
    to go on: every file is written whole or not at all and a shard counts only once its marker
    is written, so what is on disk is a consistent, resumable state."""
    try:
        yield
    except outputs.WriteFailed as exc:
        raise ZipARError(f"{exc} Shards already finished in {out} are kept: the same command resumes the job "
                         "and redoes only the rest.") from exc


def _sample(settings: Settings, out: Path, batch: int, world: World, model, encoder, quiet: bool) -> dict:
    check_manifest(out, settings, world)
    if model is None:
        model = api.load_ar_model(settings.ar_model, world.device, settings.precision, settings.weight_dtype,
                                  kv_dtype=settings.kv_dtype)
    vq = api.load_vq(settings.vq_model, world.device, "fp32")
    first = condition_for(model, list(settings.conditions[:1]), encoder)
    request = api.prepare(model, first, settings.image_size, vq)
    greedy = settings.temperature == 0
    options = api.SamplingOptions(cfg=settings.cfg, temperature=1.0 if greedy else settings.temperature,
                                  top_k=settings.top_k, top_p=settings.top_p, greedy=greedy)
    options.validate()
    api.check_memory(model, 1, batch, request.grid, options.guidance)  # names the largest batch that fits
    ranges = shard_ranges(len(settings.conditions), settings.shard_size)
    progress = Progress(out, len(settings.conditions), world.rank == 0 and not quiet)
    try:
        for index in range(world.rank, len(ranges), world.size):
            if (out / f"{shard_name(index)}.done.json").exists():
                continue
            drawn = 0

            def advanced(n: int) -> None:
                nonlocal drawn
                drawn += n
                progress.show(drawn)

            run_shard(index, ranges[index], settings, out, model, vq, request.grid, options, batch, encoder,
                      advanced)
            progress.show()
        world.barrier()
        summary = {}
        if world.rank == 0:
            summary = finish(out, settings, len(ranges))
    finally:
        progress.close()
    world.barrier()
    return summary


def finish(out: Path, settings: Settings, shards: int) -> dict:
    """Once every shard is done: the merged ``samples.npz`` and the manifest's per-shard numbers."""
    markers = [out / f"{shard_name(i)}.done.json" for i in range(shards)]
    missing = [m.name for m in markers if not m.exists()]
    if missing:
        raise ZipARError(f"{len(missing)} shard(s) are not done ({', '.join(missing[:3])} ...); run the same "
                         "command again to finish them.")
    parts = [np.load(out / f"{shard_name(i)}.npz")["arr_0"] for i in range(shards)]
    outputs.write_atomic(out / MERGED, lambda f: np.savez(f, arr_0=np.concatenate(parts)))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"] = [json.loads(m.read_text()) for m in markers]
    manifest["images"] = int(sum(len(p) for p in parts))
    manifest["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    outputs.write_json(out / MANIFEST, manifest)
    return manifest


def job_conditions(model_reads: str, classes: str | None, per_class: int, prompts_file: str | None,
                   num_classes: int | None) -> tuple:
    """The per-image list: each class (or prompt) ``per_class`` times in a row."""
    if model_reads == "class_ids" and prompts_file:
        raise ZipARError("this is a class-to-image model: give --classes, not --prompts.")
    if model_reads != "class_ids" and classes:
        raise ZipARError("this model draws from text: give --prompts FILE (one prompt per line), not --classes.")
    if prompts_file:
        lines = [line.strip() for line in Path(prompts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ZipARError(f"{prompts_file} holds no prompts (one per line).")
        items = lines
    elif classes:
        if classes == "all":
            if not num_classes:
                raise ZipARError("--classes all needs a class-to-image model.")
            items = list(range(num_classes))
        else:
            try:
                items = [int(c) for c in classes.split(",") if c.strip()]
            except ValueError:
                raise ZipARError(f"--classes takes 'all' or class ids like 0,1,2 (got {classes!r}).") from None
    else:
        raise ZipARError("give --classes (class-to-image models) or --prompts FILE (text models).")
    if per_class < 1:
        raise ZipARError(f"--per-class must be at least 1 (got {per_class}).")
    return tuple(item for item in items for _ in range(per_class))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ar-model", required=True)
    p.add_argument("--vq-model", required=True)
    p.add_argument("--classes", help="'all' or class ids like 0,1,2 (class-to-image models)")
    p.add_argument("--prompts", help="a text file, one prompt per line (text models)")
    p.add_argument("--per-class", type=int, default=1, help="images per class or prompt (FID on ImageNet: 50)")
    p.add_argument("--text-encoder", help="local flan-t5-xl folder (LlamaGen text-to-image)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--cfg", type=float, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--weight-dtype", choices=list(api.WEIGHT_DTYPES), default="default")
    p.add_argument("--kv-dtype", choices=list(api.KV_DTYPES), default="default",
                   help="the key/value cache's format (int8: about half the memory of bf16, images differ slightly)")
    p.add_argument("--device", default="auto", help="cuda (one GPU per process under torchrun) or cpu")
    p.add_argument("--batch", type=int, default=16, help="images per forward batch (memory), never changes an image")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (the unit of resuming)")
    p.add_argument("--out", required=True, help="output folder: shard PNGs, shard .npz, samples.npz, manifest.json")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    """``python -m zipar sample``: the settings from the flags and the model's own defaults, then the job."""
    world = init_world(args.device)
    model = api.load_ar_model(args.ar_model, world.device, args.precision, args.weight_dtype, kv_dtype=args.kv_dtype)
    num_classes = getattr(getattr(model, "config", None), "num_classes", None) if model.reads == "class_ids" else None
    conditions = job_conditions(model.reads, args.classes, args.per_class, args.prompts, num_classes)
    encoder = None
    if model.reads == "caption" and args.text_encoder:
        from .text_encoder import T5TextEncoder

        dtype = torch.float32 if world.device.type == "cpu" else torch.bfloat16
        encoder = T5TextEncoder(args.text_encoder, world.device, dtype)
    cfg = model.defaults.cfg if args.cfg is None else args.cfg
    top_k = model.defaults.top_k if args.top_k is None else args.top_k
    settings = Settings(str(Path(args.ar_model).resolve()), str(Path(args.vq_model).resolve()), conditions,
                        args.window, float(cfg), float(args.temperature), int(top_k), float(args.top_p), args.seed,
                        args.image_size, args.precision, args.weight_dtype, world.device.type, args.shard_size,
                        args.kv_dtype)
    summary = sample(settings, args.out, args.batch, world, model, encoder, args.quiet)
    if world.rank == 0:
        print(json.dumps({"out": str(args.out), "images": summary.get("images"), "shards": len(summary.get("shards", []))}))
    if world.distributed:
        torch.distributed.destroy_process_group()
    return 0
