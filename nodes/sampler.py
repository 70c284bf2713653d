"""ZipAR Sampler: generate token grids with ZipAR (or plain next-token prediction)."""
from __future__ import annotations

import logging

from . import host, memory
from .datatypes import AR_MODEL, CONDITION, TOKENS, VQ, Tokens, engine_vq
from .engine import (CFG_SCHEDULES, COMPILE_MODES, DEFAULT_DRAFT_LENGTH, MAX_DRAFT_LENGTH, ConditionMismatch,
                     SamplingOptions, ZipARError, api)
from .preview import TokenPreview, previews_enabled

CATEGORY = "ZipAR"
MAX_WINDOW = 256  # widest grids: Lumina-mGPT 1024 at 4:1 (128 tokens), Emu3 at 21:9 (137)
log = logging.getLogger("ZipAR")


def check_window(window: int, width: int) -> None:
    """The window must fit the real grid width (which is only known once model and VQ are known)."""
    if not 1 <= int(window) <= width:
        raise ZipARError(
            f"window must be between 1 and {width} (got {window!r}); {width} means plain next-token prediction."
        )


# How a node user gives each kind of condition the engine may ask for (ConditionMismatch.needs).
CONDITION_NODES = {
    "class_ids": "connect a ZipAR ImageNet Class or ZipAR Class ID node as the condition",
    "caption": "connect a ZipAR Text Encode (T5) node as the condition",
    "prompt": "connect a ZipAR Text Prompt node as the condition",
}


def prepare(model, condition, vq):
    """The engine's request check, its wrong-condition message completed in terms of the nodes."""
    try:
        return api.prepare(model.model, condition, int(model.image_size), engine_vq(vq))
    except ConditionMismatch as exc:
        raise ZipARError(f"{exc}; {CONDITION_NODES[exc.needs]}.") from None


