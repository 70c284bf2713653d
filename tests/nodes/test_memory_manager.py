"""The nodes under a stand-in for ComfyUI's memory manager: models are handed over as patchers
built from comfy.ops layers, loading is requested before work with the bytes the work takes, and
letting go of a model releases everything we keep for it (so freeing ComfyUI's node cache frees it)."""
from __future__ import annotations

import gc
import sys
import types
import weakref

import pytest
import torch
from torch import nn

import nodes
from nodes import cache, host, memory
from nodes.datatypes import VQHandle
from helpers.node_fixtures import write_tiny_models
from zipar import api
from zipar.core import static_step
from zipar.core.plan import build_plan
from zipar.nets.castable import CastsWeights

N = nodes.NODE_CLASS_MAPPINGS
SIZE = 64
ON_DETACH, ON_LOAD = "on_detach_after", "on_load_after"  # the names ComfyUI's CallbacksMP gives them


def run(name, *args, **kwargs):
    return getattr(N[name](), N[name].FUNCTION)(*args, **kwargs)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_tiny_models(tmp_path_factory.mktemp("managed-models"))
    host.set_models_dir(root)
    yield root
    host.set_models_dir(None)
    cache.clear_all()


@pytest.fixture
def manager(monkeypatch):
    """comfy.model_management / model_patcher / ops / utils stand-ins that record what the nodes ask."""
    state = types.SimpleNamespace(events=[], move_weights=False, in_loop=lambda: None)

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
            self.callbacks: dict[str, list] = {}

        def add_callback(self, call_type, callback):
            self.callbacks.setdefault(call_type, []).append(callback)

        def detach(self, unpatch_all=True):  # what ComfyUI does when it unloads or offloads a model
            if unpatch_all:
                self.model.to(self.offload_device)
            for callback in self.callbacks.get(ON_DETACH, []):
                callback(self, unpatch_all)
            return self.model

    class LoadedModel:  # ComfyUI's entry in current_loaded_models: the patcher, held weakly
        def __init__(self, patcher):
            self.ref = weakref.ref(patcher)

        @property
        def model(self):
            return self.ref()

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        state.events.append(("load", list(models), memory_required, force_full_load))
        for m in models:
            # as ComfyUI does: a model it holds already counts as its own clone, so it is taken off the
            # list and detached without moving its weights (unpatch_all=False), then loaded again in place
            for entry in [e for e in mm.current_loaded_models if e.model is m]:
                mm.current_loaded_models.remove(entry)
                m.detach(unpatch_all=False)
            if state.move_weights:  # as when ComfyUI brings an offloaded or streamed model onto the card
                for callback in m.callbacks.get(ON_LOAD, []):
                    callback(m, m.load_device, 0, False, True)
            mm.current_loaded_models.append(LoadedModel(m))

    def unload_all_models():  # as free_memory: detach each listed model, pop them after the loop
        for entry in list(mm.current_loaded_models):
            if entry.model is not None:
                entry.model.detach()
            state.in_loop()  # e.g. an automatic garbage collection inside ComfyUI's loop
        mm.current_loaded_models.clear()

    class ProgressBar:
        def __init__(self, total, node_id=None):
            pass

        def update_absolute(self, value, total=None, preview=None):
            state.events.append(("pass", value))

    mm = types.ModuleType("comfy.model_management")
    mm.load_models_gpu, mm.unload_all_models = load_models_gpu, unload_all_models
    mm.current_loaded_models = []
    mm.get_torch_device = mm.unet_offload_device = mm.intermediate_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda *a, **k: None
    mm.throw_exception_if_processing_interrupted = lambda: None
    mp = types.ModuleType("comfy.model_patcher")
    mp.ModelPatcher = ModelPatcher
    mp.CallbacksMP = types.SimpleNamespace(ON_DETACH=ON_DETACH, ON_LOAD=ON_LOAD)
    ops = types.ModuleType("comfy.ops")
    ops.disable_weight_init = types.SimpleNamespace(**{
        name: type(name, (getattr(nn, name),), {"comfy_cast_weights": False, "weight_function": [],
                                                "bias_function": [], "__module__": "comfy.ops"})
        for name in set(memory.COMFY_OPS.values())})
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    for name, module in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.model_patcher", mp),
                         ("comfy.ops", ops), ("comfy.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    host.forget_modules()
    cache.clear_all()
    state.mm, state.ops = mm, ops
    yield state
    cache.clear_all()
    host.forget_modules()


def load_c2i():
    (model,) = run("ZipARLoadARModel", "c2i_L_384.pt", SIZE, "auto", "default")
    (vq,) = run("ZipARLoadVQ", "vq_ds16_c2i.pt", "fp32", "default")
    (cond,) = run("ZipARImageNetClass", "207: golden retriever")
    return model, vq, cond


def sample(model, cond, vq, **overrides):
    settings = dict(window=2, seed=3, cfg=4.0, temperature=1.0, top_k=0, top_p=1.0, batch_size=2, preview=False)
    return run("ZipARSampler", model, cond, **{**settings, **overrides}, vq=vq)


def test_loaders_hand_comfyui_patchers_of_comfy_ops_layers(models_dir, manager):
    model, vq, _ = load_c2i()
    assert isinstance(vq, VQHandle)
    for patcher, networks in ((model.patcher, model.model.networks()), (vq.patcher, [vq.vq])):
        assert isinstance(patcher.model, memory.Held)
        assert list(patcher.model.parts) == networks  # the engine's own modules, not copies
        assert patcher.load_device == patcher.offload_device == torch.device("cpu")
        modules = [m for net in networks for m in net.modules()]
        leaves = [m for m in modules if any(True for _ in m.parameters(recurse=False))]
        assert leaves and all(hasattr(m, "comfy_cast_weights") for m in leaves)  # every weight can stream
        assert not any(type(m) in memory.COMFY_OPS for m in modules)  # no plain torch layer is left
        assert any(type(m).__module__ == "comfy.ops" for m in modules)
        assert any(isinstance(m, CastsWeights) for m in modules) == (patcher is model.patcher)  # our norms


def test_sampler_asks_for_the_weights_and_the_cache_bytes_before_the_first_pass(models_dir, manager):
    model, vq, cond = load_c2i()
    manager.events.clear()
    tokens = sample(model, cond, vq)[0]
    kind, patchers, required, full = manager.events[0]
    assert kind == "load" and patchers == [model.patcher] and not full
    grid = tuple(tokens.tokens.shape[1:])
    assert required == api.request_bytes(model.model, 2, grid, guidance=True) > 0  # batch 2, with CFG
    assert [e[0] for e in manager.events[1:]] == ["pass"] * (len(manager.events) - 1)

    manager.events.clear()
    run("ZipARVQDecode", vq, tokens)
    kind, patchers, required, full = manager.events[0]
    assert kind == "load" and patchers == [vq.patcher] and full
    assert required == api.decode_bytes(vq.vq, 2, grid) > 0


def test_letting_go_releases_caches_and_a_rerun_reloads_the_same_image(models_dir, manager):
    model, vq, cond = load_c2i()
    first = sample(model, cond, vq)[0].tokens
    run("ZipARVQDecode", vq, sample(model, cond, vq)[0])  # ComfyUI only unloads what it loaded
    static_step.state_of(model.model)  # as a compiled run would have left
    assert model.model in static_step._STATE and build_plan.cache_info().currsize > 0
    loads = cache.AR_MODELS.loads
    kept_in_loop = []
    manager.in_loop = lambda: kept_in_loop.append(cache.release_let_go() or len(cache._let_go))
    manager.mm.unload_all_models()  # "Unload models" / POST /free
    assert cache.AR_MODELS.value is None and cache.VQ_MODELS.value is None
    # nothing is freed while ComfyUI still lists it (its loop would see its list change under it) ...
    assert kept_in_loop and all(kept_in_loop)
    cache.release_let_go()  # ... only afterwards (after its garbage collection, or when a node runs)
    assert not cache._let_go
    assert model.model not in static_step._STATE and build_plan.cache_info().currsize == 0
    # the node cache still holds the old handle: it samples again without reading the disk ...
    assert torch.equal(sample(model, cond, vq)[0].tokens, first) and cache.AR_MODELS.loads == loads
    # ... and once ComfyUI drops its node outputs too, nothing keeps the model alive (no cycles:
    # plain reference counting frees it, without waiting for a garbage collection)
    family, networks = weakref.ref(model.model), weakref.ref(model.model.networks()[0])
    engine_vq = weakref.ref(vq.vq)
    gc.disable()
    try:
        del model, vq
        manager.events.clear()  # this test's own record of the patchers
        assert family() is None and networks() is None and engine_vq() is None
    finally:
        gc.enable()
    model, vq, cond = load_c2i()  # the next run reads it again
    assert cache.AR_MODELS.loads == loads + 1
    assert torch.equal(sample(model, cond, vq)[0].tokens, first)


def test_weights_moved_onto_the_device_drop_the_compiled_steps(models_dir, manager):
    model, vq, cond = load_c2i()
    sample(model, cond, vq)
    kept = static_step.state_of(model.model)  # steps captured with the weights where they are now
    loads = cache.AR_MODELS.loads
    # ComfyUI had it loaded already: it detaches and reloads it in place (unpatch_all=False), nothing
    # moved, so the steps, the plans and the loaded-model slot stay (they were rebuilt on every run before)
    sample(model, cond, vq)
    assert static_step._STATE.get(model.model) is kept and build_plan.cache_info().currsize > 0
    assert cache.AR_MODELS.value is not None and cache.AR_MODELS.loads == loads
    manager.move_weights = True
    sample(model, cond, vq)  # reloaded after an offload: the steps saw the old addresses
    assert static_step._STATE.get(model.model) is not kept and cache.AR_MODELS.value is not None


def test_the_text_encoder_is_managed_too(models_dir, manager):
    pytest.importorskip("transformers")
    manager.events.clear()
    (cond,) = run("ZipARTextEncodeT5", "a red fox", "flan-t5-xl", "auto", "default")
    kind, patchers, _, full = manager.events[0]
    encoder = cache.TEXT_ENCODERS.value
    assert kind == "load" and patchers == [encoder.patcher] and full  # whole: T5's norms read their weights
    assert list(encoder.patcher.model.parts) == [encoder.model.model] and cond.caption_features is not None
    manager.mm.unload_all_models()
    assert cache.TEXT_ENCODERS.value is None


def test_streamed_models_run_eager_under_auto(models_dir, manager, monkeypatch):
    model, vq, cond = load_c2i()
    model.patcher.model.model_lowvram = True  # ComfyUI left some layers in system memory
    seen = []
    real = api.generate
    # record the choice, then run eager (a CPU compile would only cost the suite time)
    monkeypatch.setattr(api, "generate", lambda *a, **k: seen.append(k["compile"]) or real(*a, **{**k, "compile": "off"}))
    sample(model, cond, vq, compile="auto")
    sample(model, cond, vq, compile="on")
    assert seen == ["off", "on"]  # auto steps aside; an explicit choice is kept


def test_outside_comfyui_nothing_is_managed(models_dir):
    host.forget_modules()
    model, vq, cond = load_c2i()
    assert model.patcher is None and vq.patcher is None
    assert all(type(m) is nn.Linear for m in model.model.networks()[0].modules() if isinstance(m, nn.Linear))
    memory.load([None], 10**12)  # a no-op, not an error
