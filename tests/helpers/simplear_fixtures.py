"""Tiny SimpleAR folders, written the way the release's training code saves them.

The training script loads a Qwen2 with transformers' ``Qwen2ForCausalLM``, adds seven special
tokens to the Qwen tokenizer (``<|t2i|>``, ``<|i2t|>``, ``<|soi|>``, ``<|vtokens|>``,
``<|t2v|>``, ``<|v2t|>``, ``<|sov|>``), resizes the embeddings to ``len(tokenizer) + 64000``
and saves with ``save_pretrained``: model_type "qwen2", safetensors, and with tied embeddings
(the 0.5B / 1.5B Qwen2.5 bases tie them) no ``lm_head.weight`` in the file. The tokenizer is a
word-level stand-in for Qwen's BPE with its conventions: no BOS, ``<|endoftext|>`` as EOS and
pad. Hidden 32 keeps the 64k-row embedding small (about 8 MB in fp32).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.chat_fixtures import write_qwen_style_tokenizer

CODES = 64000
EOS = "<|endoftext|>"
ADDED = ["<|t2i|>", "<|i2t|>", "<|soi|>", "<|vtokens|>", "<|t2v|>", "<|v2t|>", "<|sov|>"]
WORDS = ["A", "An", "a", "highly", "realistic", "image", "of", "red", "fox", "blue", "car", "in", "snow", "aerial",
         "view,", "overexposed,", "low", "quality,", "deformation,", "poor", "composition,", "bad", "hands,", "teeth,",
         "eyes,", "limbs,", "distortion", "blurry", "dark", "the", "Hello", "world"]


def simplear_vocab(added: list[str] = ADDED) -> dict[str, int]:
    names = ["<unk>", *WORDS, EOS, *added]  # the tokenizer's own words, then its specials, then the added ones
    return {n: i for i, n in enumerate(names)}


def write_simplear_tokenizer(folder: Path, added: list[str] = ADDED) -> int:
    """The tokenizer files; returns len(tokenizer) (the image offset)."""
    return write_qwen_style_tokenizer(folder, simplear_vocab(added), EOS, list(added))


def qwen2_model(vocab_size: int, seed: int = 0, layers: int = 2, tied: bool = True):
    """transformers' Qwen2 with random weights (biases too); the image rows of the head get a larger
    spread so greedy decoding does not collapse onto one code."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         max_position_embeddings=32768, tie_word_embeddings=tied, use_sliding_window=False,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3 if p.ndim > 1 and "norm" not in name else 0.2)
            if name.endswith("norm.weight"):
                p.add_(1.0)
    assert model.model.layers[0].self_attn.q_proj.bias is not None and model.model.layers[0].self_attn.o_proj.bias is None
    return model


def write_simplear(folder: Path, seed: int = 0, tied: bool = True, architecture: str = "Qwen2ForCausalLM",
                   added: list[str] = ADDED, extra_vocab: int = 0, layers: int = 2):
    """A release-shaped SimpleAR folder; returns (folder, the transformers model it holds, len(tokenizer)).

    ``architecture``: what config.json names (the training script's class, Qwen2ForCausalLM, by
    default; "SimpARForCausalLM" as a re-saved release would name it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    offset = write_simplear_tokenizer(folder, added)
    model = qwen2_model(offset + CODES + extra_vocab, seed, layers, tied)
    model.save_pretrained(folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = [architecture]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder, model, offset
