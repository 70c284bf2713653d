"""Reading and checking ComfyUI workflows against node definitions, without ComfyUI.

Node definitions come from the pack's own classes (INPUT_TYPES / RETURN_TYPES) and, for the
few core nodes the workflows use, from ``core_nodes.json`` (a copy of the real host's
/object_info entries). UI-format widget values are matched to widget inputs in definition
order, with the extra "control after generate" value after any INT that asks for one.
"""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE_NODES_FILE = Path(__file__).resolve().parent / "core_nodes.json"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # virtual nodes: UI format only, never sent to /prompt
# Widgets the frontend adds to core nodes by itself (not in /object_info), with what its
# graphToPrompt sends for them: Preview Any's text box.
FRONTEND_WIDGETS = {"PreviewAny": {"preview": ""}}
WORKFLOW_NAMES = ["demo_zipar", "demo_speculative", "janus_pro_zipar", "janus_pro_ntp_vs_zipar", "emu3_gen_zipar", "lumina_mgpt_768_zipar",
                  "lumina_mgpt_ntp_vs_zipar", "lumina_mgpt2_zipar", "simplear_1024_zipar", "llamagen_c2i_zipar", "llamagen_c2i_ntp_vs_zipar", "llamagen_c2i_window_sweep", "llamagen_t2i_zipar"]


def _plain(value):
    """Tuples -> lists, recursively (object_info is JSON; INPUT_TYPES uses tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def core_definitions() -> dict:
    data = json.loads(CORE_NODES_FILE.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def pack_definitions(mappings: dict) -> dict:
    """object_info-like entries for the pack's node classes."""
    defs = {}
    for name, cls in mappings.items():
        inputs = _plain(cls.INPUT_TYPES())
        defs[name] = {
            "input": inputs,
            "input_order": {section: list(inputs[section]) for section in ("required", "optional") if section in inputs},
            "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        }
    return defs


def all_definitions() -> dict:
    import nodes

    return {**core_definitions(), **pack_definitions(nodes.NODE_CLASS_MAPPINGS)}


def input_specs(definition: dict) -> list[tuple[str, list, bool]]:
    """[(name, spec, required)] in definition order (required first, then optional)."""
    out = []
    for section in ("required", "optional"):
        specs = definition["input"].get(section, {})
        order = definition.get("input_order", {}).get(section, list(specs))
        out += [(name, specs[name], section == "required") for name in order]
    return out


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def widget_inputs(definition: dict) -> list[tuple[str, list]]:
    return [(name, spec) for name, spec, _ in input_specs(definition) if is_widget(spec)]


def socket_inputs(definition: dict) -> list[tuple[str, list, bool]]:
    return [(name, spec, req) for name, spec, req in input_specs(definition) if not is_widget(spec)]


def has_seed_control(spec) -> bool:
    return spec[0] == "INT" and len(spec) > 1 and bool(spec[1].get("control_after_generate"))


def map_widget_values(definition: dict, values: list) -> dict:
    """UI widgets_values -> {input name: value}; a seed's control value is kept as '<name>.control'."""
    out, i = {}, 0
    for name, spec in widget_inputs(definition):
        if i >= len(values):
            raise ValueError(f"widgets_values too short: no value for {name!r}")
        out[name] = values[i]
        i += 1
        if has_seed_control(spec):
            if i >= len(values):
                raise ValueError(f"widgets_values too short: no control_after_generate value after {name!r}")
            out[f"{name}.control"] = values[i]
            i += 1
    if i != len(values):
        raise ValueError(f"{len(values) - i} widget value(s) left over: {values[i:]}")
    return out


def check_widget_value(name: str, spec, value) -> str | None:
    """A message when ``value`` breaks the input's declared type or range, else None."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return None if value in kind else f"{name}: {value!r} is not one of the choices"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}: {value!r} is not an integer"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name}: {value!r} is not a number"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}: {value!r} is not a boolean"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}: {value!r} is not a string"
    if kind in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            return f"{name}: {value} is below the minimum {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{name}: {value} is above the maximum {opts['max']}"
    return None


def types_match(output_type: str, input_type) -> bool:
    if isinstance(input_type, list):
        return False  # a combo widget cannot take a link in our workflows
    return input_type == "*" or output_type == "*" or output_type == input_type


def ui_to_api(ui: dict, definitions: dict) -> dict:
    """What the frontend's graphToPrompt sends for a plain graph (no groups, reroutes or muted nodes)."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node["type"] in FRONTEND_ONLY:
            continue
        definition = definitions[node["type"]]
        inputs = {}
        widgets = map_widget_values(definition, node.get("widgets_values", []))
        for name, _spec in widget_inputs(definition):
            inputs[name] = widgets[name]
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and "widget" not in slot:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        for name, value in FRONTEND_WIDGETS.get(node["type"], {}).items():
            inputs[name] = value
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