class ZipARSampler:
    DESCRIPTION = (
        "Generates images as grids of VQ tokens with ZipAR: once the row above is `window` tokens ahead, the next "
        "row starts in the same forward pass, so a 24 x 24 grid takes 224 passes at window 8 instead of 576, with "
        "the same model and no retraining. Decode the tokens with ZipAR VQ Decode. The report says how many "
        "passes were saved."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (TOKENS, "STRING")
    RETURN_NAMES = ("tokens", "report")
    OUTPUT_TOOLTIPS = (
        "The generated token grids (one per image); connect to ZipAR VQ Decode.",
        "One line, e.g. '224 forward passes instead of 576 (-61%), 1.9 s'; show it with a Preview Any node.",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (AR_MODEL, {"tooltip": "The AR model from ZipAR Load AR Model."}),
                "condition": (CONDITION, {"tooltip": "What to draw: ZipAR ImageNet Class / Class ID (c2i models), "
                                                     "ZipAR Text Encode (T5) (LlamaGen t2i), ZipAR Text Prompt "
                                                     "(Janus-Pro, Emu3-Gen, Lumina-mGPT 1.0 / 2.0)."}),
                "window": ("INT", {
                    "default": 8, "min": 1, "max": MAX_WINDOW, "step": 1,
                    "tooltip": "How far ahead the row above must be before the next row starts. Smaller = fewer "
                               "passes and faster, larger = closer to the original model. The paper uses 8 to 16 "
                               "on 24-wide grids. The grid width itself (24 for 384 px, 32 for 512 px) means plain "
                               "next-token prediction, one token per pass; more than the width is an error.",
                }),
                "seed": ("INT", {
                    "default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                    "tooltip": "Random seed. The same seed and settings give the same image.",
                }),
                "cfg": ("FLOAT", {
                    "default": 4.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                    "tooltip": "Classifier-free guidance: how strongly the image follows the class or prompt. "
                               "1 turns guidance off (and halves the work); LlamaGen uses about 4 for classes "
                               "and 7.5 for prompts. Too high looks oversaturated.",
                }),
                "temperature": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 5.0, "step": 0.05, "round": 0.01,
                    "tooltip": "Randomness of each token. 1 is the model as trained; lower is safer and plainer; "
                               "0 always takes the most likely token (greedy, the seed no longer matters).",
                }),
                "top_k": ("INT", {
                    "default": 2000, "min": 0, "max": 65536, "step": 1,
                    "tooltip": "Sample only among the k most likely tokens (LlamaGen uses 2000 for classes, 1000 "
                               "for prompts). 0 turns it off.",
                }),
                "top_p": ("FLOAT", {
                    "default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "round": 0.001,
                    "tooltip": "Sample only among the most likely tokens that together hold this share of the "
                               "probability. 1 turns it off.",
                }),
                "batch_size": ("INT", {
                    "default": 1, "min": 1, "max": 64,
                    "tooltip": "Images per condition, generated together in the same passes (different random "
                               "draws from the one seed).",
                }),
                "preview": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Show the grid filling in while sampling: one flat colour per token, the colour "
                               "the connected VQ decodes it to (fitted once per VQ; without the vq input, colours "
                               "from the model's embeddings), at most 5 frames a second. ZIPAR_PREVIEW=0 turns it "
                               "off everywhere.",
                }),
                "compile": (list(COMPILE_MODES), {
                    "default": "auto",
                    "tooltip": "auto: on a GPU the decode step is compiled (torch.compile) and replayed as CUDA "
                               "graphs, which removes most of each pass's launch overhead; the first image of a size "
                               "and batch compiles first, later ones start at once. On the CPU auto stays eager. "
                               "on / off force it. The same seed gives the same image either way.",
                }),
                "speculative": ("BOOLEAN", {
                    "default": False, "label_on": "on", "label_off": "off",
                    "tooltip": "Speculative Jacobi decoding on top of the window: every pass also checks a guess "
                               "of each row's next tokens and keeps those the model agrees with, by a rule that "
                               "leaves the images' distribution exactly that of this window (greedy: the very "
                               "same tokens). Fewer passes at no cost in quality; each pass feeds more tokens, so "
                               "it pays most on a GPU and at batch size 1 (a batch advances at its slowest "
                               "image's pace). A seed still gives the same image for the same batch.",
                }),
                "draft_length": ("INT", {
                    "default": DEFAULT_DRAFT_LENGTH, "min": 1, "max": MAX_DRAFT_LENGTH, "step": 1,
                    "tooltip": "Speculative mode: how many tokens ahead each row guesses per pass. 16 is a good "
                               "start on a CPU; 32 saves a few more passes where a wider pass costs little (a GPU).",
                }),
                "cfg_schedule": (list(CFG_SCHEDULES), {
                    "default": "official",
                    "tooltip": "How cfg varies over the image. official: as the model's own code does it, which is "
                               "cfg throughout for every family but Lumina-mGPT 2.0: its code starts at cfg, lowers "
                               "it to 4.0 over the first tokens and never guides below 4.0 (so cfg 3 acts as 4). "
                               "constant: cfg for every token. cfg 1 turns guidance off in both.",
                }),
            },
            "optional": {
                "vq": (VQ, {"tooltip": "Optional: the VQ you will decode with. Checks that it matches the model "
                                       "before sampling, and sets the pixels per token (16 when not connected)."}),
            },
        }

    def sample(self, model, condition, window, seed, cfg, temperature, top_k, top_p, batch_size, preview=True, vq=None,
               compile="auto", speculative=False, draft_length=DEFAULT_DRAFT_LENGTH, cfg_schedule="official"):
        ar = model.model
        request = prepare(model, condition, vq)
        grid = request.grid
        check_window(window, grid[1])
        greedy = float(temperature) == 0.0
        options = SamplingOptions(
            cfg=float(cfg), temperature=1.0 if greedy else float(temperature), top_k=int(top_k), top_p=float(top_p),
            greedy=greedy, cfg_schedule=str(cfg_schedule),
        )
        options.validate()
        # ComfyUI puts the weights on the card, first freeing what the cache will take
        memory.load([model.patcher], api.request_bytes(ar, len(request.condition) * int(batch_size), grid,
                                                       options.guidance))
        if compile == "auto" and memory.streamed(model.patcher):
            compile = "off"  # layers stream in from system memory each pass: nothing for a graph to save
        total = api.expected_passes(grid, int(window), ar.row0_first)
        pbar = host.progress_bar(total)
        frames = TokenPreview(ar, vq=engine_vq(vq) if vq is not None else None) if previews_enabled(preview) else None

        def on_pass(progress):
            host.throw_if_interrupted()  # the queue's cancel stops sampling within one pass
            pbar.update_absolute(progress.step, progress.total, frames(progress) if frames is not None else None)

        result = api.generate(ar, condition, grid, int(window), options, seed=int(seed), batch=int(batch_size),
                              callback=on_pass, compile=str(compile), speculative=bool(speculative),
                              draft_length=int(draft_length))
        report = f"window {int(window)}{' + speculative' if result.speculative else ''}: {result.report()}"
        log.info("ZipAR Sampler %s: %s", "+".join(result.labels[:4]), report)
        return (Tokens(result.tokens, int(ar.vocab_size), list(result.labels), report, ar.vq_hint), report)
