"""Janus-Pro, Emu3-Gen and Lumina-mGPT of the published sizes with random weights, for ``bench.decode``.

The networks are our own classes (``JanusGenerator``, ``VisualTokenGenerator`` around ``LlamaLM``)
wrapped in the real family adapters, so the benchmark runs exactly the code a user runs:
prompt recipe, CFG rows (Emu3's default negative prompt, left-padded), row-end tokens,
1D positions. Nothing is downloaded: no weights, no transformers model class, no tokenizer
files. A stand-in tokenizer maps each word / punctuation run to a fixed id, so prompts
have a realistic length (Janus-Pro ~30 tokens, Emu3 ~50 with its negative prompt, Lumina-mGPT ~35).

A network is built on the meta device, cast to the target dtype there, and only then given
storage on the target device (``to_empty``) and filled in place (``normal_(0, 0.02)``, norms
1, biases 0), so an 8B model in bf16 on a GPU never needs its fp32 size in host RAM.

Memory floor of one forward pass: every weight of the decoder layers, the final norm and
the image head (plus Janus's aligner) is read once per pass; embedding tables are gathered
by row and left out. ``floor_ms_per_pass`` = those bytes / ``BANDWIDTH``.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from zipar.families.base import Condition
from zipar.families.emu3 import Emu3GenModel
from zipar.families.janus import PATCH, JanusGenerator, JanusProModel
from zipar.nets.llama_lm import LlamaConfig, rope_inv_freq
from zipar.families.lumina import LuminaMGPTModel
from zipar.families.lumina2 import LuminaMGPT2Model
from zipar.families.simplear import SimpleARModel
from zipar.families.sequence import VisualTokenGenerator

BANDWIDTH = 3.0e12  # bytes/s: the floor's memory bandwidth (H100-class HBM)
PROMPT = "A red fox sitting in fresh snow at dawn, soft golden light, detailed fur, misty pine forest behind it."
CHUNK = 1 << 24  # elements filled per normal_ call


@dataclass(frozen=True)
class ChatSpec:
    title: str  # as printed: "Janus-Pro-1B"
    family: str  # "janus-pro", "emu3", "lumina-mgpt", "lumina-mgpt-2" or "simplear"
    lm: LlamaConfig
    codes: int  # image codes the head scores
    image_size: int  # default pixels per side
    cfg: float  # official guidance scale
    top_k: int  # official top-k (0: off)
    special: dict[str, int] = field(default_factory=dict)
    words: tuple[int, int] = (0, 0)  # stand-in tokenizer: first word id, number of word ids
    code_dim: int = 8  # Janus: generation embedding width
    aligner_depth: int = 2  # Janus: aligner layers
    head_dim: int = 0  # Janus: generation head width
    code_base: int = 0  # Emu3 / Lumina: vocabulary id of image code 0
    size_base: int = 0  # Lumina: vocabulary id of the size token for 0 x 32 pixels


# Janus-Pro: DeepSeek-LLM tokenizer ids (<｜begin▁of▁sentence｜>, <｜▁pad▁｜>, <begin_of_image>).
JANUS_SPECIAL = {"bos": 100000, "pad": 100015, "boi": 100016}
# Emu3: Qwen ids <|extra_200|>.. = 151846.., <|image start|> 151851, <|image end|> 151852,
# <|image token|> 151853, then the 32768 visual tokens from 151854 (pad = eos, as the loader sets).
EMU3_SPECIAL = {"eol": 151846, "eof": 151847, "bos": 151849, "eos": 151850, "boi": 151851, "eoi": 151852,
                "img": 151853, "pad": 151850}

# Lumina-mGPT (Chameleon vocabulary): <s> 0, image tokens 4..8195, <eoss> 8196, <racm3:break> 8197,
# <reserved08706> 8710 (end of turn), <reserved08799> 8803 (end of line), size tokens 8804 + n.
LUMINA_SPECIAL = {"bos": 0, "eoi": 8196, "boi": 8197, "eot": 8710, "eol": 8803, "pad": 8710}
# Lumina-mGPT 2.0 (Qwen vocabulary + its own specials): <|endoftext|> 151643 as BOS, <racm3:break> 151665,
# <eoss> 151666, <reserved08799> 151670 (end of line, as the release's decode skips it); the ids of the end of
# turn and the size tokens are not in the code we read: placed after them here (only their count matters).
LUMINA2_SPECIAL = {"bos": 151643, "boi": 151665, "eoi": 151666, "eol": 151670, "eot": 151671, "pad": 151671}
# SimpleAR: <|endoftext|> 151643 (pad), then the 7 tokens its training script adds after Qwen2.5's 151665
# (<|t2i|> first, <|soi|> third); no row ends.
SIMPLEAR_SPECIAL = {"t2i": 151665, "soi": 151667, "pad": 151643, "eol": None}

SPECS: dict[str, ChatSpec] = {
    "janus-pro-1b": ChatSpec(
        "Janus-Pro-1B", "janus-pro",
        LlamaConfig(hidden=2048, layers=24, heads=16, kv_heads=16, intermediate=5632, vocab=102400, rms_eps=1e-6,
                    rope_theta=10000.0),
        codes=16384, image_size=384, cfg=5.0, top_k=0, special=JANUS_SPECIAL, words=(100, 99000), head_dim=2048),
    "janus-pro-7b": ChatSpec(
        "Janus-Pro-7B", "janus-pro",
        LlamaConfig(hidden=4096, layers=30, heads=32, kv_heads=32, intermediate=11008, vocab=102400, rms_eps=1e-6,
                    rope_theta=10000.0),
        codes=16384, image_size=384, cfg=5.0, top_k=0, special=JANUS_SPECIAL, words=(100, 99000), head_dim=4096),
    "emu3-gen": ChatSpec(
        "Emu3-Gen", "emu3",
        LlamaConfig(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=184622, rms_eps=1e-5,
                    rope_theta=1e6),
        codes=32768, image_size=720, cfg=3.0, top_k=2048, special=EMU3_SPECIAL, words=(100, 151000), code_base=151854),
    "lumina-mgpt-7b": ChatSpec(
        "Lumina-mGPT-7B", "lumina-mgpt",
        LlamaConfig(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=65536, rms_eps=1e-5,
                    rope_theta=10000.0, qk_norm=True),
        codes=8192, image_size=768, cfg=4.0, top_k=2000, special=LUMINA_SPECIAL, words=(8900, 56000), code_base=4,
        size_base=8804),
    # 7B Chameleon trained from scratch; 171384 ids hold the image codes (155000 + 16384): the vocabulary is
    # taken as that rounded up to 172032 (the release's exact padding is not in its code); 15.8 GB in bf16.
    "lumina-mgpt-2": ChatSpec(
        "Lumina-mGPT-2.0", "lumina-mgpt-2",
        LlamaConfig(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=172032, rms_eps=1e-5,
                    rope_theta=10000.0, qk_norm=True, max_positions=10240),
        codes=16384, image_size=768, cfg=4.0, top_k=4096, special=LUMINA2_SPECIAL, words=(100, 150000),
        code_base=155000, size_base=151671),
    # SimpleAR: Qwen2.5-0.5B / Qwen2-1.5B shapes (q/k/v biases, tied head) with 64000 Cosmos codes after the
    # Qwen tokenizer and SimpleAR's 7 added tokens (151665 + 7 = 151672): vocabulary 215672, as the 1.5B release.
    "simplear-0.5b": ChatSpec(
        "SimpleAR-0.5B", "simplear",
        LlamaConfig(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=215672, rms_eps=1e-6,
                    rope_theta=1e6, qkv_bias=True, max_positions=32768),
        codes=64000, image_size=1024, cfg=6.0, top_k=64000, special=SIMPLEAR_SPECIAL, words=(100, 150000),
        code_base=151672),
    "simplear-1.5b": ChatSpec(
        "SimpleAR-1.5B", "simplear",
        LlamaConfig(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=215672, rms_eps=1e-6,
                    rope_theta=1e6, qkv_bias=True, max_positions=32768),
        codes=64000, image_size=1024, cfg=6.0, top_k=64000, special=SIMPLEAR_SPECIAL, words=(100, 150000),
        code_base=151672),
    # tiny stand-ins, only so tests can smoke-run the harness
    "janus-tiny": ChatSpec(
        "Janus-tiny", "janus-pro",
        LlamaConfig(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=512),
        codes=64, image_size=64, cfg=5.0, top_k=0, special={"bos": 1, "pad": 2, "boi": 3}, words=(8, 500), head_dim=64),
    "emu3-tiny": ChatSpec(
        "Emu3-tiny", "emu3",
        LlamaConfig(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024, rms_eps=1e-5, rope_theta=1e6),
        codes=256, image_size=48, cfg=3.0, top_k=2048, words=(16, 700), code_base=768,
        special={"eol": 1, "eof": 2, "bos": 3, "eos": 4, "boi": 5, "eoi": 6, "img": 7, "pad": 4}),
    "lumina-tiny": ChatSpec(
        "Lumina-tiny", "lumina-mgpt",
        LlamaConfig(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024, rms_eps=1e-5, qk_norm=True),
        codes=256, image_size=64, cfg=4.0, top_k=2000, words=(400, 600), code_base=4, size_base=280,
        special={"bos": 0, "eot": 1, "boi": 2, "eoi": 3, "eol": 270, "pad": 1}),
    "lumina2-tiny": ChatSpec(
        "Lumina2-tiny", "lumina-mgpt-2",
        LlamaConfig(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024, rms_eps=1e-5, qk_norm=True),
        codes=256, image_size=64, cfg=4.0, top_k=4096, words=(400, 600), code_base=4, size_base=280,
        special={"bos": 0, "eot": 1, "boi": 2, "eoi": 3, "eol": 270, "pad": 1}),
    "simplear-tiny": ChatSpec(
        "SimpleAR-tiny", "simplear",
        LlamaConfig(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=1024, rms_eps=1e-6,
                    rope_theta=1e6, qkv_bias=True),
        codes=256, image_size=64, cfg=6.0, top_k=64000, words=(16, 700), code_base=768,
        special={"t2i": 1, "soi": 2, "pad": 3, "eol": None}),
}


class WordTokenizer:
    """Stand-in tokenizer: each word or punctuation run -> a fixed id in [first, first + count)."""

    def __init__(self, first: int, count: int):
        self.first, self.count = first, count

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.first + zlib.crc32(t.encode()) % self.count for t in re.findall(r"\w+|[^\w\s]+", text)]

    def __call__(self, text: str) -> dict[str, list[int]]:  # the transformers call SimpleAR's recipe makes
        return {"input_ids": self.encode(text)}


def build_net(spec: ChatSpec) -> nn.Module:
    """The network with the published shapes (call under ``torch.device("meta")`` to allocate nothing)."""
    if spec.family == "janus-pro":
        return JanusGenerator(spec.lm, spec.codes, spec.code_dim, spec.aligner_depth, spec.head_dim)
    return VisualTokenGenerator(spec.lm, spec.codes)


def meta_net(spec: ChatSpec, dtype: torch.dtype = torch.float32) -> nn.Module:
    with torch.device("meta"):
        return build_net(spec).to(dtype)


def materialise(spec: ChatSpec, device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """Storage on ``device`` in ``dtype`` only; filled in place (weights N(0, 0.02), norms 1, biases 0)."""
    net = meta_net(spec, dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 1 or "norm" in name:  # Chameleon's per-head query/key norms are 2-D
                p.fill_(1.0 if name.endswith("norm.weight") else 0.0)
            else:
                for chunk in p.view(-1).split(CHUNK):
                    chunk.normal_(0.0, 0.02, generator=gen)
        net.lm.inv_freq = rope_inv_freq(spec.lm, device)  # fp32, as the loaders leave it
        if spec.family in ("emu3", "lumina-mgpt", "lumina-mgpt-2", "simplear"):
            net.code_ids = spec.code_base + torch.arange(spec.codes, device=device)
    net.lm.fuse()  # as the loaders leave it
    return net.eval().requires_grad_(False)


def random_model(spec: ChatSpec, device: torch.device, dtype: torch.dtype, image_size: int | None = None, seed: int = 0):
    """The family adapter around a random network; Janus's grid is image_size / 16, the others' come from grid_for."""
    size = image_size or spec.image_size
    net = materialise(spec, device, dtype, seed)
    tokenizer = WordTokenizer(*spec.words)
    if spec.family == "janus-pro":
        side = size // PATCH
        return JanusProModel(net, tokenizer, dict(spec.special), (side, side), "random weights", "hf")
    if spec.family == "simplear":
        return SimpleARModel(net, tokenizer, dict(spec.special), "random weights", spec.code_base, size)
    if spec.family in ("lumina-mgpt", "lumina-mgpt-2"):
        sizes = {n: spec.size_base + n for n in range(1, 129)}
        cls = LuminaMGPTModel if spec.family == "lumina-mgpt" else LuminaMGPT2Model
        return cls(net, tokenizer, dict(spec.special), sizes, "random weights", size)
    model = Emu3GenModel(net, tokenizer, dict(spec.special), "random weights", "hf")
    model.image_size = size
    return model


def condition(batch: int) -> Condition:
    return Condition(prompts=[PROMPT] * batch, labels=[f"prompt{i}" for i in range(batch)])


def prompt_lengths(model, cond: Condition, grid: tuple[int, int], guidance: bool) -> list[int]:
    """Tokens per prompt row (conditional rows, then unconditional), before left padding."""
    if model.family in ("emu3", "lumina-mgpt", "lumina-mgpt-2", "simplear"):
        return [len(r) for r in model.prompt_rows(cond, guidance, grid)]
    return [len(r) for r in model.prompt_rows(cond, guidance)]


def weight_bytes(net: nn.Module) -> tuple[int, int]:
    """(bytes of all parameters, bytes read by one forward pass: all but the embedding tables)."""
    gathered = {id(p) for m in net.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    total = per_pass = 0
    for p in net.parameters():
        size = p.numel() * p.element_size()
        total += size
        per_pass += 0 if id(p) in gathered else size
    return total, per_pass


def param_counts(spec: ChatSpec) -> dict[str, int]:
    """Parameter counts from the meta device (nothing allocated).

    ``lm``: embeddings + decoder layers + final norm as built; ``lm_with_text_head``: plus the
    text output matrix the published checkpoint also has (never built: generation does not use it);
    ``generation``: what the family adds (Janus: embedding, aligner, head; Emu3 / Lumina: the image rows).
    """
    net = meta_net(spec)
    lm = sum(p.numel() for p in net.lm.parameters())
    total = sum(p.numel() for p in net.parameters())
    return {"lm": lm, "lm_with_text_head": lm + spec.lm.vocab * spec.lm.hidden, "generation": total - lm, "built": total}
