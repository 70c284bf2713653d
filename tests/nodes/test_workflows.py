"""The shipped workflows: they parse, name only known node types, connect matching types,
keep widget values in the declared ranges, and the UI and API copies agree."""
from __future__ import annotations

import itertools
import sys

import pytest

import nodes
from helpers.workflow_tools import (
    FRONTEND_ONLY, FRONTEND_WIDGETS, REPO, SEED_CONTROLS, WORKFLOW_NAMES, all_definitions, check_widget_value, core_definitions,
    input_specs, load_json, map_widget_values, socket_inputs, types_match, ui_to_api, widget_inputs,
)

sys.path.insert(0, str(REPO / "tools"))
from make_workflows import DOWNLOADS as FILE_DOWNLOADS, FOLDER_DOWNLOADS, SHIPPED  # noqa: E402

# Core node types the workflows may use; core_nodes.json holds their /object_info entries
# from the real host (ComfyUI a125cd84), which tests/nodes/test_comfy_host.py re-checks live.
CORE_TYPES = {"SaveImage", "PreviewImage", "PreviewAny", "ImageStitch", "ImageBatch"}
MODEL_FILES = {"c2i_L_384.pt", "vq_ds16_c2i.pt", "t2i_XL_stage2_512.pt", "vq_ds16_t2i.pt",
               "zipar-demo/demo_c2i_64.safetensors", "zipar-demo/demo_vq.safetensors",
               "Janus-Pro/Janus-Pro-1B", "Emu3-Gen-hf", "Lumina-mGPT-7B-768", "chameleon-vqgan/vqgan.ckpt",
               "Lumina-mGPT-2.0", "movqgan_270M.ckpt", "SimpleAR-1.5B-RL", "Cosmos-1.0-Tokenizer-DV8x16x16"}
TEXT_ENCODERS = {"flan-t5-xl"}
DYNAMIC_COMBOS = {("ZipARLoadARModel", "ar_model"): MODEL_FILES, ("ZipARLoadVQ", "vq_model"): MODEL_FILES,
                  ("ZipARTextEncodeT5", "text_encoder"): TEXT_ENCODERS}


@pytest.fixture(scope="module")
def definitions():
    return all_definitions()


def ui_files():
    return sorted((REPO / "workflows").glob("*.json"))


def api_files():
    return sorted((REPO / "workflows" / "api").glob("*.json"))


def test_the_shipped_set():
    assert [p.stem for p in ui_files()] == sorted(WORKFLOW_NAMES)
    assert [p.stem for p in api_files()] == sorted(WORKFLOW_NAMES)
    # ComfyUI's template browser scans example_workflows/, workflows/ ... and would list a second copy
    other = ("example_workflows", "example", "examples", "workflow")
    assert not any((REPO / name).exists() for name in other), "ship the templates once, in workflows/"
    from PIL import Image

    for name in WORKFLOW_NAMES:  # each template card has its thumbnail beside it
        with Image.open(REPO / "workflows" / f"{name}.jpg") as thumb:
            assert thumb.format == "JPEG" and thumb.size == (512, 320)


def boxes(ui: dict) -> dict[int, tuple]:
    """(x0, y0, x1, y1) of every node on the canvas: its title bar, and a sampler's live preview
    (which grows the node from 350 to 574 px in ComfyUI's page; tests/nodes/test_comfy_host.py measures it)."""
    out = {}
    for n in ui["nodes"]:
        (x, y), (w, h) = n["pos"], n["size"]
        out[n["id"]] = (x, y - 30, x + w, y + h + (240 if n["type"] == "ZipARSampler" else 0))
    return out


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("path", ui_files(), ids=lambda p: p.stem)
def test_layout_leaves_room_for_previews_and_reads_left_to_right(path):
    ui = load_json(path)
    box = boxes(ui)
    by_id = {n["id"]: n for n in ui["nodes"]}
    for a, b in itertools.combinations(box, 2):
        assert not overlaps(box[a], box[b]), f"{by_id[a]['title']} overlaps {by_id[b]['title']}"
    groups = {g["title"]: g["bounding"] for g in ui["groups"]}
    assert {"Models", "ZipAR"} < set(groups) and len(groups) == 3
    assert ("Compare" in groups) == any(n["type"] == "ImageStitch" for n in ui["nodes"])
    rects = {t: (x, y, x + w, y + h) for t, (x, y, w, h) in groups.items()}
    for a, b in itertools.combinations(rects, 2):
        assert not overlaps(rects[a], rects[b]), f"groups {a} and {b} overlap"
    for node_id, (x0, y0, x1, y1) in box.items():  # every node sits inside exactly one group
        inside = [t for t, (gx0, gy0, gx1, gy1) in rects.items() if gx0 <= x0 and gy0 <= y0 and x1 <= gx1 and y1 <= gy1]
        assert len(inside) == 1, f"{by_id[node_id]['title']} is in {inside}"
    assert rects["Models"][0] < rects["ZipAR"][0]  # loaders on the left, then the samplers


