"""Janus-Pro (DeepSeek) as a ZipAR family, from either published folder layout.

Image generation in Janus-Pro uses a Llama language model plus three small pieces: a
generation embedding + aligner MLP that turn an image code into an input vector, and a
generation head that turns the last hidden state into 16384 code logits. The image
codes decode through a LlamaGen VQ-16 (Janus's own ``gen_vision_model`` is that network),
which the VQ loader reads from the same folder (``zipar.vq.janus``). Understanding parts
(SigLIP tower, text head) are never read.

Folders accepted (weights read lazily, no remote code, ``.bin`` shards with weights_only):
- transformers ``deepseek-community/Janus-Pro-1B`` / ``-7B`` (model_type "janus"):
  ``model.language_model.*``, ``model.generation_{embeddings,aligner,head}.*``, ``model.vqmodel.*``
  (module names of transformers' VQ, renamed here to LlamaGen's);
- original ``deepseek-ai/Janus-Pro-1B`` / ``-7B`` (model_type "multi_modality"):
  ``language_model.model.*``, ``gen_embed``, ``gen_aligner.layers.{0,2}``,
  ``gen_head.{output_mlp_projector,vision_head}``, ``gen_vision_model.*`` (LlamaGen names).

Prompt (official recipe): BOS + ``"<|User|>: {prompt}\\n\\n<|Assistant|>:"`` + ``<begin_of_image>``;
the unconditional row is the same ids with everything between BOS and ``<begin_of_image>``
replaced by the pad token; CFG 5, temperature 1; 24 x 24 codes for 384 x 384 pixels.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.cache import CachePool
from ..errors import ZipARError
from ..io import hf_folder
from ..nets.llama_lm import LlamaConfig, LlamaLM, lm_from_state_dict
from .base import Condition, FolderFamily, SamplingDefaults
from .registry import register
from ..vq.janus import HINT, folder_layout  # one folder holds the Janus-Pro LM and its VQ
from .sequence import PromptBatch, SequenceSession, layout_sequence

USER_TEMPLATE = "<|User|>: {prompt}\n\n<|Assistant|>:"
BOI_TOKEN = "<begin_of_image>"
PAD_TOKEN = "<｜▁pad▁｜>"
DEFAULT_IMAGE_SIZE = 384
PATCH = 16
DEFAULTS = SamplingDefaults(cfg=5.0, temperature=1.0, top_k=0, top_p=1.0)


# ----------------------------------------------------------------------------- the network

class JanusGenerator(nn.Module):
    """The language model and the image-generation pieces, under names of our own."""

    def __init__(self, cfg: LlamaConfig, codes: int, code_dim: int, aligner_depth: int, head_dim: int):
        super().__init__()
        self.lm = LlamaLM(cfg)
        self.gen_embed = nn.Embedding(codes, code_dim)
        widths = [code_dim] + [cfg.hidden] * aligner_depth
        self.aligner = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head_proj = nn.Linear(cfg.hidden, head_dim)
        self.head_out = nn.Linear(head_dim, codes)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(ids)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.aligner[0](self.gen_embed(codes))
        for layer in self.aligner[1:]:
            x = layer(F.gelu(x))
        return x

    def image_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head_out(F.gelu(self.head_proj(hidden))).float()


# ----------------------------------------------------------------------------- key maps

def _prefix_in(keys: set[str], candidates: tuple[str, ...], what: str, folder: Path) -> str:
    for p in candidates:
        if any(k.startswith(p) for k in keys):
            return p
    raise ZipARError(f"'{folder}' has no {what} weights (keys starting with {' or '.join(candidates)}); {HINT}.")


def _generation_keys(embed: str, aligner: list[str], head_proj: str, head_out: str) -> dict[str, str]:
    """JanusGenerator name -> file key for the generation pieces (aligner layers in order)."""
    gen = {"gen_embed.weight": embed}
    modules = {f"aligner.{i}": name for i, name in enumerate(aligner)} | {"head_proj": head_proj, "head_out": head_out}
    for ours, theirs in modules.items():
        for p in ("weight", "bias"):
            gen[f"{ours}.{p}"] = f"{theirs}.{p}"
    return gen


def split_state_dict(sd: dict[str, torch.Tensor], fmt: str, folder: Path) -> tuple[dict, dict]:
    """File keys -> (language model, generation pieces under JanusGenerator names); the VQ is
    read by the VQ loader (``zipar.vq.janus``)."""
    keys = set(sd)
    if fmt == "hf":
        lm_p = _prefix_in(keys, ("model.language_model.", "language_model.model.", "language_model."), "language model", folder)
        g = "model." if any(k.startswith("model.generation_") for k in keys) else ""
        aligner = sorted({m.group(1) for k in keys if (m := re.match(rf"{g}generation_aligner\.(fc1|hidden_layers\.\d+)\.weight$", k))},
                         key=lambda n: -1 if n == "fc1" else int(n.split(".")[1]))
        gen = _generation_keys(f"{g}generation_embeddings.weight", [f"{g}generation_aligner.{n}" for n in aligner],
                               f"{g}generation_head.proj_out", f"{g}generation_head.vision_head")
    else:
        lm_p = _prefix_in(keys, ("language_model.model.",), "language model", folder)
        _prefix_in(keys, ("gen_head.",), "generation head (gen_head)", folder)
        layers = sorted({int(m.group(1)) for k in keys if (m := re.match(r"gen_aligner\.layers\.(\d+)\.weight$", k))})
        gen = _generation_keys("gen_embed.weight", [f"gen_aligner.layers.{n}" for n in layers],
                               "gen_head.output_mlp_projector", "gen_head.vision_head")
    lm = {k[len(lm_p):]: k for k in keys if k.startswith(lm_p) and not k[len(lm_p):].startswith("lm_head")}
    missing = [theirs for theirs in gen.values() if theirs not in keys]
    if missing or not any(k.startswith("aligner.") for k in gen):
        raise ZipARError(f"'{folder}' lacks the image-generation weights ({missing[0] if missing else 'aligner'}); {HINT}.")
    return lm, gen


def wanted_key(key: str) -> bool:
    """Everything but the understanding side (vision tower, its aligner, the text head) and the VQ
    (the VQ loader reads that)."""
    return not (key.startswith(("model.vision_model.", "vision_model.", "model.aligner.", "aligner.", "lm_head.",
                                "model.vqmodel.", "vqmodel.", "gen_vision_model."))
                or key.endswith("lm_head.weight"))


def llama_config(config: dict, fmt: str, folder: Path) -> LlamaConfig:
    text = config.get("text_config" if fmt == "hf" else "language_config")
    if not isinstance(text, dict):
        raise ZipARError(f"config.json in '{folder}' has no {'text_config' if fmt == 'hf' else 'language_config'}; {HINT}.")
    return LlamaConfig.from_dict(text, f"{folder}/config.json")


# ----------------------------------------------------------------------------- loading

def load_janus(folder: str | Path, device: torch.device, dtype: torch.dtype, config: dict | None = None) -> "JanusProModel":
    folder = Path(folder)
    config = config or hf_folder.read_config(folder, HINT)
    fmt = folder_layout(config)
    if fmt is None:
        raise ZipARError(f"'{folder}' is not a Janus-Pro folder (model_type {config.get('model_type')!r}); {HINT}.")
    cfg = llama_config(config, fmt, folder)
    tokenizer = hf_folder.load_tokenizer(folder, HINT)
    raw = hf_folder.read_tensors(hf_folder.keys_by_file(folder, HINT), wanted_key)
    lm_keys, gen_keys = split_state_dict(raw, fmt, folder)
    codes, code_dim = raw[gen_keys["gen_embed.weight"]].shape
    head_dim = raw[gen_keys["head_proj.weight"]].shape[0]
    depth = sum(1 for k in gen_keys if k.startswith("aligner.") and k.endswith(".weight"))
    lm = lm_from_state_dict(cfg, {ours: raw[theirs] for ours, theirs in lm_keys.items()}, str(folder), device, dtype)
    with torch.device("meta"):
        net = JanusGenerator(cfg, codes, code_dim, depth, head_dim)
    net.lm = lm
    gen_sd = {ours: raw[theirs].to(dtype) for ours, theirs in gen_keys.items()}
    for k, v in net.state_dict().items():
        if not k.startswith("lm.") and tuple(gen_sd[k].shape) != tuple(v.shape):
            raise ZipARError(f"'{folder}': {gen_keys[k]} has shape {tuple(gen_sd[k].shape)}, expected {tuple(v.shape)}; {HINT}.")
    net.load_state_dict(gen_sd, strict=False, assign=True)
    net = net.to(device).eval().requires_grad_(False)
    grid = native_grid(config, fmt)
    return JanusProModel(net, tokenizer, special_ids(tokenizer, folder), (grid, grid), str(folder), fmt)


def native_grid(config: dict, fmt: str) -> int:
    """Codes per side: the VQ's patch count (transformers) or the image size / 16 (original)."""
    if fmt == "hf":
        return int(config.get("vq_config", {}).get("num_patches", DEFAULT_IMAGE_SIZE // PATCH))
    size = config.get("vision_config", {}).get("params", {}).get("image_size", DEFAULT_IMAGE_SIZE)
    return int(size) // PATCH


def special_ids(tokenizer, folder: Path) -> dict[str, int]:
    vocab = tokenizer.get_vocab()
    boi = vocab.get(BOI_TOKEN)
    bos = tokenizer.bos_token_id
    pad = vocab.get(PAD_TOKEN, tokenizer.pad_token_id)
    gen_cfg = folder / "generation_config.json"
    if gen_cfg.is_file():
        pad = hf_folder.read_json(gen_cfg, "generation config").get("pad_token_id", pad)
    for name, value in (("<begin_of_image>", boi), ("BOS", bos), ("pad", pad)):
        if value is None:
            raise ZipARError(f"the tokenizer in '{folder}' has no {name} token; {HINT}.")
    return {"bos": int(bos), "boi": int(boi), "pad": int(pad)}


# ----------------------------------------------------------------------------- the family adapter

@register
class JanusProModel(FolderFamily):
    """Janus-Pro for the decode loop: prompt rows, 1D positions, the generation head."""

    family = "janus-pro"
    title = "Janus-Pro"
    reads = "prompt"
    row0_first = True  # no official ZipAR code for Janus-Pro: the paper's rule (LlamaGen's), row 0 first
    defaults = DEFAULTS
    vq_hint = "the Janus-Pro model folder itself (its VQ is read from it)"
    hint = ("Janus-Pro folders (deepseek-community/Janus-Pro-1B/-7B or deepseek-ai/Janus-Pro-1B/-7B, "
            "their own VQ inside)")

    def __init__(self, net: JanusGenerator, tokenizer, special: dict[str, int], grid: tuple[int, int],
                 source_path: str, fmt: str):
        self.net, self.tokenizer, self.special, self.native_grid = net, tokenizer, special, grid
        self.source_path, self.format = source_path, fmt
        self.vocab_size = net.head_out.out_features
        self.config = net.lm.config

    load = staticmethod(load_janus)

    @classmethod
    def is_own_config(cls, config: dict) -> bool:
        return folder_layout(config) is not None

    @property
    def lm(self) -> LlamaLM:
        return self.net.lm

    @property
    def device(self) -> torch.device:
        return self.compute_device if self.compute_device is not None else self.net.head_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.head_out.weight.dtype

    @property
    def image_size(self) -> int:
        return self.native_grid[0] * PATCH

    @property
    def native_image_size(self) -> int:
        return self.image_size

    def code_embeddings(self) -> torch.Tensor:
        """[codes, dim] input vectors of the image codes (preview colours)."""
        return self.net.gen_embed.weight

    def networks(self) -> list:
        return [self.net]

    def layer_stacks(self) -> list:
        return [self.net.lm.layers]

    def describe(self) -> str:
        c = self.config
        return (f"Janus-Pro ({c.layers} layers, width {c.hidden}, {self.vocab_size} image codes, "
                f"{'transformers' if self.format == 'hf' else 'original'} folder)")

    def grid_for(self, cond: Condition | None = None, image_size: int | None = None,
                 downsample: int | None = None) -> tuple[int, int]:
        """Janus-Pro draws one size; the VQ's pixels per code do not change the grid."""
        ratio = getattr(cond, "aspect_ratio", None) if cond is not None else None
        if ratio not in (None, "", "1:1"):
            raise ZipARError(f"Janus-Pro draws square {self.image_size}x{self.image_size} images only; "
                             f"aspect ratio {ratio} is not supported (use 1:1).")
        if image_size not in (None, 0, self.image_size):
            raise ZipARError(f"Janus-Pro draws {self.image_size}x{self.image_size} images only (asked for {image_size}).")
        return self.native_grid

    def check_condition(self, cond: Condition) -> None:
        self.check_condition_kind(cond)
        if any(n.strip() for n in (cond.negative_prompts or [])):
            raise ZipARError("Janus-Pro's recipe has no negative prompt (its unconditional row is padding); "
                             "leave the negative prompt empty.")
        self.grid_for(cond)

    def prompt_ids(self, prompt: str) -> list[int]:
        text = USER_TEMPLATE.format(prompt=prompt.strip())
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return [self.special["bos"], *ids, self.special["boi"]]

    def prompt_rows(self, cond: Condition, guidance: bool) -> list[list[int]]:
        rows = [self.prompt_ids(p) for p in cond.prompts]
        if guidance:  # official unconditional row: BOS, pads, <begin_of_image>
            rows += [[r[0], *[self.special["pad"]] * (len(r) - 2), r[-1]] for r in rows]
        return rows

    def start(self, cond: Condition, grid: tuple[int, int], guidance: bool, pool: CachePool | None = None) -> SequenceSession:
        self.check_condition(cond)
        if tuple(grid) != self.native_grid:
            raise ZipARError(f"Janus-Pro generates a {self.native_grid[0]}x{self.native_grid[1]} token grid "
                             f"({self.image_size} px); got {grid[0]}x{grid[1]}.")
        rows = self.prompt_rows(cond, guidance)
        self.config.check_length(max(len(r) for r in rows), grid[0] * grid[1], f"a {grid[0]}x{grid[1]} image")
        batch = PromptBatch.left_padded(rows, self.special["pad"], self.device, pool)
        return SequenceSession(self.net, batch, grid, None, pool)

    def cache_bytes(self, rows: int, grid: tuple[int, int]) -> int:
        """The image part of the key/value cache (the prompt adds a few dozen positions)."""
        return self.config.cache_bytes(rows, grid[0] * grid[1], self.dtype, self.kv_dtype)

    def sequence(self, prompt: str, codes: torch.Tensor) -> list[int]:
        """The full token layout of one image (prompt + codes, which Janus keeps in its own id space)."""
        return layout_sequence(self.prompt_ids(prompt), codes, torch.arange(self.vocab_size), None, [])
