"""Writes the shipped workflows from one compact description each.

    python tools/make_workflows.py        # rewrites workflows/ (UI format) and workflows/api/

The UI-format files (drag-and-drop, LiteGraph) and the API-format files (POST /prompt) are
built from the same description, so they cannot drift apart; tests/nodes/test_workflows.py checks
the shipped files against the node definitions and against each other. Edits made in the
ComfyUI editor can be exported over the UI files directly: the tests do not need this script.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the node definitions and the workflow helpers the tests use

from helpers.workflow_tools import REPO, all_definitions, socket_inputs, ui_to_api  # noqa: E402

NOTE_COLOR, NOTE_BG = "#432", "#653"
SAMPLER_HELP = (
    "ZipAR Sampler knobs:\n"
    "- window: how far ahead the row above must be before the next row starts. 8 = about 2.6x fewer forward "
    "passes on a 24x24 grid (224 instead of 576); 16 = 400 passes, closest to the original. The grid width "
    "(24 at 384 px, 32 at 512 px) is plain next-token prediction.\n"
    "- cfg: how strongly the image follows the class/prompt (1 = off).\n"
    "- temperature / top_k / top_p: randomness; 0 temperature = greedy.\n"
    "- seed (fixed here, so runs are comparable); batch_size: images per condition.\n"
    "- preview: live view of the picture forming, each token in the colour the connected VQ gives it.\n"
    "- compile: auto = compiled, captured decode step on a GPU (the first image of a size compiles for up to a "
    "minute, later ones start at once), eager on the CPU.\n"
    "The report output (shown by Preview Any) gives the passes saved and the time."
)


# Layout: three columns that read left to right, each a group. A sampler's live preview grows the
# node from 350 to about 575 px, so nothing sits below a sampler within PREVIEW_ROOM of its top.
MODELS_X, ZIPAR_X, IMAGE_X, TOP = 40, 440, 820, 80
SAMPLER_H, PREVIEW_GROWTH = 350, 240  # grown to 574 px in ComfyUI's page (frontend 1.27.10), with margin
PREVIEW_ROOM = SAMPLER_H + PREVIEW_GROWTH + 60  # where the next node below a sampler may start
GROUP_PAD = 40
GROUP_COLORS = {"Models": "#3f789e", "ZipAR": "#8A8", "Compare": "#b58b2a", "Image": "#b58b2a"}

# Where each published file comes from, in the form ComfyUI's frontend reads for its "missing models"
# dialog (node properties.models, matched against the widget's value). Folders cannot be matched that
# way (the frontend compares file names): their download location is in the workflow's note.
DOWNLOADS = {
    "c2i_L_384.pt": "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/c2i_L_384.pt",
    "vq_ds16_c2i.pt": "https://huggingface.co/FoundationVision/LlamaGen/resolve/main/vq_ds16_c2i.pt",
    "t2i_XL_stage2_512.pt": "https://huggingface.co/peizesun/llamagen_t2i/resolve/main/t2i_XL_stage2_512.pt",
    "vq_ds16_t2i.pt": "https://huggingface.co/peizesun/llamagen_t2i/resolve/main/vq_ds16_t2i.pt",
    "movqgan_270M.ckpt": "https://huggingface.co/ai-forever/MoVQGAN/resolve/main/movqgan_270M.ckpt",
}
FOLDER_DOWNLOADS = {
    "Janus-Pro/Janus-Pro-1B": "https://huggingface.co/deepseek-community/Janus-Pro-1B",
    "Emu3-Gen-hf": "https://huggingface.co/BAAI/Emu3-Gen-hf",
    "Lumina-mGPT-7B-768": "https://huggingface.co/Alpha-VLLM/Lumina-mGPT-7B-768",
    "Lumina-mGPT-2.0": "https://huggingface.co/Alpha-VLLM/Lumina-mGPT-2.0",
    "SimpleAR-1.5B-RL": "https://huggingface.co/Daniel0724/SimpleAR-1.5B-RL",
    "Cosmos-1.0-Tokenizer-DV8x16x16": "https://huggingface.co/nvidia/Cosmos-1.0-Tokenizer-DV8x16x16",
    "chameleon-vqgan/vqgan.ckpt": "https://ai.meta.com/resources/models-and-libraries/chameleon-downloads/",
    "flan-t5-xl": "https://huggingface.co/google/flan-t5-xl",
}
SHIPPED = {"zipar-demo/demo_c2i_64.safetensors", "zipar-demo/demo_vq.safetensors"}


@dataclass
class N:
    id: int
    type: str
    widgets: list
    pos: tuple[int, int]
    links: dict = field(default_factory=dict)  # input name -> (source id, output slot)
    title: str | None = None
    size: tuple[int, int] = (320, 130)


def models_column(ar_model: str, vq_model: str, condition: tuple[str, list, int], precision: str = "auto") -> list[N]:
    """The Models group: Load AR Model, Load VQ and the condition node (type, widgets, height), top down."""
    kind, widgets, height = condition
    return [
        N(1, "ZipARLoadARModel", [ar_model, 0, precision, "default", "default", "default"], (MODELS_X, TOP),
          size=(320, 178)),
        N(2, "ZipARLoadVQ", [vq_model, "fp32", "default"], (MODELS_X, TOP + 215), size=(320, 110)),
        N(3, kind, widgets, (MODELS_X, TOP + 360), size=(320, height)),
    ]


def c2i_loaders():
    return models_column("c2i_L_384.pt", "vq_ds16_c2i.pt", ("ZipARImageNetClass", ["207: golden retriever"], 60))


def sampler(id_, pos, window, title=None, cfg=4.0, top_k=2000, model=1, cond=3, vq=2):
    return N(id_, "ZipARSampler", [window, 0, "fixed", cfg, 1.0, top_k, 1.0, 1, True, "auto", False, 8, "official"],
             pos, {"model": (model, 0), "condition": (cond, 0), "vq": (vq, 0)}, title, size=(320, SAMPLER_H))


def decode(id_, pos, tokens, vq=2):
    return N(id_, "ZipARVQDecode", [], pos, {"vq": (vq, 0), "tokens": (tokens, 0)}, size=(240, 50))


def report(id_, pos, sampler_id, title=None, size=(420, 90)):
    return N(id_, "PreviewAny", [], pos, {"source": (sampler_id, 1)}, title, size=size)


def note(id_, pos, text, size=(330, 400)):
    return N(id_, "Note", [text], pos, size=size, title="Read me")


Y2 = TOP + PREVIEW_ROOM  # the second sampler of a comparison, below the first one's preview
NOTE_Y = TOP + 700  # below the tallest condition node (the text prompt)


def single(sampler_node, save_prefix, save_size, note_node, extra_models=()):
    """Models | one sampler | decode, report and the saved image."""
    return [
        *extra_models,
        sampler_node,
        decode(5, (IMAGE_X, TOP), 4),
        report(7, (IMAGE_X, TOP + 100), 4, "Report"),
        N(6, "SaveImage", [save_prefix], (IMAGE_X + 460, TOP), {"images": (5, 0)}, size=save_size),
        note_node,
    ]


def compare(first, second, save_prefix, note_node, models, direction="right", report_titles=("next-token prediction", "ZipAR")):
    """Models | two samplers, one below the other's preview | decodes, reports, the two images side by side."""
    return [
        *models,
        first,
        second,
        decode(6, (IMAGE_X, TOP), 4),
        decode(7, (IMAGE_X, Y2), 5),
        report(10, (IMAGE_X, TOP + 100), 4, f"Report: {report_titles[0]}"),
        report(11, (IMAGE_X, Y2 + 100), 5, f"Report: {report_titles[1]}"),
        N(8, "ImageStitch", [direction, True, 8, "white"], (IMAGE_X + 460, TOP), {"image1": (6, 0), "image2": (7, 0)},
          size=(270, 150)),
        N(9, "SaveImage", [save_prefix], (IMAGE_X + 460, TOP + 200), {"images": (8, 0)}, size=(520, 420)),
        note_node,
    ]


