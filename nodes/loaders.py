"""Load AR Model and Load VQ: checkpoints from ComfyUI/models/zipar."""
from __future__ import annotations

import logging
import time

from . import cache, host, memory
from .datatypes import AR_MODEL, VQ, ARModel, VQHandle
from .engine import ZipARError, api, release_compiled

CATEGORY = "ZipAR"
log = logging.getLogger("ZipAR")
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]

DEVICE_TOOLTIP = (
    "Where the model runs. default: the device ComfyUI uses (the GPU, or the CPU when ComfyUI was started "
    "with --cpu). auto: the GPU when PyTorch sees one. cpu / cuda: force it."
)

def _mtime(name: str) -> str:
    try:
        _real, mtime, size = cache.file_key(host.model_path(name))  # a folder: its newest file
        return f"{mtime}-{size}"
    except (OSError, ZipARError):
        return ""


def load_ar(path: str, runs_on, precision: str, weight_dtype: str, kv_dtype: str = "default") -> memory.Loaded:
    """Read an AR model (onto ComfyUI's offload device when it manages memory) and hand it over."""
    start = time.perf_counter()
    model = api.load_ar_model(path, device=memory.offload_device(runs_on), precision=precision,
                              weight_dtype=weight_dtype, runs_on=runs_on, kv_dtype=kv_dtype)
    log.info("ZipAR: read %s from disk in %.1f s (%s)", path, time.perf_counter() - start, model.describe())

    def release(patcher) -> None:  # ComfyUI offloaded or unloaded it: what we keep for it goes too
        release_compiled(model)
        api.release_plans()
        cache.AR_MODELS.forget(patcher)

    def moved(patcher) -> None:  # weights at new addresses: compiled steps (CUDA graphs) must be rebuilt
        release_compiled(model)

    return memory.Loaded(model, memory.manage(model.networks(), model.dtype, runs_on, release, moved))


def load_vq(path: str, name: str, runs_on, precision: str) -> VQHandle:
    start = time.perf_counter()
    vq = api.load_vq(path, device=memory.offload_device(runs_on), precision=precision, runs_on=runs_on)
    log.info("ZipAR: read %s from disk in %.1f s", path, time.perf_counter() - start)
    return VQHandle(vq, name, memory.manage([vq], vq.dtype, runs_on, cache.VQ_MODELS.forget))

