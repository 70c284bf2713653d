"""ZipAR's ComfyUI nodes: glue only; the work happens in the zipar engine.

Imported by the pack's root ``__init__.py`` as ``<pack>.nodes`` (never as a top-level
``nodes``, which is ComfyUI's own module). Every module here imports its siblings and the
engine relatively (see ``engine.py``), and ComfyUI's modules lazily (see ``host.py``).
"""
from . import host
from .conditions import ZipARClassID, ZipARImageNetClass, ZipARTextEncodeT5, ZipARTextPrompt
from .loaders import ZipARLoadARModel, ZipARLoadVQ
from .sampler import ZipARSampler
from .vq_nodes import ZipARVQDecode, ZipARVQEncode

host.register_model_folders()

NODE_CLASS_MAPPINGS = {
    "ZipARLoadARModel": ZipARLoadARModel,
    "ZipARLoadVQ": ZipARLoadVQ,
    "ZipARImageNetClass": ZipARImageNetClass,
    "ZipARClassID": ZipARClassID,
    "ZipARTextEncodeT5": ZipARTextEncodeT5,
    "ZipARTextPrompt": ZipARTextPrompt,
    "ZipARSampler": ZipARSampler,
    "ZipARVQDecode": ZipARVQDecode,
    "ZipARVQEncode": ZipARVQEncode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ZipARLoadARModel": "ZipAR Load AR Model",
    "ZipARLoadVQ": "ZipAR Load VQ",
    "ZipARImageNetClass": "ZipAR ImageNet Class",
    "ZipARClassID": "ZipAR Class ID",
    "ZipARTextEncodeT5": "ZipAR Text Encode (T5)",
    "ZipARTextPrompt": "ZipAR Text Prompt",
    "ZipARSampler": "ZipAR Sampler",
    "ZipARVQDecode": "ZipAR VQ Decode",
    "ZipARVQEncode": "ZipAR VQ Encode",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
