"""LlamaGen's GPT (class- and text-conditional) under the official state-dict key names.

The published checkpoints carry no config, so everything is read back from tensor shapes
(``infer_gpt_config``); only the head count needs the published table. The forward pass
takes explicit positions (rows of a rotary table), an explicit boolean visibility mask and
optional cache slots, because ZipAR feeds several rows at once and lets each query see an
exact, non-causal subset of the cache.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.cache import CachePool, SlotCache, new_cache
from ..errors import ZipARError
from .castable import CastsWeights
from .fused import fused_linear

# (width -> heads) of the published GPT-B/L/XL/XXL/1B/3B/XXXL/7B configs.
PUBLISHED_HEADS = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2048: 32, 2560: 40, 3200: 32, 4096: 32}
PUBLISHED_NAMES = {768: "B", 1024: "L", 1280: "XL", 1536: "XXL", 2048: "1B", 2560: "XXXL", 3200: "3B", 4096: "7B"}
T2I_PREFIX_LEN = 120  # LlamaGen's text models read 120 flan-t5 token features


@dataclass(frozen=True)
class GPTConfig:
    dim: int
    n_layer: int
    n_head: int
    n_kv_head: int
    ffn_hidden: int
    vocab_size: int
    model_type: str = "c2i"  # "c2i" or "t2i"
    num_classes: int = 1000  # c2i: real classes; the table has one more row, the null class
    caption_dim: int = 2048  # t2i: width of the text features
    prefix_len: int = 1  # condition positions before the image (1 for c2i, 120 for t2i)
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def size_name(self) -> str:
        return PUBLISHED_NAMES.get(self.dim, f"custom-{self.dim}")


def default_heads(dim: int) -> int:
    return PUBLISHED_HEADS.get(dim, max(1, dim // 64))


def is_gpt_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return "tok_embeddings.weight" in sd and "layers.0.attention.wqkv.weight" in sd


def infer_gpt_config(sd: dict[str, torch.Tensor], n_head: int | None = None) -> GPTConfig:
    """Read a GPTConfig off the tensor shapes of an official (or re-saved) checkpoint."""
    if not is_gpt_state_dict(sd):
        if "quantize.embedding.weight" in sd:
            raise ZipARError(
                "this checkpoint is a VQ image tokenizer (it has quantize.embedding.weight), not an AR model. "
                "Use it as the VQ and pick a LlamaGen GPT file (e.g. c2i_L_384.pt) as the AR model."
            )
        raise ZipARError(
            "this checkpoint is not a LlamaGen GPT: it lacks tok_embeddings.weight and layers.0.attention.wqkv.weight. "
            "Expected an official file such as c2i_L_384.pt or t2i_XL_stage2_512.pt."
        )
    vocab_size, dim = sd["tok_embeddings.weight"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    n_head = n_head or default_heads(dim)
    if dim % n_head:
        raise ZipARError(f"model width {dim} is not divisible by {n_head} heads.")
    head_dim = dim // n_head
    qkv_rows = sd["layers.0.attention.wqkv.weight"].shape[0]
    n_kv_head = (qkv_rows // head_dim - n_head) // 2
    ffn_hidden = sd["layers.0.feed_forward.w1.weight"].shape[0]
    if "cls_embedding.embedding_table.weight" in sd:
        rows = sd["cls_embedding.embedding_table.weight"].shape[0]
        return GPTConfig(dim, n_layer, n_head, n_kv_head, ffn_hidden, vocab_size, "c2i", num_classes=rows - 1, prefix_len=1)
    if "cls_embedding.cap_proj.fc1.weight" in sd:
        caption_dim = sd["cls_embedding.cap_proj.fc1.weight"].shape[1]
        prefix_len = sd["cls_embedding.uncond_embedding"].shape[0] if "cls_embedding.uncond_embedding" in sd else T2I_PREFIX_LEN
        return GPTConfig(dim, n_layer, n_head, n_kv_head, ffn_hidden, vocab_size, "t2i", caption_dim=caption_dim, prefix_len=prefix_len)
    raise ZipARError("LlamaGen GPT checkpoint has neither a class table nor a caption projection (cls_embedding.*).")


class RMSNorm(CastsWeights, nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weights_at(x)[0]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, rope, mask, cache: SlotCache | None, layer: int, slots, kv_len: int):
        b, n, _ = x.shape
        kv_dim = self.n_kv_head * self.head_dim
        q, k, v = self.wqkv(x).split([self.n_head * self.head_dim, kv_dim, kv_dim], dim=-1)
        q = apply_rope(q.view(b, n, self.n_head, self.head_dim), rope).transpose(1, 2)
        k = apply_rope(k.view(b, n, self.n_kv_head, self.head_dim), rope).transpose(1, 2)
        v = v.view(b, n, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.write(layer, slots, k, v, kv_len)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv_head != self.n_head)
        return self.wo(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.w13 = None  # set by ``fuse``

    def fuse(self) -> None:
        """w1 and w3 as one matrix product (the loader calls it; the official key names stay
        those of the unfused module, which is what files and tests build)."""
        if self.w13 is None:
            self.w13 = fused_linear(self.w1, self.w3)
            self.w1 = self.w3 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is not None:
            gate, up = self.w13(x).chunk(2, dim=-1)
            return self.w2(F.silu(gate) * up)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, rope, mask, cache, layer, slots, kv_len):
        x = x + self.attention(self.attention_norm(x), rope, mask, cache, layer, slots, kv_len)
        return x + self.feed_forward(self.ffn_norm(x))


class LabelEmbedder(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.embedding_table = nn.Embedding(cfg.num_classes + 1, cfg.dim)  # last row: null class for CFG


class CaptionMLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.caption_dim, cfg.dim, bias=False)
        self.fc2 = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cap_proj = CaptionMLP(cfg)
        # The learned "no caption" features used as the unconditional branch of CFG.
        self.register_buffer("uncond_embedding", torch.zeros(cfg.prefix_len, cfg.caption_dim))


class LlamaGenGPT(nn.Module):
    compute_device: torch.device | None = None  # set by ``Family.place`` when a host may keep weights elsewhere
    kv_dtype: str = "default"  # set by ``Family.store_cache``: the kind of cache ``new_cache`` makes

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.cls_embedding = LabelEmbedder(cfg) if cfg.model_type == "c2i" else CaptionEmbedder(cfg)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def fuse(self) -> "LlamaGenGPT":
        """Fused feed-forward projections in every block (queries/keys/values come fused in the files)."""
        for layer in self.layers:
            layer.feed_forward.fuse()
        return self

    # -- condition prefix -------------------------------------------------------------
    def class_prefix(self, class_ids: torch.Tensor) -> torch.Tensor:
        """[rows] class ids (``num_classes`` = null class) -> [rows, 1, dim]."""
        return self.cls_embedding.embedding_table(class_ids).unsqueeze(1)

    def caption_prefix(self, features: torch.Tensor) -> torch.Tensor:
        """[rows, 120, caption_dim] text features -> [rows, 120, dim]."""
        return self.cls_embedding.cap_proj(features.to(self.output.weight.dtype))

    def null_caption(self, rows: int) -> torch.Tensor:
        return self.cls_embedding.uncond_embedding.unsqueeze(0).expand(rows, -1, -1)

    # -- transformer --------------------------------------------------------------------
    def new_cache(self, rows: int, slots: int, pool: CachePool | None = None) -> SlotCache:
        cfg, w = self.config, self.output.weight
        device = self.compute_device if self.compute_device is not None else w.device
        return new_cache(pool, cfg.n_layer, rows, cfg.n_kv_head, slots, cfg.head_dim, device, w.dtype, self.kv_dtype)

    def hidden(self, h, rope, mask, cache=None, slots=None, kv_len=0):
        """Run the blocks; with a cache, k/v of the inputs are written at ``slots`` first."""
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, mask, cache, i, slots, kv_len)
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.output(h).float()

    def rope_table(self, height: int, width: int) -> torch.Tensor:
        return rope_table_2d(height, width, self.config.head_dim, self.config.rope_base, self.config.prefix_len)


def rope_table_2d(height: int, width: int, head_dim: int, base: float, prefix_len: int) -> torch.Tensor:
    """[prefix_len + H*W, head_dim/2, 2] (cos, sin) rows, as LlamaGen lays them out.

    Half the rotary pairs turn with the row index and half with the column index, using
    frequencies of a head_dim/2 rotary; condition positions get all-zero rows, which
    zeroes their queries and keys exactly as the official code does.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    rows = torch.outer(torch.arange(height).float(), freqs)  # [H, head_dim/4]
    cols = torch.outer(torch.arange(width).float(), freqs)  # [W, head_dim/4]
    angles = torch.cat([rows[:, None, :].expand(-1, width, -1), cols[None, :, :].expand(height, -1, -1)], dim=-1)
    grid = torch.stack([angles.cos(), angles.sin()], dim=-1).flatten(0, 1)
    return torch.cat([torch.zeros(prefix_len, half, 2), grid])


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [b, n, heads, head_dim] by rope [n, head_dim/2, 2] (in fp32)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = rope[None, :, None, :, 0], rope[None, :, None, :, 1]
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).type_as(x)


