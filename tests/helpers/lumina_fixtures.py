"""Tiny Lumina-mGPT folders: a random Chameleon saved by transformers, with a release-like vocabulary.

    write_lumina(folder)   ChameleonForConditionalGeneration.save_pretrained + tokenizer files;
                           the VQ weights transformers adds are dropped, as in the release
    write_lumina_release(folder, model, shards)
                           the same weights as Lumina-mGPT's own Chameleon classes save them
                           (written tensor by tensor, not through transformers): query/key
                           norms with one row per model-parallel shard, bf16 shards + index,
                           the release's config fields

The vocabulary keeps the release's token names (IMGIMG...Z image tokens, <racm3:break>,
<eoss>, <reserved08706>, <reserved08799>, size tokens <reserved088NN>) but not its ids:
image tokens sit in a shuffled order after the specials, so only a name-based mapping works.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.chat_fixtures import _portable_tokenizer_config

CODES = 32
SPECIALS = ["<s>", "<pad>", "</s>", "<eoss>", "<racm3:break>", "<reserved08706>", "<reserved08799>",
            *[f"<reserved{8800 + n:05d}>" for n in range(1, 49)]]  # size tokens up to 1536 px (the release has more)
WORDS = ["Generate", "an", "image", "of", "according", "to", "the", "following", "prompt:", "a", "red", "fox",
         "blue", "car", "in", "snow", "64x64", "64x32", "32x64", "96x96", "128x128"]


def image_token(code: int) -> str:
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def lumina_vocab(codes: int = CODES) -> dict[str, int]:
    names = ["<unk>", *SPECIALS, *WORDS]
    gen = torch.Generator().manual_seed(11)
    names += [image_token(int(c)) for c in torch.randperm(codes, generator=gen)]
    return {n: i for i, n in enumerate(names)}


def write_lumina_tokenizer(folder: Path, vocab: dict[str, int]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = [n for n in SPECIALS if n not in ("<s>", "</s>", "<pad>")]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=specials)
    fast.save_pretrained(folder)
    _portable_tokenizer_config(folder / "tokenizer_config.json")


def chameleon_model(vocab: dict[str, int], seed: int = 0, swin: bool = False, layers: int = 2):
    """transformers' Chameleon with random weights, including per-head query/key norm gains and biases."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    config = ChameleonConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, swin_norm=swin, vocabulary_map=vocab, bos_token_id=vocab["<s>"],
        pad_token_id=vocab["<pad>"], eos_token_id=vocab["</s>"],
        vq_config=dict(embed_dim=4, num_embeddings=CODES, base_channels=32, channel_multiplier=[1, 1], latent_channels=4,
                       resolution=32, num_res_blocks=1))
    torch.manual_seed(seed)
    return randomize_lm(ChameleonForConditionalGeneration(config).eval())


def randomize_lm(model):
    """Spread the language model's weights (the VQ's are left alone) so greedy decoding does not
    collapse onto one code; norm gains around 1. Draws from torch's global generator."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vqmodel" in name:
                continue
            p.normal_(0, 0.3 if p.ndim > 1 and "norm" not in name else 0.2)
            if name.endswith("norm.weight"):
                p.add_(1.0)
    return model


def write_lumina(folder: Path, seed: int = 0, swin: bool = False, keep_vq_weights: bool = False, layers: int = 2,
                 norm_shards: int | None = None):
    """A tiny Lumina-mGPT look-alike folder; returns (folder, the transformers model it was saved from).

    ``norm_shards``: give the query/key norms one row per shard (``shard_structured_norms``), so
    ``write_lumina_release`` can write the same model in the release's layout.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = lumina_vocab()
    write_lumina_tokenizer(folder, vocab)
    model = chameleon_model(vocab, seed, swin, layers)
    if norm_shards:
        shard_structured_norms(model, norm_shards)
    model.save_pretrained(folder)
    if not keep_vq_weights:
        for f in folder.glob("*.safetensors"):
            sd = load_file(str(f))
            save_file({k: v for k, v in sd.items() if "vqmodel" not in k}, str(f), metadata={"format": "pt"})
    return folder, model


def shard_structured_norms(model, shards: int, seed: int = 7) -> None:
    """Give the query/key norms the structure the release's layout can express: one gain and bias
    row per model-parallel shard, shared by the consecutive heads of that shard."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "self_attn.q_norm." in name or "self_attn.k_norm." in name:
                heads, head_dim = p.shape
                rows = torch.randn(shards, head_dim, generator=gen) * 0.2 + (1.0 if name.endswith("weight") else 0.0)
                p.copy_(rows.repeat_interleave(heads // shards, dim=0))
        for p in model.parameters():  # the release is stored in bf16: keep both layouts bit-identical
            p.copy_(p.to(torch.bfloat16).float())


def write_lumina_release(folder: Path, model, shards: int = 1, files: int = 2) -> Path:
    """Write ``model``'s language-model weights the way Lumina-mGPT's release folders hold them.

    The release's training code deletes the VQ submodule and calls ``save_pretrained`` on its
    ``ChameleonXLLMXForConditionalGeneration`` with a bf16 state dict: transformers' key names, but
    its ``ChameleonLayerNorm`` keeps ``(model_parallel_size, head_dim)`` gains and biases. The files
    here are written directly with safetensors (sharded, with the index save_pretrained writes).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    sd = {}
    for key, t in model.state_dict().items():
        if ".vqmodel." in f".{key}":
            continue
        if ".self_attn.q_norm." in key or ".self_attn.k_norm." in key:
            t = t[:: t.shape[0] // shards]  # one row per shard (the heads of a shard share it)
        sd[key] = t.detach().to(torch.bfloat16).contiguous()
    keys = sorted(sd)
    per_file = -(-len(keys) // files)
    weight_map, total = {}, 0
    for i in range(files):
        name = f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        part = {k: sd[k] for k in keys[i * per_file:(i + 1) * per_file]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    release_config = {
        "architectures": ["ChameleonXLLMXForConditionalGeneration"],
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": config.bos_token_id, "dropout": 0.0,
        "eos_token_id": config.eos_token_id, "hidden_act": "silu", "hidden_size": config.hidden_size,
        "initializer_range": 0.02, "intermediate_size": config.intermediate_size, "mask_image_logits": False,
        "max_position_embeddings": config.max_position_embeddings, "mlp_bias": False, "model_parallel_size": shards,
        "model_type": "chameleon", "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers, "num_key_value_heads": config.num_key_value_heads,
        "pad_token_id": config.pad_token_id, "rms_norm_eps": config.rms_norm_eps, "rope_scaling": None,
        "rope_theta": 10000.0, "swin_norm": config.swin_norm, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.44.0", "use_cache": True,
        "vocab_size": config.vocab_size, "vocabulary_map": dict(config.vocabulary_map), "z_loss_weight": 0.0,
        "vq_config": {"embed_dim": 4, "num_embeddings": CODES, "double_latent": False, "latent_channels": 4,
                      "resolution": 32, "in_channels": 3, "base_channels": 32, "channel_multiplier": [1, 1],
                      "num_res_blocks": 1, "attn_resolutions": None, "dropout": 0.0, "attn_type": "vanilla",
                      "initializer_range": 0.02, "model_type": "chameleon_vqgan"},
    }
    (folder / "config.json").write_text(json.dumps(release_config, indent=2))
    write_lumina_tokenizer(folder, {k: int(v) for k, v in config.vocabulary_map.items()})
    return folder
