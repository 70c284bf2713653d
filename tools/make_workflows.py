"""Writes the shipped workflows from one compact description each.

    python tools/make_workflows.py        # rewrites workflows/, workflows/api/, example_workflows/

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
    "- preview: live view of the grid filling in (flat token colours, no decoding).\n"
    "- compile: auto = compiled, captured decode step on a GPU (the first image of a size compiles for up to a "
    "minute, later ones start at once), eager on the CPU.\n"
    "The report output (shown by Preview Any) gives the passes saved and the time."
)


@dataclass
class N:
    id: int
    type: str
    widgets: list
    pos: tuple[int, int]
    links: dict = field(default_factory=dict)  # input name -> (source id, output slot)
    title: str | None = None
    size: tuple[int, int] = (320, 130)


def c2i_loaders(x=40, y=60):
    return [
        N(1, "ZipARLoadARModel", ["c2i_L_384.pt", 0, "auto", "default", "default"], (x, y), size=(320, 154)),
        N(2, "ZipARLoadVQ", ["vq_ds16_c2i.pt", "fp32", "default"], (x, y + 190), size=(320, 110)),
        N(3, "ZipARImageNetClass", ["207: golden retriever"], (x, y + 350), size=(320, 60)),
    ]


def sampler(id_, pos, window, title=None, cfg=4.0, top_k=2000, model=1, cond=3, vq=2):
    return N(id_, "ZipARSampler", [window, 0, "fixed", cfg, 1.0, top_k, 1.0, 1, True, "auto"], pos,
             {"model": (model, 0), "condition": (cond, 0), "vq": (vq, 0)}, title, size=(320, 300))


def decode(id_, pos, tokens, vq=2):
    return N(id_, "ZipARVQDecode", [], pos, {"vq": (vq, 0), "tokens": (tokens, 0)}, size=(240, 50))


def report(id_, pos, sampler_id, title=None, size=(420, 90)):
    return N(id_, "PreviewAny", [], pos, {"source": (sampler_id, 1)}, title, size=size)


def note(id_, pos, text, size=(330, 400)):
    return N(id_, "Note", [text], pos, size=size, title="Read me")


def c2i_zipar():
    return [
        *c2i_loaders(),
        sampler(4, (420, 60), 8),
        decode(5, (800, 60), 4),
        N(6, "SaveImage", ["zipar_c2i"], (1080, 60), {"images": (5, 0)}, size=(400, 440)),
        report(7, (420, 420), 4, "Report"),
        note(8, (40, 520), "LlamaGen class-to-image (c2i_L_384.pt + vq_ds16_c2i.pt in ComfyUI/models/zipar) with "
             "ZipAR window 8: 224 forward passes instead of 576 for a 384x384 image.\n\n" + SAMPLER_HELP +
             "\n\nLoad AR Model image_size 0 = read the size from the file name (_384 -> 384 px)."),
    ]


def c2i_ntp_vs_zipar():
    return [
        *c2i_loaders(),
        sampler(4, (420, 60), 24, "Next-token prediction (window 24)"),
        sampler(5, (420, 420), 8, "ZipAR (window 8)"),
        decode(6, (800, 60), 4),
        decode(7, (800, 420), 5),
        N(8, "ImageStitch", ["right", True, 8, "white"], (1080, 60), {"image1": (6, 0), "image2": (7, 0)}, size=(270, 150)),
        N(9, "SaveImage", ["zipar_ntp_vs_zipar"], (1380, 60), {"images": (8, 0)}, size=(520, 360)),
        report(10, (800, 560), 4, "Report: next-token prediction"),
        report(11, (800, 700), 5, "Report: ZipAR"),
        note(12, (40, 520), "Same seed, same model: left plain next-token prediction (window = grid width 24, 576 "
             "passes), right ZipAR window 8 (224 passes). Compare the images and the two reports.\n\n" + SAMPLER_HELP),
    ]


def c2i_window_sweep():
    windows = [24, 16, 12, 8, 4]
    nodes = [*c2i_loaders()]
    for i, w in enumerate(windows):  # one column per window
        x = 420 + 340 * i
        title = "Next-token prediction (window 24)" if w == 24 else f"ZipAR window {w}"
        nodes.append(sampler(10 + i, (x, 60), w, title))
        nodes.append(decode(20 + i, (x, 420), 10 + i))
        nodes.append(report(40 + i, (x, 520), 10 + i, f"Report: window {w}", size=(320, 90)))
    prev = 20
    for i in range(1, len(windows)):  # one strip, left to right: 24, 16, 12, 8, 4
        nodes.append(N(30 + i, "ImageStitch", ["right", True, 8, "white"], (420 + 340 * i, 680),
                       {"image1": (prev, 0), "image2": (20 + i, 0)}, size=(270, 150)))
        prev = 30 + i
    nodes.append(N(50, "SaveImage", ["zipar_window_sweep"], (420, 880), {"images": (prev, 0)}, size=(1680, 300)))
    nodes.append(note(60, (40, 520), "One run, five windows, same seed: 24 (next-token prediction, 576 passes), 16 "
                      "(400), 12 (312), 8 (224), 4 (136). The saved strip goes left to right in that order; each "
                      "report gives the passes and seconds.\n\n" + SAMPLER_HELP, size=(330, 560)))
    return nodes


def t2i_zipar():
    return [
        N(1, "ZipARLoadARModel", ["t2i_XL_stage2_512.pt", 0, "auto", "default", "default"], (40, 60), size=(320, 154)),
        N(2, "ZipARLoadVQ", ["vq_ds16_t2i.pt", "fp32", "default"], (40, 250), size=(320, 110)),
        N(3, "ZipARTextEncodeT5", ["a photo of a red fox in the snow", "flan-t5-xl", "auto", "default"], (40, 410),
          size=(320, 220)),
        sampler(4, (420, 60), 8, cfg=7.5, top_k=1000),
        decode(5, (800, 60), 4),
        N(6, "SaveImage", ["zipar_t2i"], (1080, 60), {"images": (5, 0)}, size=(520, 560)),
        report(7, (420, 420), 4, "Report"),
        note(8, (40, 690), "LlamaGen text-to-image: t2i_XL_stage2_512.pt + vq_ds16_t2i.pt in ComfyUI/models/zipar, "
             "and google/flan-t5-xl as the folder ComfyUI/models/text_encoders/flan-t5-xl. 512x512 = a 32x32 grid: "
             "window 8 takes 304 passes instead of 1024.\n\n" + SAMPLER_HELP +
             "\n\nLlamaGen's own settings for prompts: cfg 7.5, top_k 1000."),
    ]


def demo_zipar():
    return [
        N(1, "ZipARLoadARModel", ["zipar-demo/demo_c2i_64.safetensors", 0, "fp32", "default", "default"], (40, 60), size=(320, 154)),
        N(2, "ZipARLoadVQ", ["zipar-demo/demo_vq.safetensors", "fp32", "default"], (40, 250), size=(320, 110)),
        N(3, "ZipARClassID", [3], (40, 410), size=(320, 60)),
        N(4, "ZipARSampler", [16, 0, "fixed", 2.0, 1.0, 0, 1.0, 4, True, "auto"], (420, 60),
          {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, "Next-token prediction (window 16)", size=(320, 300)),
        N(5, "ZipARSampler", [8, 0, "fixed", 2.0, 1.0, 0, 1.0, 4, True, "auto"], (420, 420),
          {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, "ZipAR (window 8)", size=(320, 300)),
        decode(6, (800, 60), 4),
        decode(7, (800, 420), 5),
        N(8, "ImageStitch", ["down", True, 8, "white"], (1080, 60), {"image1": (6, 0), "image2": (7, 0)}, size=(270, 150)),
        N(9, "SaveImage", ["zipar_demo"], (1380, 60), {"images": (8, 0)}, size=(420, 360)),
        report(10, (800, 560), 4, "Report: next-token prediction"),
        report(11, (800, 700), 5, "Report: ZipAR"),
        note(12, (40, 520), "Runs on a fresh install, no downloads: the handwritten-digit model shipped with the pack "
             "(zipar-demo/ in the loader lists; 64x64 images, a 16x16 token grid). Class ID = the digit to draw. "
             "Top row: next-token prediction (window 16 = the grid width, 256 passes); bottom row: ZipAR window 8 "
             "(144 passes), same seed. Smaller windows are faster and, on this small model, less legible: see the "
             "quality table in docs/benchmarks.md.\n\n" + SAMPLER_HELP),
    ]


def chat_loaders(model, vq, prompt, ratio="1:1", negative="", image_size=0):
    return [
        N(1, "ZipARLoadARModel", [model, image_size, "auto", "default", "default"], (40, 60), size=(320, 154)),
        N(2, "ZipARLoadVQ", [vq, "fp32", "default"], (40, 250), size=(320, 110)),
        N(3, "ZipARTextPrompt", [prompt, ratio, negative, True], (40, 410), size=(320, 240)),
    ]


def janus_pro_zipar():
    return [
        *chat_loaders("Janus-Pro/Janus-Pro-1B", "Janus-Pro/Janus-Pro-1B", "a red fox sitting in fresh snow, golden hour"),
        sampler(4, (420, 60), 8, cfg=5.0, top_k=0),
        decode(5, (800, 60), 4),
        N(6, "SaveImage", ["zipar_janus_pro"], (1080, 60), {"images": (5, 0)}, size=(400, 440)),
        report(7, (420, 420), 4, "Report"),
        note(8, (40, 710), "Janus-Pro (deepseek-community/Janus-Pro-1B or -7B, or the original deepseek-ai folder) in "
             "ComfyUI/models/Janus-Pro/ (where the Janus-Pro pack keeps it) or ComfyUI/models/zipar/. The same folder "
             "is the VQ. 384 x 384 = a 24 x 24 grid: window 8 takes 224 passes instead of 576.\n\n" + SAMPLER_HELP +
             "\n\nJanus-Pro's own settings: cfg 5, temperature 1, no top-k. It has no negative prompt."),
    ]


def janus_pro_ntp_vs_zipar():
    nodes = [*chat_loaders("Janus-Pro/Janus-Pro-1B", "Janus-Pro/Janus-Pro-1B", "a red fox sitting in fresh snow, golden hour")]
    nodes += [
        N(4, "ZipARSampler", [24, 0, "fixed", 5.0, 1.0, 0, 1.0, 1, True, "auto"], (420, 60),
          {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, "Next-token prediction (window 24)", size=(320, 300)),
        N(5, "ZipARSampler", [8, 0, "fixed", 5.0, 1.0, 0, 1.0, 1, True, "auto"], (420, 420),
          {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, "ZipAR (window 8)", size=(320, 300)),
        decode(6, (800, 60), 4),
        decode(7, (800, 420), 5),
        N(8, "ImageStitch", ["right", True, 8, "white"], (1080, 60), {"image1": (6, 0), "image2": (7, 0)}, size=(270, 150)),
        N(9, "SaveImage", ["zipar_janus_ntp_vs_zipar"], (1380, 60), {"images": (8, 0)}, size=(520, 360)),
        report(10, (800, 560), 4, "Report: next-token prediction"),
        report(11, (800, 700), 5, "Report: ZipAR"),
        note(12, (40, 710), "Same seed, same Janus-Pro: left next-token prediction (window 24 = the grid width, 576 "
             "passes, what the Janus-Pro pack does), right ZipAR window 8 (224 passes).\n\n" + SAMPLER_HELP),
    ]
    return nodes


def emu3_gen_zipar():
    return [
        *chat_loaders("Emu3-Gen-hf", "Emu3-Gen-hf", "a red fox sitting in fresh snow, golden hour", ratio="16:9"),
        sampler(4, (420, 60), 8, cfg=3.0, top_k=2048),
        decode(5, (800, 60), 4),
        N(6, "SaveImage", ["zipar_emu3_gen"], (1080, 60), {"images": (5, 0)}, size=(520, 360)),
        report(7, (420, 420), 4, "Report"),
        note(8, (40, 710), "Emu3-Gen (BAAI/Emu3-Gen-hf, VQ included, in ComfyUI/models/zipar/Emu3-Gen-hf; or the original "
             "BAAI/Emu3-Gen with BAAI/Emu3-VisionTokenizer as the VQ). 720 x 720 pixels of area (image_size 0); at "
             "16:9 a 68 x 120 token grid: window 8 takes 768 passes instead of 8160. An empty negative prompt "
             "uses Emu3's official one.\n\n" + SAMPLER_HELP + "\n\nEmu3's own settings: cfg 3, top_k 2048."),
    ]


LUMINA_NOTE = ("Lumina-mGPT (Alpha-VLLM/Lumina-mGPT-7B-768; -512 / -1024 / -768-Omni work alike) in "
               "ComfyUI/models/zipar/Lumina-mGPT-7B-768/. Its image decoder is Meta's Chameleon VQGAN, which you download "
               "from Meta's Chameleon release yourself (its licence): put vqgan.ckpt and vqgan.yaml into "
               "ComfyUI/models/zipar/chameleon-vqgan/. image_size 0 = the size in the folder name (768 = a 48 x 48 grid); "
               "the aspect ratio picks the nearest shape of Lumina's official list (16:9 at 768 is 1024 x 576).")


def lumina_mgpt_768_zipar():
    return [
        *chat_loaders("Lumina-mGPT-7B-768", "chameleon-vqgan/vqgan.ckpt", "a red fox sitting in fresh snow, golden hour"),
        sampler(4, (420, 60), 16, cfg=4.0, top_k=2000),
        decode(5, (800, 60), 4),
        N(6, "SaveImage", ["zipar_lumina_mgpt"], (1080, 60), {"images": (5, 0)}, size=(420, 440)),
        report(7, (420, 420), 4, "Report"),
        note(8, (40, 710), LUMINA_NOTE + " Window 16 takes 800 passes instead of 2304 (row 1 starts by the window rule, as in ZipAR's own Lumina-mGPT code).\n\n" + SAMPLER_HELP +
             "\n\nLumina-mGPT's own settings: cfg 4, temperature 1, top_k 2000. An empty negative prompt is its "
             "official unconditional branch (no text)."),
    ]


def lumina_mgpt_ntp_vs_zipar():
    return [
        *chat_loaders("Lumina-mGPT-7B-768", "chameleon-vqgan/vqgan.ckpt", "a red fox sitting in fresh snow, golden hour"),
        N(4, "ZipARSampler", [48, 0, "fixed", 4.0, 1.0, 2000, 1.0, 1, True, "auto"], (420, 60),
          {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, "Next-token prediction (window 48)", size=(320, 300)),
        N(5, "ZipARSampler", [16, 0, "fixed", 4.0, 1.0, 2000, 1.0, 1, True, "auto"], (420, 420),
          {"model": (1, 0), "condition": (3, 0), "vq": (2, 0)}, "ZipAR (window 16)", size=(320, 300)),
        decode(6, (800, 60), 4),
        decode(7, (800, 420), 5),
        N(8, "ImageStitch", ["right", True, 8, "white"], (1080, 60), {"image1": (6, 0), "image2": (7, 0)}, size=(270, 150)),
        N(9, "SaveImage", ["zipar_lumina_ntp_vs_zipar"], (1380, 60), {"images": (8, 0)}, size=(520, 360)),
        report(10, (800, 560), 4, "Report: next-token prediction"),
        report(11, (800, 700), 5, "Report: ZipAR"),
        note(12, (40, 710), "Same seed, same Lumina-mGPT: left next-token prediction (window 48 = the grid width, "
             "2304 passes, what Lumina-mGPT's own code does), right ZipAR window 16 (800 passes).\n\n" + LUMINA_NOTE +
             "\n\n" + SAMPLER_HELP),
    ]


WORKFLOWS = {
    "lumina_mgpt_768_zipar": lumina_mgpt_768_zipar,
    "lumina_mgpt_ntp_vs_zipar": lumina_mgpt_ntp_vs_zipar,
    "janus_pro_zipar": janus_pro_zipar,
    "janus_pro_ntp_vs_zipar": janus_pro_ntp_vs_zipar,
    "emu3_gen_zipar": emu3_gen_zipar,
    "demo_zipar": demo_zipar,
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
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}},
        "version": 0.4,
    }


def dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    definitions = all_definitions()
    for name, make in WORKFLOWS.items():
        ui = build_ui(make(), definitions, f"5a1b2c3d-0000-4000-8000-{sum(map(ord, name)):012d}")
        api = ui_to_api(ui, definitions)
        text = dump(ui)
        for folder in ("workflows", "example_workflows"):
            (REPO / folder).mkdir(exist_ok=True)
            (REPO / folder / f"{name}.json").write_text(text, encoding="utf-8")
        (REPO / "workflows" / "api").mkdir(parents=True, exist_ok=True)
        (REPO / "workflows" / "api" / f"{name}.json").write_text(dump(api), encoding="utf-8")
        print(f"wrote {name}: {len(ui['nodes'])} nodes, {len(ui['links'])} links")


if __name__ == "__main__":
    main()
