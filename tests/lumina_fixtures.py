"""Tiny Lumina-mGPT folders: a random Chameleon saved by transformers, with a release-like vocabulary.

    write_lumina(folder)   ChameleonForConditionalGeneration.save_pretrained + tokenizer files;
                           the VQ weights transformers adds are dropped, as in the release

The vocabulary keeps the release's token names (IMGIMG...Z image tokens, <racm3:break>,
<eoss>, <reserved08706>, <reserved08799>, size tokens <reserved088NN>) but not its ids:
image tokens sit in a shuffled order after the specials, so only a name-based mapping works.
"""
from __future__ import annotations

from pathlib import Path

import torch

from chat_fixtures import _portable_tokenizer_config

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
    model = ChameleonForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vqmodel" in name:
                continue
            p.normal_(0, 0.3 if p.ndim > 1 and "norm" not in name else 0.2)
            if name.endswith("norm.weight"):
                p.add_(1.0)
    return model


def write_lumina(folder: Path, seed: int = 0, swin: bool = False, keep_vq_weights: bool = False, layers: int = 2):
    """A tiny Lumina-mGPT look-alike folder; returns (folder, the transformers model it was saved from)."""
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = lumina_vocab()
    write_lumina_tokenizer(folder, vocab)
    model = chameleon_model(vocab, seed, swin, layers)
    model.save_pretrained(folder)
    if not keep_vq_weights:
        for f in folder.glob("*.safetensors"):
            sd = load_file(str(f))
            save_file({k: v for k, v in sd.items() if "vqmodel" not in k}, str(f), metadata={"format": "pt"})
    return folder, model
