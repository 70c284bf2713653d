"""A stand-in ComfyUI source tree on disk, for the CI smoke runs of ``bench.in_comfyui`` / ``bench.gpu_suite``.

CI has no ComfyUI (it is not on PyPI), but the GPU suite imports ComfyUI's modules from a tree
it is given. This writes the few modules and names the pack and the benchmark use, behaving as
ComfyUI's do in the ways that matter here: loaded models are listed and detached on unload, and
in the ``NO_VRAM`` state a model on a non-CPU device is streamed (``model_lowvram``, every
castable layer casting per use). The real tree is used by the opt-in test (``COMFYUI_PATH``).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

MODULES = {
    "comfy/__init__.py": "",
    "comfy/options.py": """
        args_parsing = False

        def enable_args_parsing(enable=True):
            global args_parsing
            args_parsing = enable
    """,
    "comfy/patcher_extension.py": """
        class CallbacksMP:
            ON_DETACH = "on_detach_after"
            ON_LOAD = "on_load_after"
    """,
    "comfy/model_patcher.py": """
        from comfy.patcher_extension import CallbacksMP


        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device
                self.model.model_lowvram = False
                self.callbacks = {}

            def add_callback(self, call_type, callback):
                self.callbacks.setdefault(call_type, []).append(callback)

            def load(self, streamed):
                self.model.to(self.load_device)
                self.model.model_lowvram = streamed
                for m in self.model.modules():
                    if hasattr(m, "comfy_cast_weights"):
                        m.comfy_cast_weights = streamed
                for callback in self.callbacks.get(CallbacksMP.ON_LOAD, []):
                    callback(self, self.load_device, 0, False, True)

            def detach(self, unpatch_all=True):
                if unpatch_all:
                    self.model.to(self.offload_device)
                    self.model.model_lowvram = False
                for callback in self.callbacks.get(CallbacksMP.ON_DETACH, []):
                    callback(self, unpatch_all)
                return self.model
    """,
    "comfy/model_management.py": """
        import enum
        import weakref

        import torch


        class VRAMState(enum.Enum):
            DISABLED = 0
            NO_VRAM = 1
            LOW_VRAM = 2
            NORMAL_VRAM = 3


        vram_state = VRAMState.NORMAL_VRAM
        current_loaded_models = []


        class LoadedModel:
            def __init__(self, patcher):
                self.ref = weakref.ref(patcher)

            @property
            def model(self):
                return self.ref()


        def get_torch_device():
            return torch.device("cpu")


        unet_offload_device = intermediate_device = get_torch_device


        def is_device_cpu(device):
            return torch.device(device).type == "cpu"


        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            for m in models:
                held = [entry for entry in current_loaded_models if entry.model is m]
                for entry in held:  # its own clone: off the list, detached in place, loaded again
                    current_loaded_models.remove(entry)
                    m.detach(unpatch_all=False)
                if held:
                    current_loaded_models.insert(0, LoadedModel(m))
                    continue
                streamed = vram_state == VRAMState.NO_VRAM and not is_device_cpu(m.load_device) and not force_full_load
                m.load(streamed)
                current_loaded_models.insert(0, LoadedModel(m))


        def unload_all_models():
            for entry in list(current_loaded_models):
                if entry.model is not None:
                    entry.model.detach()
            current_loaded_models.clear()


        def soft_empty_cache(force=False):
            pass


        def throw_exception_if_processing_interrupted():
            pass
    """,
    "comfy/ops.py": """
        import types

        from torch import nn

        NAMES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "GroupNorm", "LayerNorm")
        disable_weight_init = types.SimpleNamespace(**{
            name: type(name, (getattr(nn, name),), {"comfy_cast_weights": False, "weight_function": [],
                                                    "bias_function": [], "__module__": "comfy.ops"})
            for name in NAMES})
    """,
    "comfy/utils.py": """
        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                pass
    """,
    "folder_paths.py": """
        import os

        models_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
        folder_names_and_paths = {}


        def add_model_folder_path(name, path, is_default=False):
            paths, extensions = folder_names_and_paths.setdefault(name, ([], set()))
            if path not in paths:
                paths.insert(0, path) if is_default else paths.append(path)


        def get_folder_paths(name):
            return list(folder_names_and_paths.get(name, ([], set()))[0])


        def get_filename_list(name):
            paths, extensions = folder_names_and_paths.get(name, ([], set()))
            out = []
            for root in paths:
                if os.path.isdir(root):
                    out += sorted(f for f in os.listdir(root) if not extensions or os.path.splitext(f)[1] in extensions)
            return out


        def get_full_path(name, filename):
            for root in get_folder_paths(name):
                path = os.path.join(root, filename)
                if os.path.exists(path):
                    return path
            return None
    """,
    "comfyui_version.py": '__version__ = "0.0.0-stand-in"\n',
}


def write_fake_comfyui(root: Path) -> Path:
    for name, text in MODULES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root
