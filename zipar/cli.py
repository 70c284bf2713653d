"""python -m zipar: generate with NTP or ZipAR from official LlamaGen files, decode token grids."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from . import api
from .io import outputs
from .errors import ConditionMismatch, ZipARError
from .families.base import Condition
from .core.sampling import CFG_SCHEDULES, SamplingOptions
from .core.speculative import DEFAULT_DRAFT_LENGTH

OVERWRITE_HINT = "pass --overwrite"
# How a command-line user gives each kind of condition the engine may ask for (ConditionMismatch.needs).
CONDITION_FLAGS = {
    "class_ids": "give --class-id (ImageNet ids 0..999; the digits 0..9 for the demo model)",
    "caption": "give --prompt with --text-encoder (a local flan-t5-xl folder), or --caption-embeddings",
    "prompt": "give --prompt",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zipar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample token grids and decode them to images")
    gen.add_argument("--ar-model", required=True, help="LlamaGen GPT checkpoint (c2i_L_384.pt, t2i_XL_stage2_512.pt, ...) or a Janus-Pro / Emu3-Gen / Lumina-mGPT (1.0 or 2.0) / SimpleAR folder")
    gen.add_argument("--vq-model", help="VQ tokenizer (vq_ds16_c2i.pt, a Janus-Pro / Emu3 folder, Meta's Chameleon vqgan.ckpt, ai-forever's movqgan_270M.ckpt, NVIDIA's Cosmos-1.0-Tokenizer-DV8x16x16 folder); needed to write images")
    gen.add_argument("--image-size", type=int, help="output resolution; default: the model's own (LlamaGen: the size "
                     "in the file name)")
    gen.add_argument("--downsample", type=int, help="the VQ's pixels per token when no --vq-model is given (default: "
                     "the family's usual VQ, 16 for LlamaGen)")
    gen.add_argument("--class-id", type=int, nargs="+", help="ImageNet class ids (class-to-image models)")
    gen.add_argument("--prompt", nargs="+", help="prompts (LlamaGen t2i with --text-encoder; Janus-Pro / Emu3-Gen / Lumina-mGPT folders)")
    gen.add_argument("--negative-prompt", help="Emu3-Gen / Lumina-mGPT: the unconditional branch's text (default: the family's own)")
    gen.add_argument("--aspect-ratio", help="Emu3-Gen / Lumina-mGPT: width:height, e.g. 16:9 (default 1:1)")
    gen.add_argument("--quality-suffix", action=argparse.BooleanOptionalAction, default=True,
                     help="Emu3-Gen: append ' masterpiece, film grained, best quality.' to the prompt as the official "
                          "example does (never twice); --no-quality-suffix sends the prompt as written")
    gen.add_argument("--text-encoder", help="local flan-t5-xl folder")
    gen.add_argument("--caption-embeddings", help=".safetensors with 'features' [N,120,2048] and 'mask' [N,120]")
    gen.add_argument("--window", type=int, default=8, help="ZipAR window; at or above the grid width: next-token prediction")
    gen.add_argument("--cfg", type=float, help="classifier-free guidance scale (1 = off; default: the family's "
                     "official value, 4 for LlamaGen and Lumina-mGPT 1.0 / 2.0, 5 for Janus-Pro, 3 for Emu3-Gen, 6 for SimpleAR)")
    gen.add_argument("--cfg-schedule", choices=list(CFG_SCHEDULES), default="official",
                     help="how the guidance scale varies over the image: official = what the family's own code does "
                          "(a constant --cfg for every family but Lumina-mGPT 2.0, whose code lowers it to 4.0 over "
                          "the first tokens and never guides below 4.0); constant = --cfg for every token")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, help="0 = no top-k filtering (default: the family's official value, "
                     "2000 for Lumina-mGPT, 4096 for Lumina-mGPT 2.0, 2048 for Emu3-Gen, 64000 for SimpleAR, else 0)")
    gen.add_argument("--top-p", type=float, default=1.0, help="1.0 = no nucleus filtering")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--greedy", action="store_true", help="take the arg-max token (deterministic)")
    gen.add_argument("--batch", type=int, default=1, help="images per class id / prompt")
    gen.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    gen.add_argument("--weight-dtype", choices=list(api.WEIGHT_DTYPES), default="default",
                     help="keep the transformer layers' weights in this dtype, converted one layer at a time to "
                          "--precision (fp8_e4m3fn / fp8_e5m2: half the memory of bf16; default: --precision)")
    gen.add_argument("--kv-dtype", choices=list(api.KV_DTYPES), default="default",
                     help="keep the key/value cache in this format (int8: 8-bit values with a scale per vector, about "
                          "half the cache memory of bf16, a small error in every step; default: --precision)")
    gen.add_argument("--compile", choices=["auto", "off", "on"], default="auto",
                     help="the compiled, bucketed decode step (CUDA graphs on a GPU): auto = on for CUDA, off on the "
                          "CPU; the first image of a size compiles first. The same seed gives the same image either way")
    gen.add_argument("--speculative", action="store_true",
                     help="speculative Jacobi decoding on top of the window: each pass also verifies drafts of the "
                          "next passes; same distribution (greedy: same tokens), fewer passes")
    gen.add_argument("--draft-length", type=int, default=DEFAULT_DRAFT_LENGTH,
                     help=f"--speculative: cells drafted ahead per row and forward (default {DEFAULT_DRAFT_LENGTH})")
    gen.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    gen.add_argument("--out", help="output PNG; several images become out_0.png, out_1.png, ...")
    gen.add_argument("--tokens-out", help="write the token grids as int64 .npy [images, H, W]")
    gen.add_argument("--stats-json", help="write forward passes, grid, window, timing ... as JSON")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")

    dec = sub.add_parser("decode", help="decode a .npy token grid with a VQ model")
    dec.add_argument("--vq-model", required=True)
    dec.add_argument("--tokens", required=True, help=".npy of shape [images, H, W] or [H, W]")
    dec.add_argument("--out", required=True)
    dec.add_argument("--device", default="auto")
    dec.add_argument("--overwrite", action="store_true")

    from .demo import add_arguments as add_demo_arguments

    add_demo_arguments(sub.add_parser("demo", help="the shipped digits model: a classes x windows contact sheet"))

    from .bulk import add_arguments as add_sample_arguments

    add_sample_arguments(sub.add_parser("sample", help="bulk sampling for evaluation: sharded, resumable, the same "
                                                       "images on 1 process or under torchrun"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            run_generate(args)
        elif args.command == "decode":
            run_decode(args)
        elif args.command == "demo":
            from .demo import run_demo

            print(run_demo(args, log=lambda line: print(line, file=sys.stderr))["out"])
        elif args.command == "sample":
            from .bulk import run as run_sample

            return run_sample(args)
    except ConditionMismatch as exc:
        print(f"error: {exc}; {CONDITION_FLAGS[exc.needs]}.", file=sys.stderr)
        return 2
    except ZipARError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def plan_generate_outputs(args: argparse.Namespace, images: int) -> list[outputs.Output]:
    """Every file ``generate`` will write, checked before any model is read."""
    planned = []
    if args.out:
        planned += outputs.numbered_images(args.out, images, "--out")
    if args.tokens_out:
        planned.append(outputs.npy_output(args.tokens_out, "--tokens-out"))
    if args.stats_json:
        planned.append(outputs.plain_output(args.stats_json, "--stats-json"))
    return outputs.plan_outputs(planned, args.overwrite, OVERWRITE_HINT)


def run_generate(args: argparse.Namespace) -> None:
    if not (args.out or args.tokens_out or args.stats_json):
        raise ZipARError("nothing to write: give --out (images), --tokens-out and/or --stats-json.")
    if args.out and not args.vq_model:
        raise ZipARError("--out needs --vq-model to turn tokens into pixels (or write --tokens-out only).")
    if args.batch < 1:
        raise ZipARError(f"--batch must be at least 1 (got {args.batch}).")
    captions = None
    if args.caption_embeddings:
        from .text_encoder import load_caption_embeddings

        captions = load_caption_embeddings(args.caption_embeddings)
    requested = len(args.class_id or args.prompt or []) or (len(captions) if captions is not None else 1)
    planned = plan_generate_outputs(args, requested * args.batch)
    device = api.resolve_device(args.device)
    vq = api.load_vq(args.vq_model, device) if args.vq_model else None
    model = api.load_ar_model(args.ar_model, device, args.precision, args.weight_dtype, kv_dtype=args.kv_dtype)
    request = api.prepare(model, condition_from_args(args, model, device, captions), args.image_size, vq, args.downsample)
    cond, grid, defaults = request.condition, request.grid, request.defaults
    cfg = args.cfg if args.cfg is not None else defaults.cfg
    top_k = args.top_k if args.top_k is not None else defaults.top_k
    options = SamplingOptions(cfg, args.temperature, top_k, args.top_p, args.greedy, args.cfg_schedule)
    result = api.generate(model, cond, grid, args.window, options, seed=args.seed, batch=args.batch,
                          compile=args.compile, speculative=args.speculative, draft_length=args.draft_length)
    print(f"{model.describe()}: {result.report()}", file=sys.stderr)
    by_label = {}
    for out in planned:
        by_label.setdefault(out.label, []).append(out.path)
    if args.tokens_out:
        outputs.write_npy(by_label["--tokens-out"][0], result.tokens.numpy().astype(np.int64), args.overwrite)
    if args.out:
        images = api.decode_tokens(vq, result.tokens.to(device))
        for path in api.save_images(images, by_label["--out"], args.overwrite, vq.truncates_to_uint8):
            print(path)
    if args.stats_json:
        outputs.write_json(by_label["--stats-json"][0], result.stats(), args.overwrite)


def condition_from_args(args: argparse.Namespace, model, device, captions) -> Condition:
    """The condition the model reads (``model.reads``), built from the flags; when the flags give
    another kind, that one, so that ``prepare`` says what the model needs instead."""
    if model.reads == "class_ids" and args.class_id:
        return api.class_condition(args.class_id)
    if model.reads == "prompt" and args.prompt:
        return api.prompt_condition(args.prompt, args.negative_prompt, args.aspect_ratio, args.quality_suffix)
    if model.reads == "caption" and captions is not None:
        return captions
    if model.reads == "caption" and args.prompt:
        if not args.text_encoder:
            raise ZipARError("--prompt needs --text-encoder: a local flan-t5-xl folder (google/flan-t5-xl).")
        from .text_encoder import T5TextEncoder

        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        return T5TextEncoder(args.text_encoder, device, dtype).condition(args.prompt)
    if args.class_id:
        return api.class_condition(args.class_id)
    if args.prompt:
        return api.prompt_condition(args.prompt)
    return captions if captions is not None else Condition()


def run_decode(args: argparse.Namespace) -> None:
    path = Path(args.tokens)
    if not path.is_file():
        raise ZipARError(f"token file not found: {path}")
    try:
        tokens = np.load(path)
    except Exception as exc:
        raise ZipARError(f"cannot read {path} as a .npy array ({exc}).") from exc
    if tokens.ndim not in (2, 3) or not np.issubdtype(tokens.dtype, np.integer):
        raise ZipARError(f"{path} holds a {tokens.dtype} array of shape {tokens.shape}; expected integers [images, H, W].")
    count = tokens.shape[0] if tokens.ndim == 3 else 1
    planned = outputs.plan_outputs(outputs.numbered_images(args.out, count, "--out"), args.overwrite, OVERWRITE_HINT)
    api.check_token_grids(tokens.shape)
    device = api.resolve_device(args.device)
    vq = api.load_vq(args.vq_model, device)
    images = api.decode_tokens(vq, torch.from_numpy(tokens).to(device))
    for out in api.save_images(images, [o.path for o in planned], args.overwrite, vq.truncates_to_uint8):
        print(out)