class ZipARLoadARModel:
    DESCRIPTION = (
        "Loads an autoregressive image model from ComfyUI/models/zipar: a LlamaGen GPT file (c2i_L_384.pt, "
        "t2i_XL_stage2_512.pt) or a model folder: Janus-Pro (also found in ComfyUI/models/Janus-Pro), Emu3-Gen or "
        "Lumina-mGPT. "
        "Its size and vocabulary are read from the weights. The last model loaded stays in memory, so running "
        "again does not read the files again."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (AR_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The AR model, with the image size it will generate.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = host.list_models("ar")
        return {
            "required": {
                "ar_model": (names, {
                    **({"default": names[0]} if names else {}),
                    "tooltip": "The AR model: a checkpoint (.pt, .pth or .safetensors) in ComfyUI/models/zipar, e.g. "
                               "c2i_L_384.pt (ImageNet classes) or t2i_XL_stage2_512.pt (text prompts), or a model "
                               "folder shown by its name: Janus-Pro-1B / -7B, Emu3-Gen-hf, Lumina-mGPT-7B-768, "
                               "Lumina-mGPT-2.0, SimpleAR-1.5B-RL (text prompts).",
                }),
                "image_size": ("INT", {
                    "default": 0, "min": 0, "max": 2048, "step": 8,
                    "tooltip": "Output image size in pixels (square). 0 = the model's own: from the file name for "
                               "LlamaGen (c2i_L_384.pt makes 384 x 384), 384 for Janus-Pro (its only size), 720 for "
                               "Emu3-Gen (the side of the pixel area; the aspect ratio comes from the Text Prompt), "
                               "512 / 768 / 1024 for Lumina-mGPT (from the folder name; a multiple of 32), 768 for "
                               "Lumina-mGPT 2.0 (a multiple of 32; 1024 is past its 10240 positions), 1024 for SimpleAR "
                               "(a multiple of 16; its script offers 256 / 512 / 768 / 1024). "
                               "LlamaGen sizes must be a multiple of 16 (the VQ's 16 pixels per token).",
                }),
                "precision": (PRECISIONS, {
                    "default": "auto",
                    "tooltip": "Number format of the weights. auto: bf16 on GPUs that support it (the models' "
                               "official format), fp32 on the CPU. fp16 can overflow on some models.",
                }),
                "device": (host.DEVICES, {"default": "default", "tooltip": DEVICE_TOOLTIP}),
                "weight_dtype": (list(api.WEIGHT_DTYPES), {
                    "default": "default",
                    "tooltip": "How the transformer layers' weights are kept in memory. default: as precision says. "
                               "fp8_e4m3fn / fp8_e5m2 keep them in 8 bits (half of bf16: a 7B model in about 7 GB) "
                               "and compute in the precision above, converting one layer at a time; embeddings, norms "
                               "and output heads stay in 16 bits. Costs some quality: see the fp8 rows in "
                               "docs/benchmarks.md.",
                }),
                "kv_dtype": (list(api.KV_DTYPES), {
                    "default": "default",
                    "tooltip": "How the key/value cache is kept: the memory that grows with the image size and "
                               "doubles with cfg (several GB for the 7B models at their full size). default: as "
                               "precision says. int8 keeps it in 8 bits with one scale per vector: about half the "
                               "memory of bf16, for a small error in every step (a seed gives a slightly different "
                               "image than with the default). See the int8 cache rows in docs/benchmarks.md.",
                }),
            }
        }

    @classmethod
    def IS_CHANGED(cls, ar_model, **_):
        return _mtime(ar_model)  # re-run when the file on disk changes

    def load(self, ar_model, image_size, precision, device, weight_dtype="default", kv_dtype="default"):
        path = host.model_path(ar_model)
        dev = host.torch_device(device)
        key = (*cache.file_key(path), precision, str(dev), weight_dtype, kv_dtype)
        loaded = cache.AR_MODELS.get(key, lambda: load_ar(path, dev, precision, weight_dtype, kv_dtype))
        model = loaded.model
        size = int(image_size) or model.native_image_size
        if not size:
            raise ZipARError(f"{model.describe()} does not say its image size (the file name {ar_model!r} has no _256, "
                             "_384 or _512); set image_size on Load AR Model.")
        model.grid_for(None, size)  # a size the family cannot draw fails here, not in the sampler
        return (ARModel(model, size, ar_model, loaded.patcher),)

class ZipARLoadVQ:
    DESCRIPTION = (
        "Loads a VQ image tokenizer (vq_ds16_c2i.pt for the class models, vq_ds16_t2i.pt for the text models, "
        "Meta's Chameleon vqgan.ckpt for Lumina-mGPT, movqgan_270M.ckpt for Lumina-mGPT 2.0, the Cosmos-1.0-Tokenizer-DV8x16x16 folder for SimpleAR) from ComfyUI/models/zipar. It turns token grids into pixels "
        "(VQ Decode) and images into tokens (VQ Encode)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (VQ,)
    RETURN_NAMES = ("vq",)
    OUTPUT_TOOLTIPS = ("The VQ tokenizer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = host.list_models("vq")
        return {
            "required": {
                "vq_model": (names, {
                    **({"default": names[0]} if names else {}),
                    "tooltip": "The VQ tokenizer in ComfyUI/models/zipar. Use the one released with the AR "
                               "model: vq_ds16_c2i.pt for c2i_*.pt, vq_ds16_t2i.pt for t2i_*.pt; for Janus-Pro and "
                               "Emu3-Gen-hf the model folder itself (its VQ is read); for the original BAAI/Emu3-Gen "
                               "the Emu3-VisionTokenizer folder; for Lumina-mGPT Meta's Chameleon vqgan.ckpt (with "
                               "vqgan.yaml beside it) or the folder holding both; for Lumina-mGPT 2.0 ai-forever's "
                               "movqgan_270M.ckpt; for SimpleAR NVIDIA's Cosmos-1.0-Tokenizer-DV8x16x16 folder "
                               "(encoder.jit + decoder.jit, read without running them).",
                }),
                "precision": (["fp32", "auto", "bf16", "fp16"], {
                    "default": "fp32",
                    "tooltip": "Number format of the decoder. fp32 is exact and the decoder is small; bf16/fp16 "
                               "save GPU memory at a slight cost in colour accuracy. auto: bf16 on GPUs, else fp32.",
                }),
                "device": (host.DEVICES, {"default": "default", "tooltip": DEVICE_TOOLTIP}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, vq_model, **_):
        return _mtime(vq_model)

    def load(self, vq_model, precision, device):
        path = host.model_path(vq_model)  # a file, or a Janus-Pro / Emu3 / VQGAN folder (its VQ part only)
        dev = host.torch_device(device)
        key = (*cache.file_key(path), precision, str(dev))
        return (cache.VQ_MODELS.get(key, lambda: load_vq(path, vq_model, dev, precision)),)
