"""ComfyUI-ZipAR: ZipAR parallel decoding for autoregressive image models, as ComfyUI nodes.

ComfyUI imports this file as a package from custom_nodes/<any folder name>. The nodes live
in the ``nodes`` subpackage, imported relatively here: ComfyUI has a top-level module of
its own called ``nodes``, so ours must never be imported under that name inside ComfyUI.
The engine (``zipar/``) is plain Python + PyTorch with no ComfyUI import.
"""
if __package__:  # ComfyUI (and any importer) loads the checkout folder as a package
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # pytest importing this file on its own, from a checkout whose folder name is no identifier
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
