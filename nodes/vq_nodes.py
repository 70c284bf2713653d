"""VQ Decode (tokens -> IMAGE) and VQ Encode (IMAGE -> tokens)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import host, memory
from .datatypes import TOKENS, VQ, Tokens, engine_vq, vq_patcher
from .engine import ZipARError, api, free_compiled_caches, memory_guard

CATEGORY = "ZipAR"
CHUNK = 4  # images per decoder call: bounds memory, lets cancel and progress act between chunks
FITS = ["center crop", "resize"]


def check_codebook(tokens: Tokens, vq) -> None:
    if tokens.vocab_size != vq.codebook_size:
        raise ZipARError(
            f"these tokens index a codebook of {tokens.vocab_size} codes but the VQ has {vq.codebook_size}; use the "
            f"VQ released with the AR model: {tokens.vq_hint or 'the one named in its download page'}."
        )


def decoder_stages(vq) -> list[nn.Module]:
    """The decoder's stages in order (its blocks, level by level), for progress within one decode:
    a large decoder (Emu3's) takes many seconds per image on a CPU."""
    decoder = next((m for name, m in vq.named_modules() if name.split(".")[-1] == "decoder"), None) \
        if isinstance(vq, nn.Module) else None
    stages: list[nn.Module] = []

    def walk(module: nn.Module, depth: int) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                stages.extend(child)
            elif depth == 0 and any(isinstance(c, nn.ModuleList) for c in child.children()):
                walk(child, 1)  # a block that wraps its levels in a list (Emu3's up_block)
            else:
                stages.append(child)

    if decoder is not None:
        walk(decoder, 0)
    return stages


@contextmanager
def stage_progress(stages: list[nn.Module], on_stage):
    """Call ``on_stage()`` after each stage runs (cancel is checked there too)."""
    hooks = [s.register_forward_hook(lambda *_: on_stage()) for s in stages]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


class ZipARVQDecode:
    DESCRIPTION = "Turns token grids into images with the VQ tokenizer's decoder (16 pixels per token with VQ-16)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The decoded images, ready for Save Image or Preview Image.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vq": (VQ, {"tooltip": "The VQ from ZipAR Load VQ; the one released with the AR model."}),
                "tokens": (TOKENS, {"tooltip": "Token grids from ZipAR Sampler (or ZipAR VQ Encode)."}),
            }
        }

    def decode(self, vq, tokens):
        patcher, vq = vq_patcher(vq), engine_vq(vq)
        check_codebook(tokens, vq)
        grids = tokens.tokens
        api.check_token_grids(tuple(grids.shape))
        free_compiled_caches()  # the language model's kept cache must not sit beside the decoder
        memory.load([patcher], api.decode_bytes(vq, min(CHUNK, grids.shape[0]), tuple(grids.shape[1:])), full=True)
        stages = decoder_stages(vq)
        chunks = -(-grids.shape[0] // CHUNK)
        total = chunks * max(1, len(stages))  # the bar moves stage by stage, not only per chunk
        pbar = host.progress_bar(total)
        done = 0

        def stage_done() -> None:
            nonlocal done
            host.throw_if_interrupted()  # cancel acts within one stage
            done = min(done + 1, total)
            pbar.update_absolute(done, total)

        out = []
        with stage_progress(stages, stage_done):
            for index, start in enumerate(range(0, grids.shape[0], CHUNK)):
                host.throw_if_interrupted()
                images = api.decode_tokens(vq, grids[start:start + CHUNK])  # [n, 3, h, w] float32 in [0, 1]
                out.append(images.permute(0, 2, 3, 1).to(host.intermediate_device(), torch.float32))
                done = (index + 1) * max(1, len(stages))
                pbar.update_absolute(done, total)
        return (torch.cat(out).contiguous(),)


def fit_to_multiple(images: torch.Tensor, multiple: int, fit: str) -> torch.Tensor:
    """[B, 3, H, W] -> sides that are multiples of ``multiple``: center crop (drops at most
    multiple-1 pixels per side) or resize (area/bicubic to the nearest multiple)."""
    h, w = images.shape[-2:]
    if fit not in FITS:
        raise ZipARError(f"fit must be one of {', '.join(FITS)} (got {fit!r}).")
    if fit == "center crop":
        th, tw = h // multiple * multiple, w // multiple * multiple
        if th == 0 or tw == 0:
            raise ZipARError(f"the image ({w} x {h}) is smaller than one VQ token ({multiple} pixels); use a bigger image.")
        top, left = (h - th) // 2, (w - tw) // 2
        return images[..., top:top + th, left:left + tw]
    th, tw = max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)
    if (th, tw) == (h, w):
        return images
    mode = "area" if th <= h and tw <= w else "bicubic"
    resized = F.interpolate(images, size=(th, tw), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return resized.clamp(0, 1)


class ZipARVQEncode:
    DESCRIPTION = (
        "Turns images into token grids with the VQ tokenizer's encoder, e.g. to see what the tokenizer keeps "
        "(encode then decode) or to feed tokens to other ZipAR nodes."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("One token grid per image (image size / 16 per side with VQ-16).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vq": (VQ, {"tooltip": "The VQ from ZipAR Load VQ."}),
                "image": ("IMAGE", {"tooltip": "Images to encode (alpha is ignored, grey is used as RGB)."}),
                "fit": (FITS, {
                    "default": "center crop",
                    "tooltip": "The VQ needs sides that are multiples of its token size (16 pixels for VQ-16). "
                               "center crop: cut the edges down to the nearest smaller multiple (at most 15 "
                               "pixels per side). resize: scale to the nearest multiple (slight stretch).",
                }),
            }
        }

    def encode(self, vq, image, fit):
        patcher, vq = vq_patcher(vq), engine_vq(vq)
        if image.ndim != 4:
            raise ZipARError(f"expected an IMAGE batch [batch, height, width, channels]; got shape {tuple(image.shape)}.")
        if 0 in image.shape:
            raise ZipARError(f"the IMAGE batch is empty (shape {tuple(image.shape)}); connect a node that gives at "
                             "least one image.")
        channels = image.shape[-1]
        if channels in (1, 2):  # grey (+ alpha)
            images = image.float()[..., :1].expand(*image.shape[:-1], 3)
        else:
            images = image.float()[..., :3]
        images = fit_to_multiple(images.permute(0, 3, 1, 2), vq.downsample, fit)
        side = vq.downsample
        memory.load([patcher], api.decode_bytes(vq, min(CHUNK, images.shape[0]),
                                                (images.shape[-2] // side, images.shape[-1] // side)), full=True)
        pbar = host.progress_bar(images.shape[0])
        out = []
        for start in range(0, images.shape[0], CHUNK):
            host.throw_if_interrupted()
            with memory_guard("encoding the images", "encode smaller images or fewer at a time"):
                out.append(vq.encode_images(images[start:start + CHUNK].contiguous()).cpu())
            pbar.update_absolute(min(start + CHUNK, images.shape[0]), images.shape[0])
        return (Tokens(torch.cat(out), int(vq.codebook_size), [f"image{i}" for i in range(images.shape[0])],
                       report=f"encoded {images.shape[0]} image(s) of {images.shape[-1]} x {images.shape[-2]}"),)