@pytest.mark.parametrize("path", ui_files(), ids=lambda p: p.stem)
def test_every_model_says_where_to_download_it(path):
    """Files carry the frontend's missing-models entry; folders (which that dialog cannot match) and
    Meta's VQGAN (licence-gated) have their download location in the workflow's note."""
    ui = load_json(path)
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    for node in ui["nodes"]:
        if node["type"] not in ("ZipARLoadARModel", "ZipARLoadVQ", "ZipARTextEncodeT5"):
            continue
        name = node["widgets_values"][0 if node["type"] != "ZipARTextEncodeT5" else 1]
        entries = node["properties"].get("models", [])
        if name in SHIPPED:
            assert not entries
        elif name in FILE_DOWNLOADS:
            assert entries == [{"name": name, "url": FILE_DOWNLOADS[name], "directory": "zipar"}]
            assert entries[0]["url"].startswith("https://huggingface.co/") and entries[0]["url"].endswith("/" + name)
        else:
            assert not entries and FOLDER_DOWNLOADS[name] in note, f"{name}: no download location in the note"


def test_core_types_are_recorded():
    assert CORE_TYPES == set(core_definitions())
    assert not CORE_TYPES & set(nodes.NODE_CLASS_MAPPINGS)  # a pack node named like a core node is dropped


def check_value(node_type, name, spec, value):
    if (node_type, name) in DYNAMIC_COMBOS:  # file lists depend on the user's models folder
        return None if value in DYNAMIC_COMBOS[node_type, name] else f"{name}: unexpected file {value!r}"
    return check_widget_value(name, spec, value)


@pytest.mark.parametrize("path", ui_files(), ids=lambda p: p.stem)
def test_ui_workflow(path, definitions):
    ui = load_json(path)
    assert isinstance(ui["nodes"], list) and isinstance(ui["links"], list)
    assert ui["last_node_id"] >= max(n["id"] for n in ui["nodes"])
    assert ui["last_link_id"] >= max((link[0] for link in ui["links"]), default=0)
    by_id = {n["id"]: n for n in ui["nodes"]}
    assert len(by_id) == len(ui["nodes"])
    known = set(definitions) | FRONTEND_ONLY
    for node in ui["nodes"]:
        assert node["type"] in known, f"unknown node type {node['type']}"
        assert node.get("mode", 0) == 0
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1 and all(word in notes[0]["widgets_values"][0] for word in ("window", "cfg", "seed"))

    for link_id, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        source, target = by_id[src], by_id[dst]
        out_type = definitions[source["type"]]["output"][src_slot]
        assert source["outputs"][src_slot]["type"] == out_type == link_type, f"link {link_id}"
        assert link_id in source["outputs"][src_slot]["links"]
        slot = target["inputs"][dst_slot]
        assert slot["link"] == link_id
        declared = dict((name, spec) for name, spec, _ in input_specs(definitions[target["type"]]))[slot["name"]]
        assert slot["type"] == declared[0] and types_match(link_type, declared[0]), f"link {link_id} into {slot['name']}"

    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        definition = definitions[node["type"]]
        values = map_widget_values(definition, node.get("widgets_values", []))
        for name, spec in widget_inputs(definition):
            assert check_value(node["type"], name, spec, values[name]) is None, (node["id"], check_value(node["type"], name, spec, values[name]))
            if f"{name}.control" in values:
                assert values[f"{name}.control"] in SEED_CONTROLS
        linked = {s["name"] for s in node.get("inputs", []) if s.get("link") is not None}
        for name, _spec, required in socket_inputs(definition):
            assert not required or name in linked, f"node {node['id']} ({node['type']}): required input {name} is not connected"
        for out in node.get("outputs", []):
            for link_id in out["links"]:
                assert any(link[0] == link_id for link in ui["links"])


