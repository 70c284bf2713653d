"""Tiny Lumina-mGPT 2.0 folders, written the way the release's training code saves them.

The release's ``finetune_solver`` deletes the VQ submodule and saves its
``ChameleonXLLMXForConditionalGeneration`` with ``save_pretrained`` in bf16: transformers' key
names, query/key norms with one row per model-parallel shard, sharded safetensors plus index,
the release's config fields (``write_lumina_release`` writes exactly that). What differs from
1.0 is the vocabulary: a Qwen-style tokenizer (no BOS token, EOS ``<|endoftext|>``) whose
special tokens sit at Qwen's ids after the text vocabulary, and image codes at ids
155000 + code, which no tokenizer names, so the vocabulary (and ``lm_head``) is 171k rows even
for a tiny model (hidden 32 keeps a folder near 22 MB).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.chat_fixtures import write_qwen_style_tokenizer
from helpers.lumina_fixtures import randomize_lm, shard_structured_norms, write_lumina_release

IMAGE_OFFSET, CODES = 155000, 16384
VOCAB = IMAGE_OFFSET + CODES + 8  # the release pads its vocabulary past the last image id
EOS = "<|endoftext|>"
WORDS = ["Generate", "an", "image", "of", "according", "to", "the", "following", "prompt:", "a", "red", "fox",
         "blue", "car", "in", "snow", "32x32", "64x64", "128x128", "160x96", "96x160", "768x768"]
# Qwen2's specials end at 151664; the release adds its image tokens after them.
SPECIALS = {EOS: 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<racm3:break>": 151665, "<eoss>": 151666,
            "<reserved08796>": 151667, "<reserved08797>": 151668, "<reserved08798>": 151669,
            "<reserved08799>": 151670, "<reserved08706>": 151671}
# A MoVQGAN with the release's 8 pixels per code (four levels) and 16384 codes, at tiny widths
MOVQ_8X = dict(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(4,), resolution=32, z_channels=4,
               embed_dim=4, n_embed=CODES)
SIZE_UNITS = 48  # size tokens <reserved08801>..<reserved08848>: up to 1536 px per side


def lumina2_vocab() -> dict[str, int]:
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}, **SPECIALS}
    vocab.update({f"<reserved{8800 + n:05d}>": 151671 + n for n in range(1, SIZE_UNITS + 1)})
    return vocab


def write_lumina2_tokenizer(folder: Path) -> None:
    """A word-level stand-in for the release's Qwen BPE, with its special-token conventions:
    every special is a special token of the tokenizer, BOS is unset, EOS is <|endoftext|>."""
    vocab = lumina2_vocab()
    specials = [n for n in vocab if n.startswith("<") and n not in ("<unk>", EOS)]
    write_qwen_style_tokenizer(folder, vocab, EOS, specials)


def chameleon2_model(seed: int = 0, layers: int = 2, swin: bool = False, shards: int = 1):
    """transformers' Chameleon with random weights at 2.0's vocabulary size; image rows of lm_head
    get a larger spread so greedy decoding does not collapse onto one code."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    vocab = lumina2_vocab()
    config = ChameleonConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, swin_norm=swin, vocabulary_map=vocab, bos_token_id=None,
        pad_token_id=None, eos_token_id=vocab["<eoss>"], max_position_embeddings=10240,
        vq_config=dict(embed_dim=4, num_embeddings=32, base_channels=32, channel_multiplier=[1, 1], latent_channels=4,
                       resolution=32, num_res_blocks=1))
    torch.manual_seed(seed)
    model = randomize_lm(ChameleonForConditionalGeneration(config).eval())
    shard_structured_norms(model, shards)
    return model


def write_lumina2(folder: Path, seed: int = 0, shards: int = 1, swin: bool = False, layers: int = 2):
    """A release-shaped Lumina-mGPT 2.0 folder; returns (folder, the transformers model it holds)."""
    folder = Path(folder)
    model = chameleon2_model(seed, layers, swin, shards)
    write_lumina_release(folder, model, shards=shards)
    config = json.loads((folder / "config.json").read_text())
    config.update(max_position_embeddings=10240, bos_token_id=None, pad_token_id=None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_lumina2_tokenizer(folder)
    return folder, model