def gpt_from_state_dict(
    sd: dict[str, torch.Tensor], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, n_head: int | None = None
) -> LlamaGenGPT:
    cfg = infer_gpt_config(sd, n_head)
    with torch.device("meta"):
        model = LlamaGenGPT(cfg)
    sd = {k: v for k, v in sd.items() if k != "freqs_cis"}
    if cfg.model_type == "t2i" and "cls_embedding.uncond_embedding" not in sd:
        raise ZipARError("text-to-image checkpoint lacks cls_embedding.uncond_embedding (needed for CFG); is the file complete?")
    floats = [k for k, v in sd.items() if not v.is_floating_point()]
    if floats:
        raise ZipARError(f"checkpoint tensor {floats[0]!r} holds {sd[floats[0]].dtype} values where weights must be "
                         "floating point; the file is damaged or not a LlamaGen GPT: re-download it.")
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as exc:  # a tensor of the wrong shape for the layout its neighbours imply
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[-1].strip() if first else "")
        raise ZipARError(f"checkpoint does not match a LlamaGen {cfg.model_type} GPT ({detail}); the file is damaged "
                         "or another model: re-download the official file.") from None
    if missing or unexpected:
        raise ZipARError(
            f"checkpoint does not match a LlamaGen {cfg.model_type} GPT: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False).fuse()