@pytest.mark.parametrize("path", api_files(), ids=lambda p: p.stem)
def test_api_workflow(path, definitions):
    prompt = load_json(path)
    assert all(isinstance(v, dict) and "class_type" in v for v in prompt.values())  # the frontend's isApiJson
    outputs = 0
    for node_id, node in prompt.items():
        definition = definitions[node["class_type"]]
        outputs += not definition["output"]  # SaveImage, PreviewAny: the graph has outputs to run
        specs = {name: spec for name, spec, _ in input_specs(definition)}
        for name, spec, required in input_specs(definition):
            assert not required or name in node["inputs"], f"{node_id}: {name} missing"
        for name, value in node["inputs"].items():
            if name in FRONTEND_WIDGETS.get(node["class_type"], {}):
                continue  # added by the frontend, ignored by the server
            spec = specs[name]
            if isinstance(value, list):
                src, slot = value
                out_type = definitions[prompt[src]["class_type"]]["output"][slot]
                assert not isinstance(spec[0], list) and types_match(out_type, spec[0]), f"{node_id}.{name}"
            else:
                assert check_value(node["class_type"], name, spec, value) is None, (node_id, name, value)
    assert outputs >= 1


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_ui_and_api_copies_agree(name, definitions):
    ui = load_json(REPO / "workflows" / f"{name}.json")
    api = load_json(REPO / "workflows" / "api" / f"{name}.json")
    converted = ui_to_api(ui, definitions)
    assert {k: (v["class_type"], v["inputs"]) for k, v in converted.items()} == \
           {k: (v["class_type"], v["inputs"]) for k, v in api.items()}


def test_what_each_workflow_promises():
    def samplers(name):
        prompt = load_json(REPO / "workflows" / "api" / f"{name}.json")
        return prompt, [n for n in prompt.values() if n["class_type"] == "ZipARSampler"]

    prompt, (one,) = samplers("llamagen_c2i_zipar")
    files = {n["inputs"].get("ar_model") or n["inputs"].get("vq_model") for n in prompt.values() if "Load" in n["class_type"]}
    assert files == {"c2i_L_384.pt", "vq_ds16_c2i.pt"} and one["inputs"]["window"] < 24
    _, pair = samplers("llamagen_c2i_ntp_vs_zipar")
    assert sorted(s["inputs"]["window"] for s in pair) == [8, 24] and len({s["inputs"]["seed"] for s in pair}) == 1
    _, sweep = samplers("llamagen_c2i_window_sweep")
    assert len({s["inputs"]["window"] for s in sweep}) >= 3 and len({s["inputs"]["seed"] for s in sweep}) == 1
    prompt, _ = samplers("llamagen_t2i_zipar")
    types = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert types["ZipARLoadARModel"]["ar_model"] == "t2i_XL_stage2_512.pt"
    assert types["ZipARLoadVQ"]["vq_model"] == "vq_ds16_t2i.pt"
    assert types["ZipARTextEncodeT5"]["text_encoder"] == "flan-t5-xl"
    prompt, demo = samplers("demo_zipar")  # the shipped demo files, nothing to download
    types = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert types["ZipARLoadARModel"]["ar_model"] == "zipar-demo/demo_c2i_64.safetensors"
    assert types["ZipARLoadVQ"]["vq_model"] == "zipar-demo/demo_vq.safetensors"
    assert 0 <= types["ZipARClassID"]["class_id"] <= 9
    assert sorted(s["inputs"]["window"] for s in demo) == [8, 16] and len({s["inputs"]["seed"] for s in demo}) == 1
    prompt, (janus,) = samplers("janus_pro_zipar")
    types = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert types["ZipARLoadARModel"]["ar_model"] == types["ZipARLoadVQ"]["vq_model"] == "Janus-Pro/Janus-Pro-1B"
    assert janus["inputs"]["window"] < 24 and janus["inputs"]["cfg"] == 5.0 and types["ZipARTextPrompt"]["aspect_ratio"] == "1:1"
    _, pair = samplers("janus_pro_ntp_vs_zipar")
    assert sorted(s["inputs"]["window"] for s in pair) == [8, 24] and len({s["inputs"]["seed"] for s in pair}) == 1
    prompt, (emu3,) = samplers("emu3_gen_zipar")
    types = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert types["ZipARLoadARModel"]["ar_model"] == "Emu3-Gen-hf" and emu3["inputs"]["top_k"] == 2048
    assert emu3["inputs"]["cfg"] == 3.0
    prompt, (lumina,) = samplers("lumina_mgpt_768_zipar")
    types = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert types["ZipARLoadARModel"]["ar_model"] == "Lumina-mGPT-7B-768" and types["ZipARLoadARModel"]["image_size"] == 0
    assert types["ZipARLoadVQ"]["vq_model"] == "chameleon-vqgan/vqgan.ckpt"
    assert (lumina["inputs"]["window"], lumina["inputs"]["cfg"], lumina["inputs"]["top_k"]) == (16, 4.0, 2000)
    _, pair = samplers("lumina_mgpt_ntp_vs_zipar")
    assert sorted(s["inputs"]["window"] for s in pair) == [16, 48] and len({s["inputs"]["seed"] for s in pair}) == 1
    for name in WORKFLOW_NAMES:  # seeds fixed in the UI files, so a re-run reproduces the images
        ui = load_json(REPO / "workflows" / f"{name}.json")
        for node in ui["nodes"]:
            if node["type"] == "ZipARSampler":
                assert node["widgets_values"][2] == "fixed"