def c2i_zipar():
    return single(
        sampler(4, (ZIPAR_X, TOP), 8, "ZipAR (window 8)"), "zipar_c2i", (400, 440),
        note(8, (MODELS_X, NOTE_Y - 230), "LlamaGen class-to-image (c2i_L_384.pt + vq_ds16_c2i.pt in ComfyUI/models/zipar) "
             "with ZipAR window 8: 224 forward passes instead of 576 for a 384x384 image.\n\n" + SAMPLER_HELP +
             "\n\nLoad AR Model image_size 0 = read the size from the file name (_384 -> 384 px)."),
        c2i_loaders())


def c2i_ntp_vs_zipar():
    return compare(
        sampler(4, (ZIPAR_X, TOP), 24, "Next-token prediction (window 24)"),
        sampler(5, (ZIPAR_X, Y2), 8, "ZipAR (window 8)"), "zipar_ntp_vs_zipar",
        note(12, (MODELS_X, NOTE_Y - 230), "Same seed, same model: left plain next-token prediction (window = grid "
             "width 24, 576 passes), right ZipAR window 8 (224 passes). Compare the images and the two reports.\n\n"
             + SAMPLER_HELP),
        c2i_loaders())


def c2i_window_sweep():
    windows = [24, 16, 12, 8, 4]
    nodes = [*c2i_loaders()]
    row2 = TOP + PREVIEW_ROOM  # decodes and reports, below every sampler's preview
    for i, w in enumerate(windows):  # one column per window
        x = ZIPAR_X + 360 * i
        title = "Next-token prediction (window 24)" if w == 24 else f"ZipAR window {w}"
        nodes.append(sampler(10 + i, (x, TOP), w, title))
        nodes.append(decode(20 + i, (x, row2 + GROUP_PAD * 2), 10 + i))
        nodes.append(report(40 + i, (x, row2 + GROUP_PAD * 2 + 100), 10 + i, f"Report: window {w}", size=(320, 90)))
    prev = 20
    for i in range(1, len(windows)):  # one strip, left to right: 24, 16, 12, 8, 4
        nodes.append(N(30 + i, "ImageStitch", ["right", True, 8, "white"], (ZIPAR_X + 360 * i, row2 + 340),
                       {"image1": (prev, 0), "image2": (20 + i, 0)}, size=(270, 150)))
        prev = 30 + i
    nodes.append(N(50, "SaveImage", ["zipar_window_sweep"], (ZIPAR_X, row2 + 540), {"images": (prev, 0)},
                   size=(1680, 300)))
    nodes.append(note(60, (MODELS_X, NOTE_Y - 230), "One run, five windows, same seed: 24 (next-token prediction, "
                      "576 passes), 16 (400), 12 (312), 8 (224), 4 (136). The saved strip goes left to right in that "
                      "order; each report gives the passes and seconds.\n\n" + SAMPLER_HELP, size=(330, 560)))
    return nodes


