"""Run with ComfyUI's Python: the pack's loaders hand ComfyUI's real ModelPatcher a model built of
comfy.ops layers, and a model ComfyUI streams (every castable layer left in system memory, as in
low-VRAM mode) draws the same tokens. Prints one JSON line; the opt-in host test reads it.

    python comfy_patcher_check.py COMFYUI_PATH PACK_PATH MODELS_DIR
"""
from __future__ import annotations

import importlib.util
import json
import sys

comfy_root, pack, models = sys.argv[1:4]
sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI's modules read their flags at import
sys.path.insert(0, comfy_root)

import torch  # noqa: E402

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()  # as main.py does, so --cpu is read
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.ops  # noqa: E402
import folder_paths  # noqa: E402

folder_paths.add_model_folder_path("zipar", f"{models}/zipar")
spec = importlib.util.spec_from_file_location("zipar_pack", f"{pack}/__init__.py", submodule_search_locations=[pack])
module = importlib.util.module_from_spec(spec)
sys.modules["zipar_pack"] = module
spec.loader.exec_module(module)
N = module.NODE_CLASS_MAPPINGS
api = sys.modules["zipar_pack.zipar.api"]
SamplingOptions = sys.modules["zipar_pack.zipar.core.sampling"].SamplingOptions
static_step = sys.modules["zipar_pack.zipar.core.static_step"]


def run(name, *args, **kwargs):
    return getattr(N[name](), N[name].FUNCTION)(*args, **kwargs)


(model,) = run("ZipARLoadARModel", "c2i_L_384.pt", 64, "auto", "default")
(vq,) = run("ZipARLoadVQ", "vq_ds16_c2i.pt", "fp32", "default")
(cond,) = run("ZipARImageNetClass", "207: golden retriever")
settings = dict(window=2, seed=5, cfg=4.0, temperature=0.0, top_k=0, top_p=1.0, batch_size=2, preview=False)
tokens = run("ZipARSampler", model, cond, **settings, vq=vq)[0]
images = run("ZipARVQDecode", vq, tokens)[0]
patcher = model.patcher
modules = [m for part in patcher.model.parts for m in part.modules()]
loaded = [type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None]

mm.unload_all_models()  # "Unload models": ComfyUI detaches ours, we drop what we keep
slot_after_unload = module.nodes.cache.AR_MODELS.value

kept = static_step.state_of(model.model)  # as compiled steps would be
patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)  # low-VRAM: every layer streams
steps_dropped_on_load = static_step._STATE.get(model.model) is not kept
castable = [m for m in modules if hasattr(m, "comfy_cast_weights")]
streaming = [m for m in castable if m.comfy_cast_weights]
grid = tuple(tokens.tokens.shape[1:])
streamed = api.generate(model.model, cond, grid, 2, SamplingOptions(cfg=4.0, greedy=True), seed=5, batch=2).tokens
low_vram = bool(patcher.model.model_lowvram)
patcher.unpatch_model(torch.device("cpu"))

# the same with 8-bit weights (our StoredLinear layers stream too)
(fp8,) = run("ZipARLoadARModel", "c2i_L_384.pt", 64, "auto", "default", "fp8_e4m3fn")
fp8_tokens = run("ZipARSampler", fp8, cond, **settings, vq=vq)[0].tokens
fp8.patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1)
fp8_streamed = api.generate(fp8.model, cond, grid, 2, SamplingOptions(cfg=4.0, greedy=True), seed=5, batch=2).tokens
fp8_streaming = sum(1 for part in fp8.patcher.model.parts for m in part.modules() if getattr(m, "comfy_cast_weights", False))
fp8.patcher.unpatch_model(torch.device("cpu"))

print(json.dumps({
    "patcher": type(patcher).__module__ + "." + type(patcher).__qualname__,
    "vq_patcher": type(vq.patcher).__qualname__,
    "comfy_linears": sum(type(m) is comfy.ops.disable_weight_init.Linear for m in modules),
    "plain_linears": sum(type(m) is torch.nn.Linear for m in modules),
    "leaves_with_weights": sum(1 for m in modules if any(True for _ in m.parameters(recurse=False))),
    "castable": len(castable),
    "loaded_by_comfy": loaded,
    "slot_after_unload": slot_after_unload is not None,
    "steps_dropped_on_load": steps_dropped_on_load,
    "low_vram": low_vram,
    "streaming": len(streaming),
    "same_tokens_streamed": bool(torch.equal(streamed, tokens.tokens)),
    "image_shape": list(images.shape),
    "fp8_streaming": fp8_streaming,
    "fp8_same_tokens_streamed": bool(torch.equal(fp8_streamed, fp8_tokens)),
}))
