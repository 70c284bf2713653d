"""A Llama-style language model with a slot-addressed KV cache, for the 1D families.

Janus-Pro (DeepSeek-LLM), Emu3 and Lumina-mGPT's Chameleon are Llama decoders at heart.
transformers runs them through a cache that only appends, with masks built for text; ZipAR
needs to overwrite a slot (a stand-in replaced by the real token), attend with an arbitrary
boolean mask and give every row its own positions (left-padded CFG prompts). So the layers
are run here, from the same weights under transformers' own parameter names
(``embed_tokens``, ``layers.N.self_attn.q_proj`` ..., ``norm``), which keeps the loaders a
matter of stripping a prefix and lets tests compare logits with transformers' modules.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.cache import CachePool, SlotCache, new_cache
from .castable import CastsWeights
from .fused import fused_linear
from ..errors import ZipARError
from ..io.block_counts import check_block_counts


@dataclass(frozen=True)
class LlamaConfig:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    head_dim: int = 0  # 0: hidden // heads
    attention_bias: bool = False  # a bias on every attention projection (q, k, v and o)
    qkv_bias: bool = False  # Qwen2: a bias on the query, key and value projections only
    qk_norm: bool = False  # Chameleon: a LayerNorm per head on queries and keys, before the rotary
    swin_norm: bool = False  # Chameleon 30B-style: norm after attention / MLP instead of before
    max_positions: int = 0  # max_position_embeddings: the longest sequence it was trained on (0: not stated)

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def cache_bytes(self, rows: int, slots: int, dtype: torch.dtype, kv: str = "default") -> int:
        """Bytes of the key/value cache for ``rows`` sequences of ``slots`` positions (``kv``: its kind)."""
        return SlotCache.bytes_for(self.layers, rows, self.kv_heads, slots, self.dim_per_head, dtype, kv)

    def check_length(self, prompt: int, image: int, what: str) -> None:
        """Refuse a sequence longer than the model was trained on, before any cache is allocated
        (a pasted novel as the prompt would otherwise take gigabytes first)."""
        if self.max_positions and prompt + image > self.max_positions:
            raise ZipARError(f"the prompt ({prompt} tokens) and {what} ({image} positions) make {prompt + image} "
                             f"positions, more than the {self.max_positions} this model was trained on "
                             "(max_position_embeddings in its config.json); shorten the prompt or lower the image size.")

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.json") -> "LlamaConfig":
        """From a transformers text config (LlamaConfig / Emu3TextConfig / a Janus language_config)."""
        try:
            heads = int(d["num_attention_heads"])
            theta = d.get("rope_theta")
            rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
            if theta is None:
                theta = rope.get("rope_theta", 10000.0)
            kind = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
            if kind not in ("default", None):
                raise ZipARError(f"{where}: rotary scaling {kind!r} is not supported (only plain rotary positions).")
            return cls(
                hidden=int(d["hidden_size"]),
                layers=int(d["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(d.get("num_key_value_heads") or heads),
                intermediate=int(d["intermediate_size"]),
                vocab=int(d["vocab_size"]),
                rms_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta),
                head_dim=int(d.get("head_dim") or 0),
                attention_bias=bool(d.get("attention_bias", False)),
                swin_norm=bool(d.get("swin_norm", False)),
                max_positions=int(d.get("max_position_embeddings") or 0),
            )
        except KeyError as exc:
            raise ZipARError(f"{where}: the language model config lacks {exc.args[0]!r}; is this the model's own config?") from None


class RMSNorm(CastsWeights, nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # as transformers does: statistics in fp32, the weight applied in the input's dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weights_at(x)[0] * h.to(x.dtype)


class HeadNorm(CastsWeights, nn.Module):
    """Chameleon's query/key norm: statistics over each head's vector, a gain and bias per head and channel."""

    def __init__(self, heads: int, head_dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(heads, head_dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., heads, head_dim]
        weight, bias = self.weights_at(x)
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * weight + bias


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        d, hd = cfg.hidden, cfg.dim_per_head
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, hd
        qkv_bias = cfg.attention_bias or cfg.qkv_bias
        self.q_proj = nn.Linear(d, cfg.heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(d, cfg.kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(d, cfg.kv_heads * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(cfg.heads * hd, d, bias=cfg.attention_bias)
        if cfg.qk_norm:
            self.q_norm = HeadNorm(cfg.heads, hd)
            self.k_norm = HeadNorm(cfg.kv_heads, hd)
        self.qkv = None  # set by ``fuse``

    def fuse(self) -> None:
        """One matrix product for queries, keys and values instead of three (fewer, larger
        kernels per pass; the weights are moved, not copied twice)."""
        if self.qkv is not None:
            return
        self.qkv = fused_linear(self.q_proj, self.k_proj, self.v_proj)
        self.q_proj = self.k_proj = self.v_proj = None

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.qkv is not None:
            q_dim, kv_dim = self.heads * self.head_dim, self.kv_heads * self.head_dim
            return self.qkv(x).split([q_dim, kv_dim, kv_dim], dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(self, x, cos, sin, mask, cache: "SlotCache", layer: int, slots, kv_len: int):
        b, n, _ = x.shape
        q, k, v = self.project(x)
        q = q.view(b, n, self.heads, self.head_dim)
        k = k.view(b, n, self.kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        keys, values = cache.write(layer, slots, k, v, kv_len)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self.kv_heads != self.heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)
        self.gate_up = None  # set by ``fuse``

    def fuse(self) -> None:
        """Gate and up projections as one matrix product."""
        if self.gate_up is not None:
            return
        self.gate_up = fused_linear(self.gate_proj, self.up_proj)
        self.gate_proj = self.up_proj = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is not None:
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.swin = cfg.swin_norm

    def forward(self, x, cos, sin, mask, cache, layer, slots, kv_len):
        if self.swin:  # the norms sit on the branch outputs
            x = x + self.input_layernorm(self.self_attn(x, cos, sin, mask, cache, layer, slots, kv_len))
            return x + self.post_attention_layernorm(self.mlp(x))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, slots, kv_len)
        return x + self.mlp(self.post_attention_layernorm(x))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the half-split convention transformers' Llama uses."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def rope_inv_freq(cfg: LlamaConfig, device=None) -> torch.Tensor:
    """Rotary frequencies, always in fp32 (a meta-device or half-precision build must not keep its own)."""
    hd = cfg.dim_per_head
    return 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device=device).float() / hd))


class LlamaLM(nn.Module):
    """Embeddings, decoder layers and the final norm; heads and output vocabularies are the family's."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    compute_device: torch.device | None = None  # set by ``Family.place`` when a host may keep weights elsewhere
    kv_dtype: str = "default"  # set by ``Family.store_cache``: the kind of cache ``new_cache`` makes

    @property
    def device(self) -> torch.device:
        return self.compute_device if self.compute_device is not None else self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def new_cache(self, rows: int, slots: int, pool: CachePool | None = None) -> SlotCache:
        c = self.config
        return new_cache(pool, c.layers, rows, c.kv_heads, slots, c.dim_per_head, self.device, self.dtype,
                         self.kv_dtype)

    def fuse(self) -> "LlamaLM":
        """Fused projections in every layer (see ``Attention.fuse``); the loaders call it."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()
        return self

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """[rows or 1, n] positions -> cos, sin [rows or 1, 1, n, head_dim] (computed in fp32)."""
        freqs = positions[..., None].float() * self.inv_freq.float().to(positions.device)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def rope_table(self, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [length, head_dim] for positions 0..length-1, computed in fp32 and stored in
        ``dtype`` (the same numbers ``rope`` gives); a pass then only gathers rows."""
        cos, sin = self.rope(torch.arange(length, device=self.device)[None], dtype)
        return cos[0, 0], sin[0, 0]

    def hidden(self, h: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: SlotCache,
               slots: torch.Tensor, kv_len: int, table: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Run inputs ``h`` [rows, n, hidden] at ``positions`` into cache ``slots`` [n]; return normed hidden states.

        ``mask`` [rows or 1, 1, n, kv_len] bool: which cache slots each input attends to.
        ``table``: a ``rope_table`` covering every position (else the angles are computed here).
        """
        if table is None:
            cos, sin = self.rope(positions, h.dtype)
        else:
            cos, sin = table[0][positions][:, None], table[1][positions][:, None]
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, cache, i, slots, kv_len)
        return self.norm(h)


HEAD_NORM_KEYS = tuple(f"self_attn.{n}_norm.{p}" for n in "qk" for p in ("weight", "bias"))


def head_norm_rows(t: torch.Tensor, shape: tuple[int, int], what: str) -> torch.Tensor:
    """A query/key norm gain or bias as one row per head, from either layout a checkpoint may hold.

    transformers stores one row per head, ``(heads, head_dim)``. Lumina-mGPT's own Chameleon
    classes, which wrote its releases, store one row per model-parallel shard,
    ``(shards, head_dim)`` (``(1, 128)`` in the single-file 7B checkpoints), and apply each
    row to the consecutive heads of its shard; repeating each row over its group gives the
    per-head layout.
    """
    heads, head_dim = shape
    got = tuple(t.shape)
    if got == shape:
        return t
    if len(got) == 2 and got[1] == head_dim and 0 < got[0] < heads and heads % got[0] == 0:
        return t.repeat_interleave(heads // got[0], dim=0)
    raise ZipARError(f"{what} has shape {got}, which fits neither layout the config allows: {shape} (one row per "
                     f"head, as transformers saves it) or (shards, {head_dim}) with shards dividing {heads} (one row "
                     f"per model-parallel shard, as Lumina-mGPT's releases save it, e.g. (1, {head_dim})); "
                     "config.json and the weights do not belong together.")


def lm_from_state_dict(cfg: LlamaConfig, sd: dict[str, torch.Tensor], where: str, device="cpu",
                       dtype: torch.dtype = torch.float32) -> LlamaLM:
    """Build the LM on the meta device and take the given tensors (keys without any prefix)."""
    check_block_counts(sd, {"layers.": cfg.layers}, where, "config.json and the weights do not belong together")
    embed = sd.get("embed_tokens.weight")
    if embed is not None and tuple(embed.shape) != (cfg.vocab, cfg.hidden):
        raise ZipARError(f"{where}: embed_tokens.weight has shape {tuple(embed.shape)} but the config says "
                         f"{(cfg.vocab, cfg.hidden)}; config.json and the weights do not belong together.")
    with torch.device("meta"):
        lm = LlamaLM(cfg)
    expected = {k: v.shape for k, v in lm.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise ZipARError(f"{where}: language model weights missing ({len(missing)} tensors, e.g. {missing[0]!r}); "
                         "the download is incomplete or this is another model.")
    tensors = {}
    for k, shape in expected.items():
        t = sd[k]
        if k.endswith(HEAD_NORM_KEYS):
            t = head_norm_rows(t, tuple(shape), f"{where}: {k}")
        elif tuple(t.shape) != tuple(shape):
            raise ZipARError(f"{where}: {k} has shape {tuple(t.shape)} but the config says {tuple(shape)}; "
                             "config.json and the weights do not belong together.")
        tensors[k] = t.to(dtype)
    lm.load_state_dict(tensors, assign=True)
    lm.inv_freq = rope_inv_freq(cfg)
    return lm.to(device).eval().fuse()