def t2i_zipar():
    return single(
        sampler(4, (ZIPAR_X, TOP), 8, "ZipAR (window 8)", cfg=7.5, top_k=1000), "zipar_t2i", (520, 560),
        note(8, (MODELS_X, NOTE_Y), "LlamaGen text-to-image: t2i_XL_stage2_512.pt + vq_ds16_t2i.pt in "
             "ComfyUI/models/zipar, and google/flan-t5-xl (" + FOLDER_DOWNLOADS["flan-t5-xl"] + ") as the folder "
             "ComfyUI/models/text_encoders/flan-t5-xl. 512x512 = a 32x32 grid: window 8 takes 304 passes instead of "
             "1024.\n\n" + SAMPLER_HELP + "\n\nLlamaGen's own settings for prompts: cfg 7.5, top_k 1000."),
        models_column("t2i_XL_stage2_512.pt", "vq_ds16_t2i.pt",
                      ("ZipARTextEncodeT5", ["a photo of a red fox in the snow", "flan-t5-xl", "auto", "default"], 220)))


def demo_sampler(id_, pos, window, title, batch=4, speculative=False):
    return N(id_, "ZipARSampler", [window, 0, "fixed", 2.0, 1.0, 0, 1.0, batch, True, "auto", speculative, 16,
                                   "official"],
             pos, {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, title, size=(320, SAMPLER_H))


def demo_zipar():
    return compare(
        demo_sampler(4, (ZIPAR_X, TOP), 16, "Next-token prediction (window 16)"),
        demo_sampler(5, (ZIPAR_X, Y2), 8, "ZipAR (window 8)"), "zipar_demo",
        note(12, (MODELS_X, NOTE_Y - 230), "Runs on a fresh install, no downloads: the handwritten-digit model shipped "
             "with the pack (zipar-demo/ in the loader lists; 64x64 images, a 16x16 token grid). Class ID = the digit "
             "to draw. Top row: next-token prediction (window 16 = the grid width, 256 passes); bottom row: ZipAR "
             "window 8 (144 passes), same seed. Smaller windows are faster and, on this small model, less legible: "
             "see the quality table in docs/benchmarks.md.\n\n" + SAMPLER_HELP),
        models_column("zipar-demo/demo_c2i_64.safetensors", "zipar-demo/demo_vq.safetensors",
                      ("ZipARClassID", [3], 60), precision="fp32"),
        direction="down")


def demo_speculative():
    """Three columns, same seed: NTP, ZipAR window 12, ZipAR window 12 + speculative."""
    columns = [(16, False, "Next-token prediction (window 16)"), (12, False, "ZipAR (window 12)"),
               (12, True, "ZipAR (window 12) + speculative")]
    nodes = [*models_column("zipar-demo/demo_c2i_64.safetensors", "zipar-demo/demo_vq.safetensors",
                            ("ZipARClassID", [3], 60), precision="fp32")]
    row2 = TOP + PREVIEW_ROOM
    for i, (w, spec, title) in enumerate(columns):
        x = ZIPAR_X + 360 * i
        nodes.append(demo_sampler(10 + i, (x, TOP), w, title, batch=1, speculative=spec))
        nodes.append(decode(20 + i, (x, row2 + GROUP_PAD * 2), 10 + i))
        nodes.append(report(40 + i, (x, row2 + GROUP_PAD * 2 + 100), 10 + i, f"Report: {title}", size=(320, 120)))
    for i in (1, 2):
        nodes.append(N(30 + i, "ImageStitch", ["right", True, 8, "white"], (ZIPAR_X + 360 * i, row2 + 370),
                       {"image1": (20 if i == 1 else 31, 0), "image2": (20 + i, 0)}, size=(270, 150)))
    nodes.append(N(50, "SaveImage", ["zipar_demo_speculative"], (ZIPAR_X, row2 + 570), {"images": (32, 0)},
                   size=(1000, 360)))
    nodes.append(note(60, (MODELS_X, NOTE_Y - 230), "Speculative decoding on the digit model shipped with the pack "
                      "(no downloads; 16x16 tokens). Same seed, left to right: next-token prediction (256 passes), "
                      "ZipAR window 12 (200 passes), and ZipAR window 12 + speculative, which also checks guesses of "
                      "each row's next tokens in every pass and keeps the tokens the model agrees with. The third "
                      "image follows exactly the distribution of the second (with temperature 0, greedy, it is the "
                      "very same image) in fewer passes: its report says how many and how many guessed tokens were "
                      "kept per pass. Each pass feeds many more tokens: on a CPU the image takes longer in seconds; "
                      "the saving is for a GPU, where a wider pass costs little. "
                      "See the speculative table in docs/benchmarks.md.\n\n" + SAMPLER_HELP, size=(330, 640)))
    return nodes


def chat_loaders(model, vq, prompt, ratio="1:1"):
    return models_column(model, vq, ("ZipARTextPrompt", [prompt, ratio, "", True], 240))


def chat_sampler(id_, pos, window, title, cfg, top_k):
    return N(id_, "ZipARSampler", [window, 0, "fixed", cfg, 1.0, top_k, 1.0, 1, True, "auto", False, 8, "official"],
             pos, {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, title, size=(320, SAMPLER_H))


JANUS_NOTE = ("Janus-Pro (deepseek-community/Janus-Pro-1B or -7B, " + FOLDER_DOWNLOADS["Janus-Pro/Janus-Pro-1B"] +
              ", or the original deepseek-ai folder) in ComfyUI/models/Janus-Pro/ (where the Janus-Pro pack keeps it) "
              "or ComfyUI/models/zipar/. The same folder is the VQ.")
FOX = "a red fox sitting in fresh snow, golden hour"


def janus_pro_zipar():
    return single(
        sampler(4, (ZIPAR_X, TOP), 8, "ZipAR (window 8)", cfg=5.0, top_k=0), "zipar_janus_pro", (400, 440),
        note(8, (MODELS_X, NOTE_Y), JANUS_NOTE + " 384 x 384 = a 24 x 24 grid: window 8 takes 224 passes instead of "
             "576.\n\n" + SAMPLER_HELP + "\n\nJanus-Pro's own settings: cfg 5, temperature 1, no top-k. It has no "
             "negative prompt."),
        chat_loaders("Janus-Pro/Janus-Pro-1B", "Janus-Pro/Janus-Pro-1B", FOX))


def janus_pro_ntp_vs_zipar():
    return compare(
        chat_sampler(4, (ZIPAR_X, TOP), 24, "Next-token prediction (window 24)", 5.0, 0),
        chat_sampler(5, (ZIPAR_X, Y2), 8, "ZipAR (window 8)", 5.0, 0), "zipar_janus_ntp_vs_zipar",
        note(12, (MODELS_X, NOTE_Y), "Same seed, same Janus-Pro: left next-token prediction (window 24 = the grid "
             "width, 576 passes, what the Janus-Pro pack does), right ZipAR window 8 (224 passes).\n\n" + JANUS_NOTE +
             "\n\n" + SAMPLER_HELP),
        chat_loaders("Janus-Pro/Janus-Pro-1B", "Janus-Pro/Janus-Pro-1B", FOX))


def emu3_gen_zipar():
    return single(
        sampler(4, (ZIPAR_X, TOP), 8, "ZipAR (window 8)", cfg=3.0, top_k=2048), "zipar_emu3_gen", (520, 360),
        note(8, (MODELS_X, NOTE_Y), "Emu3-Gen (BAAI/Emu3-Gen-hf, " + FOLDER_DOWNLOADS["Emu3-Gen-hf"] + ", VQ included, "
             "in ComfyUI/models/zipar/Emu3-Gen-hf; or the original BAAI/Emu3-Gen with BAAI/Emu3-VisionTokenizer as the "
             "VQ). 720 x 720 pixels of area (image_size 0); at 16:9 a 68 x 120 token grid (960 x 544 px): window 8 "
             "takes 768 passes instead of 8160. An empty negative prompt uses Emu3's official one.\n\n" +
             SAMPLER_HELP + "\n\nEmu3's own settings: cfg 3, top_k 2048."),
        chat_loaders("Emu3-Gen-hf", "Emu3-Gen-hf", FOX, ratio="16:9"))


LUMINA_NOTE = ("Lumina-mGPT (Alpha-VLLM/Lumina-mGPT-7B-768, " + FOLDER_DOWNLOADS["Lumina-mGPT-7B-768"] + "; -512 / "
               "-1024 / -768-Omni work alike) in ComfyUI/models/zipar/Lumina-mGPT-7B-768/. Its image decoder is Meta's "
               "Chameleon VQGAN, which you download from Meta's Chameleon release yourself (its licence, " +
               FOLDER_DOWNLOADS["chameleon-vqgan/vqgan.ckpt"] + "): put vqgan.ckpt and vqgan.yaml into "
               "ComfyUI/models/zipar/chameleon-vqgan/. image_size 0 = the size in the folder name (768 = a 48 x 48 "
               "grid); the aspect ratio picks the nearest shape of Lumina's official list (16:9 at 768 is 1024 x 576).")


def lumina_mgpt_768_zipar():
    return single(
        sampler(4, (ZIPAR_X, TOP), 16, "ZipAR (window 16)", cfg=4.0, top_k=2000), "zipar_lumina_mgpt", (420, 440),
        note(8, (MODELS_X, NOTE_Y), LUMINA_NOTE + " Window 16 takes 800 passes instead of 2304 (row 1 starts by the "
             "window rule, as in ZipAR's own Lumina-mGPT code).\n\n" + SAMPLER_HELP + "\n\nLumina-mGPT's own "
             "settings: cfg 4, temperature 1, top_k 2000. An empty negative prompt is its official unconditional "
             "branch (no text)."),
        chat_loaders("Lumina-mGPT-7B-768", "chameleon-vqgan/vqgan.ckpt", FOX))


def lumina_mgpt_ntp_vs_zipar():
    return compare(
        chat_sampler(4, (ZIPAR_X, TOP), 48, "Next-token prediction (window 48)", 4.0, 2000),
        chat_sampler(5, (ZIPAR_X, Y2), 16, "ZipAR (window 16)", 4.0, 2000), "zipar_lumina_ntp_vs_zipar",
        note(12, (MODELS_X, NOTE_Y), "Same seed, same Lumina-mGPT: left next-token prediction (window 48 = the grid "
             "width, 2304 passes, what Lumina-mGPT's own code does), right ZipAR window 16 (800 passes).\n\n" +
             LUMINA_NOTE + "\n\n" + SAMPLER_HELP),
        chat_loaders("Lumina-mGPT-7B-768", "chameleon-vqgan/vqgan.ckpt", FOX))


LUMINA2_NOTE = ("Lumina-mGPT 2.0 (Alpha-VLLM/Lumina-mGPT-2.0, " + FOLDER_DOWNLOADS["Lumina-mGPT-2.0"] + "; the -Omni "
                "folder works alike for text-to-image) in ComfyUI/models/zipar/Lumina-mGPT-2.0/. Its image decoder is "
                "ai-forever's SBER-MoVQGAN-270M: put movqgan_270M.ckpt (" + DOWNLOADS["movqgan_270M.ckpt"] + ") into "
                "ComfyUI/models/zipar/. image_size 0 = 768 (a 96 x 96 grid of 8-pixel codes, each row closed by an "
                "end-of-line token); the aspect ratio picks the nearest shape of the official list (16:9 is 1024 x 576). "
                "The 7B model in bf16 takes about 16 GB and its key/value cache with CFG about 10 GB more: on a 16 GB "
                "card set weight_dtype fp8_e4m3fn and kv_dtype int8 on Load AR Model.")


def lumina_mgpt2_zipar():
    return compare(
        chat_sampler(4, (ZIPAR_X, TOP), 96, "Next-token prediction (window 96)", 4.0, 4096),
        chat_sampler(5, (ZIPAR_X, Y2), 16, "ZipAR (window 16)", 4.0, 4096), "zipar_lumina2_ntp_vs_zipar",
        note(12, (MODELS_X, NOTE_Y), "Same seed, same Lumina-mGPT 2.0: left next-token prediction (window 96 = the "
             "grid width, 9216 passes, what the official code does), right ZipAR window 16 (1616 passes: row 1 starts "
             "by the window rule, as in ZipAR's Lumina-mGPT code).\n\n" + LUMINA2_NOTE + "\n\n" + SAMPLER_HELP +
             "\n\nLumina-mGPT 2.0's own settings: cfg 4, temperature 1, top_k 4096, cfg_schedule official (its code "
             "starts at cfg, lowers it to 4.0 over the first tokens and never guides below 4.0). An empty negative "
             "prompt is its official unconditional branch (no text)."),
        chat_loaders("Lumina-mGPT-2.0", "movqgan_270M.ckpt", FOX))


SIMPLEAR_NOTE = ("SimpleAR (Daniel0724/SimpleAR-1.5B-RL, " + FOLDER_DOWNLOADS["SimpleAR-1.5B-RL"] + "; the -0.5B / "
                 "-SFT folders work alike) in ComfyUI/models/zipar/SimpleAR-1.5B-RL/. Its image tokenizer is NVIDIA's "
                 "Cosmos-1.0-Tokenizer-DV8x16x16 (" + FOLDER_DOWNLOADS["Cosmos-1.0-Tokenizer-DV8x16x16"] + ", NVIDIA "
                 "Open Model License): put the folder with encoder.jit and decoder.jit into ComfyUI/models/zipar/ "
                 "(ZipAR reads the weights out of the archives without running them). image_size 0 = 1024 (a 64 x 64 "
                 "grid of 16-pixel codes); square only. A 1.5B model: it fits an 8 GB card in bf16.")


def simplear_1024_zipar():
    return compare(
        chat_sampler(4, (ZIPAR_X, TOP), 64, "Next-token prediction (window 64)", 6.0, 64000),
        chat_sampler(5, (ZIPAR_X, Y2), 8, "ZipAR (window 8)", 6.0, 64000), "zipar_simplear_ntp_vs_zipar",
        note(12, (MODELS_X, NOTE_Y), "Same seed, same SimpleAR: left next-token prediction (window 64 = the grid "
             "width, 4096 passes, what the official code does), right ZipAR window 8 (624 passes; row 1 waits for "
             "row 0, the paper's rule).\n\n" + SIMPLEAR_NOTE + "\n\n" + SAMPLER_HELP + "\n\nSimpleAR's own "
             "settings: cfg 6, temperature 1, top_k 64000 (all its codes). An empty negative prompt is its official "
             "one ('An image of aerial view, overexposed, low quality, ...')."),
        chat_loaders("SimpleAR-1.5B-RL", "Cosmos-1.0-Tokenizer-DV8x16x16", FOX))


WORKFLOWS = {
    "simplear_1024_zipar": simplear_1024_zipar,
    "lumina_mgpt2_zipar": lumina_mgpt2_zipar,
    "lumina_mgpt_768_zipar": lumina_mgpt_768_zipar,
    "lumina_mgpt_ntp_vs_zipar": lumina_mgpt_ntp_vs_zipar,
    "janus_pro_zipar": janus_pro_zipar,
    "janus_pro_ntp_vs_zipar": janus_pro_ntp_vs_zipar,
    "emu3_gen_zipar": emu3_gen_zipar,
    "demo_zipar": demo_zipar,
    "demo_speculative": demo_speculative,
    "llamagen_c2i_zipar": c2i_zipar,
    "llamagen_c2i_ntp_vs_zipar": c2i_ntp_vs_zipar,
    "llamagen_c2i_window_sweep": c2i_window_sweep,
    "llamagen_t2i_zipar": t2i_zipar,
}


def display_name(node_type: str, definitions: dict) -> str:
    import nodes

    if node_type in nodes.NODE_DISPLAY_NAME_MAPPINGS:
        return nodes.NODE_DISPLAY_NAME_MAPPINGS[node_type]
    return definitions.get(node_type, {}).get("display_name", node_type)


def build_ui(nodes: list[N], definitions: dict, workflow_id: str) -> dict:
    links, out_links = [], {}
    ui_nodes = []
    by_id = {n.id: n for n in nodes}
    for order, n in enumerate(nodes):
        node = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {}, "order": order,
                "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": list(n.widgets)}
        node["title"] = n.title or display_name(n.type, definitions)
        if n.type == "Note":
            node.update(color=NOTE_COLOR, bgcolor=NOTE_BG)
            ui_nodes.append(node)
            continue
        definition = definitions[n.type]
        node["properties"] = {"Node name for S&R": n.type}
        downloads = [{"name": v, "url": DOWNLOADS[v], "directory": "zipar"} for v in n.widgets
                     if isinstance(v, str) and v in DOWNLOADS]
        if downloads:  # read by the frontend's missing-models dialog
            node["properties"]["models"] = downloads
        for slot, (name, spec, _req) in enumerate(socket_inputs(definition)):
            entry = {"name": name, "type": spec[0], "link": None}
            if name in n.links:
                src, src_slot = n.links[name]
                link_id = len(links) + 1
                out_type = definitions[by_id[src].type]["output"][src_slot]
                links.append([link_id, src, src_slot, n.id, slot, out_type])
                out_links.setdefault((src, src_slot), []).append(link_id)
                entry["link"] = link_id
            node["inputs"].append(entry)
        ui_nodes.append(node)
    for node in ui_nodes:
        if node["type"] == "Note":
            continue
        definition = definitions[node["type"]]
        for slot, (kind, name) in enumerate(zip(definition["output"], definition["output_name"])):
            node["outputs"].append({"name": name, "type": kind, "slot_index": slot,
                                    "links": out_links.get((node["id"], slot), [])})
    return {
        "id": workflow_id,
        "revision": 0,
        "last_node_id": max(n.id for n in nodes),
        "last_link_id": len(links),
        "nodes": ui_nodes,
        "links": links,
        "groups": groups_for(nodes),
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}},
        "version": 0.4,
    }


