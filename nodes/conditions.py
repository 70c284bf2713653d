"""What to draw: an ImageNet class (LlamaGen c2i) or a text prompt through flan-t5-xl (LlamaGen t2i)."""
from __future__ import annotations

import os
from functools import lru_cache

from . import cache, host, memory
from .datatypes import CONDITION
from .engine import ASPECT_RATIOS, ZipARError, api, text_encoder_class

CATEGORY = "ZipAR"
CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")
DEFAULT_CLASS = 207  # golden retriever


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = class id."""
    with open(CLASSES_FILE, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    if len(names) != 1000:
        raise ZipARError(f"{CLASSES_FILE} lists {len(names)} classes instead of 1000; the pack is damaged, reinstall it.")
    return names


def class_choices() -> list[str]:
    return [f"{i}: {name}" for i, name in enumerate(imagenet_classes())]


def parse_class(choice: str) -> tuple[int, str]:
    """'207: golden retriever' -> (207, 'golden retriever'); a bare id works too."""
    head, _, name = str(choice).partition(":")
    try:
        class_id = int(head.strip())
    except ValueError:
        raise ZipARError(f"not an ImageNet class: {choice!r}; pick one from the list, e.g. '207: golden retriever'.") from None
    if not 0 <= class_id < 1000:
        raise ZipARError(f"ImageNet class id {class_id} is out of range 0..999.")
    return class_id, name.strip() or imagenet_classes()[class_id]


class ZipARImageNetClass:
    DESCRIPTION = (
        "Picks one of the 1000 ImageNet classes for a class-to-image model (LlamaGen c2i_*.pt). "
        "Type in the list to search by name."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONDITION,)
    RETURN_NAMES = ("condition",)
    OUTPUT_TOOLTIPS = ("The class to draw; connect it to ZipAR Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        choices = class_choices()
        return {
            "required": {
                "class_name": (choices, {
                    "default": choices[DEFAULT_CLASS],
                    "tooltip": "What to draw: an ImageNet class, shown with its id (e.g. 207: golden retriever, "
                               "360: otter). Only class-to-image models (c2i_*.pt) understand these.",
                }),
            }
        }

    def encode(self, class_name):
        class_id, name = parse_class(class_name)
        return (api.class_condition([class_id], labels=[name]),)


class ZipARClassID:
    DESCRIPTION = (
        "A class id for any class-to-image model, by number: the digits 0..9 of the shipped demo model, or an "
        "ImageNet id for LlamaGen c2i. The sampler checks the id against the model's class count."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONDITION,)
    RETURN_NAMES = ("condition",)
    OUTPUT_TOOLTIPS = ("The class to draw; connect it to ZipAR Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "class_id": ("INT", {
                    "default": 3, "min": 0, "max": 99999,
                    "tooltip": "The class number the model was trained with: 0..9 (the digit) for the demo model "
                               "zipar-demo/demo_c2i_64.safetensors, 0..999 for ImageNet models.",
                }),
            }
        }

    def encode(self, class_id):
        return (api.class_condition([int(class_id)], labels=[str(int(class_id))]),)


class ZipARTextPrompt:
    DESCRIPTION = (
        "A text prompt for the models that read text themselves (Janus-Pro, Emu3-Gen, Lumina-mGPT 1.0 and 2.0, "
        "SimpleAR). "
        "The recipe of each family is applied by the sampler: Janus-Pro's chat format, Emu3's size tag and quality "
        "suffix, Lumina-mGPT's 'Generate an image of WxH...' line and size tokens, SimpleAR's '<|t2i|>A highly "
        "realistic image of ...<|soi|>'. For LlamaGen text-to-image use ZipAR Text "
        "Encode (T5) instead."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONDITION,)
    RETURN_NAMES = ("condition",)
    OUTPUT_TOOLTIPS = ("The prompt; connect it to ZipAR Sampler with a Janus-Pro, Emu3-Gen, Lumina-mGPT (1.0 or "
                       "2.0) or SimpleAR model.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "a photo of a red fox sitting in fresh snow",
                                      "tooltip": "What to draw, in plain language."}),
                "aspect_ratio": (list(ASPECT_RATIOS), {
                    "default": "1:1",
                    "tooltip": "Width:height. Emu3-Gen draws any of these at the same token area (720 x 720 at 1:1, "
                               "960 x 544 at 16:9). Lumina-mGPT 1.0 and 2.0 pick the nearest shape of their "
                               "official list, in steps of 32 px (at 768: 768 x 768 at 1:1, 1024 x 576 at 16:9, "
                               "640 x 864 at 3:4); Lumina-mGPT 2.0 stops at 10240 positions, so 1024 x 1024 is out of "
                               "reach. Janus-Pro and SimpleAR draw 1:1 only.",
                }),
            },
            "optional": {
                "negative_prompt": ("STRING", {
                    "multiline": True, "default": "",
                    "tooltip": "Emu3-Gen: what the image should not look like (its unconditional branch), laid "
                               "out like the prompt (start token + text + size tag, no quality suffix) as in the "
                               "official repository; empty = Emu3's official negative prompt ('lowres, bad anatomy, "
                               "bad hands, text, error, ...'). Lumina-mGPT 1.0 / 2.0: empty = their official "
                               "unconditional branch (no text); a text here is laid out like the prompt. SimpleAR: "
                               "empty = its official negative prompt ('An image of aerial view, overexposed, low "
                               "quality, ...'); a text here replaces it. Janus-Pro has none.",
                }),
                "quality_suffix": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Emu3-Gen only: append ' masterpiece, film grained, best quality.' to the prompt, as "
                               "Emu3's official example does (never added twice). Off: the prompt exactly as "
                               "written. Janus-Pro and Lumina-mGPT ignore it.",
                }),
            },
        }

    def encode(self, prompt, aspect_ratio, negative_prompt="", quality_suffix=True):
        if not str(prompt).strip():
            raise ZipARError("the prompt is empty; describe the image to draw.")
        text = str(prompt).strip()
        return (api.prompt_condition([text], str(negative_prompt or ""), str(aspect_ratio), bool(quality_suffix),
                                     labels=[text[:40]]),)


class ZipARTextEncodeT5:
    DESCRIPTION = (
        "Encodes a text prompt with flan-t5-xl for a LlamaGen text-to-image model (t2i_*.pt). The encoder folder "
        "goes in ComfyUI/models/text_encoders (e.g. text_encoders/flan-t5-xl with its config.json). ComfyUI's "
        "memory manager keeps it loaded for the next prompt and offloads it when other models need the room."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONDITION,)
    RETURN_NAMES = ("condition",)
    OUTPUT_TOOLTIPS = ("The encoded prompt; connect it to ZipAR Sampler with a t2i model.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {
                    "multiline": True, "default": "a photo of a red fox sitting in fresh snow",
                    "tooltip": "What to draw, in plain English. The models read the first 120 tokens (about 90 "
                               "words); the text is lower-cased as in LlamaGen's own sampler.",
                }),
                "text_encoder": (host.list_text_encoders(), {
                    "default": host.list_text_encoders()[0],
                    "tooltip": "The google/flan-t5-xl folder under ComfyUI/models/text_encoders (any folder with "
                               "a config.json is listed).",
                }),
                "precision": (["auto", "fp32", "bf16", "fp16"], {
                    "default": "auto",
                    "tooltip": "Number format of the encoder. auto: bf16 on GPUs that support it, fp32 on the CPU. "
                               "fp16 is known to break T5 (overflow); prefer bf16 or fp32.",
                }),
                "device": (host.DEVICES, {
                    "default": "default",
                    "tooltip": "Where the encoder runs (it is large: about 5 GB in fp32). default: ComfyUI's "
                               "device; cpu saves GPU memory at the cost of a few seconds per prompt.",
                }),
            }
        }

    def encode(self, prompt, text_encoder, precision, device):
        if not str(prompt).strip():
            raise ZipARError("the prompt is empty; describe the image to draw.")
        folder = host.text_encoder_path(text_encoder)
        dev = host.torch_device(device)
        dtype = api.resolve_dtype(precision, dev)
        key = (*cache.file_key(folder), str(dtype), str(dev))
        loaded = cache.TEXT_ENCODERS.get(key, lambda: load_t5(folder, dev, dtype))
        memory.load([loaded.patcher], full=True)  # ComfyUI brings it onto its device, making room first
        return (loaded.model.condition([str(prompt)]),)


def load_t5(folder: str, runs_on, dtype) -> memory.Loaded:
    """The encoder, read onto ComfyUI's offload device and handed to its memory manager (whole:
    transformers' T5 norms read their weights directly)."""
    encoder = text_encoder_class()(folder, device=memory.offload_device(runs_on), dtype=dtype)
    encoder.device = runs_on  # token ids go where it runs; ComfyUI moves the weights there first
    return memory.Loaded(encoder, memory.manage([encoder.model], dtype, runs_on, cache.TEXT_ENCODERS.forget))
