"""Recognising what a checkpoint is from its keys, so a wrong file gets a useful message."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ZipARError
from ..nets.llamagen_gpt import is_gpt_state_dict

FOLDER_HINT = ("ZipAR reads Janus-Pro folders (deepseek-community/Janus-Pro-1B/-7B or deepseek-ai/Janus-Pro-1B/-7B), "
               "Emu3-Gen folders (BAAI/Emu3-Gen-hf or BAAI/Emu3-Gen), Emu3 VQ folders (BAAI/Emu3-VisionTokenizer), "
               "Lumina-mGPT folders (Alpha-VLLM/Lumina-mGPT-7B-*) and Meta's Chameleon VQGAN (vqgan.ckpt + vqgan.yaml)")
LUMINA_VQ_HINT = ("Lumina-mGPT decodes with Meta's Chameleon VQGAN, which its folder does not contain: download "
                  "vqgan.ckpt and vqgan.yaml from Meta's Chameleon release (tokenizer/ folder), put both into one "
                  "folder (e.g. ComfyUI/models/zipar/chameleon-vqgan/) and pick vqgan.ckpt (or that folder) as the VQ")


def checkpoint_kind(sd: dict[str, torch.Tensor]) -> str:
    """'llamagen-c2i', 'llamagen-t2i', 'llamagen-vq' or 'unknown'."""
    if is_gpt_state_dict(sd):
        return "llamagen-c2i" if "cls_embedding.embedding_table.weight" in sd else "llamagen-t2i"
    if "quantize.embedding.weight" in sd and "decoder.conv_in.weight" in sd:
        return "llamagen-vq"
    return "unknown"


def folder_family(config: dict) -> str:
    """'janus-pro', 'emu3' (language model, maybe with its VQ), 'emu3-vq' or 'lumina-mgpt' from a folder's config.json."""
    from . import emu3, janus, lumina

    if janus.detect(config):
        return "janus-pro"
    if emu3.detect(config):
        return "emu3"
    if lumina.detect(config):
        return "lumina-mgpt"
    if config.get("model_type") in ("Emu3VisionVQ", "emu3_vqgan"):
        return "emu3-vq"
    return "unknown"


def load_folder_model(folder, device: torch.device, dtype: torch.dtype):
    """The AR model of a Hugging Face style folder (its VQ is loaded separately, on demand)."""
    from ..vq import chameleon as chameleon_vq
    from . import emu3, janus, lumina
    from ..io import hf_folder

    folder = Path(folder)
    if chameleon_vq.is_chameleon_vq_source(folder) and not (folder / "config.json").is_file():
        raise ZipARError(f"'{folder}' holds Meta's Chameleon VQGAN (vqgan.ckpt), the image decoder of Lumina-mGPT, not "
                         "an AR model; give it to the VQ loader and pick the Lumina-mGPT folder as the AR model.")
    config = hf_folder.read_config(folder, FOLDER_HINT)
    family = folder_family(config)
    if family == "janus-pro":
        return janus.load_janus(folder, device, dtype, config, with_vq=False)
    if family == "emu3":
        return emu3.load_emu3(folder, device, dtype, config)
    if family == "lumina-mgpt":
        return lumina.load_lumina(folder, device, dtype, config)
    if family == "emu3-vq":
        raise ZipARError(f"'{folder}' is Emu3's VQ image tokenizer, not the AR model; give it to the VQ loader and "
                         "pick the BAAI/Emu3-Gen folder as the AR model.")
    raise ZipARError(f"'{folder}' holds a model of type {config.get('model_type')!r}, which ZipAR does not know; "
                     f"{FOLDER_HINT}.")


def load_folder_vq(folder, device: torch.device, dtype: torch.dtype):
    """The VQ image tokenizer inside (or making up) a Hugging Face style folder."""
    from ..vq import chameleon as chameleon_vq, emu3 as emu3_vq
    from ..io import hf_folder
    from . import janus

    folder = Path(folder)
    if chameleon_vq.is_chameleon_vq_source(folder):  # its own folder, or dropped into the Lumina-mGPT folder
        return chameleon_vq.load_chameleon_vq(folder, device, dtype)
    config = hf_folder.read_config(folder, FOLDER_HINT)
    family = folder_family(config)
    if family == "lumina-mgpt":
        raise ZipARError(f"'{folder}' is a Lumina-mGPT language model. {LUMINA_VQ_HINT}.")
    if family == "janus-pro":
        return janus.load_janus_vq(folder, device, dtype)
    if family in ("emu3", "emu3-vq"):
        if family == "emu3" and config.get("model_type") != "emu3":
            raise ZipARError(f"'{folder}' is the original BAAI/Emu3-Gen language model, which has no VQ; "
                             "pick the BAAI/Emu3-VisionTokenizer folder for the VQ.")
        return emu3_vq.load_emu3_vq(folder, device, dtype)
    raise ZipARError(f"'{folder}' holds a model of type {config.get('model_type')!r}, which ZipAR does not know; "
                     f"{FOLDER_HINT}.")