MODEL_TYPES = {"ZipARLoadARModel", "ZipARLoadVQ", "ZipARImageNetClass", "ZipARClassID", "ZipARTextPrompt",
               "ZipARTextEncodeT5", "Note"}
TITLE_H = 30  # LiteGraph draws a node's title bar above its position
GROUP_TITLE_H = 40


def node_box(n: N) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) a node covers on the canvas, its title bar and, for a sampler, its preview included."""
    grow = PREVIEW_GROWTH if n.type == "ZipARSampler" else 0
    return n.pos[0], n.pos[1] - TITLE_H, n.pos[0] + n.size[0], n.pos[1] + n.size[1] + grow


def group_of(n: N, nodes: list[N]) -> str:
    if n.type in MODEL_TYPES:
        return "Models"
    if n.type == "ZipARSampler":
        return "ZipAR"
    return "Compare" if any(m.type == "ImageStitch" for m in nodes) else "Image"


def groups_for(nodes: list[N]) -> list[dict]:
    """One group per stage ("Models", "ZipAR", "Compare" / "Image") around its nodes."""
    out = []
    for title in ("Models", "ZipAR", "Compare", "Image"):
        boxes = [node_box(n) for n in nodes if group_of(n, nodes) == title]
        if not boxes:
            continue
        x0, y0 = min(b[0] for b in boxes) - GROUP_PAD // 2, min(b[1] for b in boxes) - GROUP_TITLE_H
        x1, y1 = max(b[2] for b in boxes) + GROUP_PAD // 2, max(b[3] for b in boxes) + GROUP_PAD // 2
        out.append({"id": len(out) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                    "color": GROUP_COLORS[title], "font_size": 24, "flags": {}})
    return out


def dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    definitions = all_definitions()
    for name, make in WORKFLOWS.items():
        ui = build_ui(make(), definitions, f"5a1b2c3d-0000-4000-8000-{sum(map(ord, name)):012d}")
        api = ui_to_api(ui, definitions)
        text = dump(ui)
        (REPO / "workflows" / f"{name}.json").write_text(text, encoding="utf-8")
        (REPO / "workflows" / "api").mkdir(parents=True, exist_ok=True)
        (REPO / "workflows" / "api" / f"{name}.json").write_text(dump(api), encoding="utf-8")
        print(f"wrote {name}: {len(ui['nodes'])} nodes, {len(ui['links'])} links")


if __name__ == "__main__":
    main()
