"""Tiny Janus-Pro folders in both published layouts, built from transformers configs (no download).

    write_janus_hf(folder)        JanusForConditionalGeneration.save_pretrained + tokenizer
    write_janus_original(folder)  the same weights under deepseek-ai's original key names
                                  (pytorch_model.bin, "multi_modality" config.json)

The tokenizer is word-level (whitespace split) with the special tokens the real one has, so
the prompt recipe runs unchanged. The VQ has num_patches 4 (a 4x4 token grid, 64 px).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

WORDS = ["<|User|>:", "<|Assistant|>:", "a", "red", "fox", "dog", "in", "the", "snow", "blue", "car", "cat"]
BOS, PAD, BOI, EOS = "<｜begin▁of▁sentence｜>", "<｜▁pad▁｜>", "<begin_of_image>", "<｜end▁of▁sentence｜>"
GRID = 4


def _portable_tokenizer_config(config_file: Path) -> None:
    """As the hub's files are written (by transformers 4.x): a class both 4.x and 5.x know, and
    ``additional_special_tokens`` (5.x writes ``extra_special_tokens``, which 4.57 cannot read)."""
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(config.get("extra_special_tokens"), list):
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_file.write_text(json.dumps(config, indent=2))


def write_tokenizer(folder: Path, specials: list[str], words: list[str] = WORDS, bos: str = BOS, pad: str = PAD,
                    eos: str = EOS) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", *specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>",
                                   additional_special_tokens=[s for s in specials if s not in (bos, eos, pad)])
    fast.save_pretrained(folder)
    _portable_tokenizer_config(folder / "tokenizer_config.json")


def write_qwen_style_tokenizer(folder: Path, vocab: dict[str, int], eos: str, specials: list[str]) -> int:
    """A word-level stand-in for a Qwen BPE with its conventions (Lumina-mGPT 2.0, SimpleAR): ``specials``
    are special tokens, EOS pads, BOS is unset. Replaces any tokenizer files there; returns len(tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, unk_token="<unk>",
                                   additional_special_tokens=specials)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / f).unlink(missing_ok=True)
    fast.save_pretrained(folder)
    _portable_tokenizer_config(folder / "tokenizer_config.json")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["bos_token"] = None  # Qwen tokenizers name no BOS
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(fast)


def janus_config(vocab: int = 40, hidden: int = 64, layers: int = 2, grid: int = GRID):
    from transformers import JanusConfig

    return JanusConfig(
        text_config=dict(model_type="llama", hidden_size=hidden, intermediate_size=96, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab, rms_norm_eps=1e-6),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           image_size=grid * 16, patch_size=16, projection_dim=hidden, num_image_tokens=grid * grid),
        vq_config=dict(embed_dim=4, num_embeddings=50, base_channels=32, channel_multiplier=[1, 1], num_res_blocks=1,
                       latent_channels=8, num_patches=grid, projection_dim=hidden, image_token_embed_dim=hidden),
    )


def write_janus_hf(folder: Path, seed: int = 0, grid: int = GRID) -> Path:
    """A tiny deepseek-community/Janus-Pro-1B look-alike (transformers layout); ``grid`` 24 as released."""
    from transformers import JanusForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder, [BOS, EOS, PAD, BOI, "<end_of_image>"])
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(janus_config(grid=grid)).eval()
    with torch.no_grad():  # visible differences between codes and between layers
        for name, p in model.named_parameters():
            if "generation" in name or "language_model" in name:
                p.normal_(0, 0.3 if p.ndim > 1 else 0.1)
                if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                    p.add_(1.0)
    model.save_pretrained(folder)
    ids = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    gen = folder / "generation_config.json"
    data = json.loads(gen.read_text()) if gen.is_file() else {}
    data.update(pad_token_id=ids[PAD], bos_token_id=ids[BOS], eos_token_id=ids[EOS])
    gen.write_text(json.dumps(data, indent=2))
    return folder


# transformers name -> deepseek-ai original name (the inverse of the loader's map, written separately)
_TO_ORIGINAL = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.generation_embeddings\.", "gen_embed."),
    (r"^model\.generation_aligner\.fc1\.", "gen_aligner.layers.0."),
    (r"^model\.generation_aligner\.hidden_layers\.0\.", "gen_aligner.layers.2."),
    (r"^model\.generation_head\.proj_out\.", "gen_head.output_mlp_projector."),
    (r"^model\.generation_head\.vision_head\.", "gen_head.vision_head."),
    (r"^model\.vqmodel\.", "gen_vision_model."),
    (r"^model\.vision_model\.", "vision_model."),
    (r"^model\.aligner\.", "aligner."),
    (r"\.(encoder|decoder)\.(?:down|up)\.(\d+)\.block\.", r".\1.conv_blocks.\2.res."),
    (r"\.(encoder|decoder)\.(?:down|up)\.(\d+)\.", r".\1.conv_blocks.\2."),
    (r"\.mid\.block_1\.", ".mid.0."),
    (r"\.mid\.attn_1\.", ".mid.1."),
    (r"\.mid\.block_2\.", ".mid.2."),
]


def to_original_key(key: str) -> str:
    for pattern, repl in _TO_ORIGINAL:
        key = re.sub(pattern, repl, key)
    return key


def write_janus_original(folder: Path, hf_folder: Path, shards: int = 1) -> Path:
    """The same model as deepseek-ai ships it: original keys in pickled .bin shard(s)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {to_original_key(k): v for k, v in load_file(str(hf_folder / "model.safetensors")).items()}
    if "language_model.lm_head.weight" not in sd:  # tied or dropped by save_pretrained
        sd["language_model.lm_head.weight"] = sd["language_model.model.embed_tokens.weight"].clone()
    if shards == 1:
        torch.save(sd, folder / "pytorch_model.bin")
    else:
        keys = sorted(sd)
        weight_map = {}
        for i in range(shards):
            name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            part = {k: sd[k] for k in keys[i::shards]}
            torch.save(part, folder / name)
            weight_map.update({k: name for k in part})
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    hf = AutoConfig.from_pretrained(str(hf_folder))
    text = hf.text_config.to_dict()
    language = {k: text[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                     "num_hidden_layers", "vocab_size", "max_position_embeddings", "rms_norm_eps")}
    language["model_type"] = "llama"
    vq = hf.vq_config
    config = {
        "model_type": "multi_modality",
        "language_config": language,
        "gen_vision_config": {"cls": "VQ-16", "params": {"image_token_size": vq.num_embeddings, "n_embed": vq.embed_dim}},
        "gen_aligner_config": {"cls": "MlpProjector", "params": {"depth": 2, "input_dim": vq.embed_dim,
                                                                  "n_embed": text["hidden_size"], "projector_type": "mlp_gelu"}},
        "gen_head_config": {"cls": "vision_head", "params": {"image_token_embed": vq.image_token_embed_dim,
                                                              "image_token_size": vq.num_embeddings, "n_embed": text["hidden_size"]}},
        "vision_config": {"cls": "CLIPVisionTower", "params": {"image_size": GRID * 16, "model_name": "siglip_large_patch16_384"}},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (hf_folder / name).is_file():
            shutil.copy(hf_folder / name, folder / name)
    return folder


# ----------------------------------------------------------------------------- Emu3-Gen

EMU3_SPECIALS = ["<|extra_203|>", "<|extra_204|>", "<|image start|>", "<|image token|>", "<|extra_200|>",
                 "<|extra_201|>", "<|image end|>", "<image>", "<|endoftext|>"]
EMU3_WORDS = ["a", "red", "fox", "in", "the", "snow", "blue", "car", "lowres", "blurry", "masterpiece,", "film",
              "grained,", "best", "quality.", "*", *[str(d) for d in range(10)]]
EMU3_CODES = 64  # the tiny VQ's codebook (tests/emu3_vq_fixtures.TINY_VQ)


def emu3_vocab() -> dict[str, int]:
    names = ["<unk>", *EMU3_SPECIALS, *EMU3_WORDS]
    # visual tokens placed after the text, in a shuffled order: codes map by name, not by offset
    codes = list(range(EMU3_CODES))
    torch.manual_seed(7)
    order = torch.randperm(EMU3_CODES).tolist()
    names += [f"<|visual token {codes[i]:06d}|>" for i in order]
    return {n: i for i, n in enumerate(names)}


def write_emu3_tokenizer(folder: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = emu3_vocab()
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.Split("*", "isolated")])
    specials = EMU3_SPECIALS + [n for n in vocab if n.startswith("<|visual token")]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|extra_203|>", eos_token="<|extra_204|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>", additional_special_tokens=specials)
    fast.save_pretrained(folder)
    _portable_tokenizer_config(folder / "tokenizer_config.json")
    return vocab


def write_emu3_hf(folder: Path, seed: int = 0, vq_levels: int = 3) -> Path:
    """A tiny BAAI/Emu3-Gen-hf look-alike: Emu3ForConditionalGeneration.save_pretrained + tokenizer.

    ``vq_levels`` 3 gives a downsample-4 VQ (the unit tests), 4 the release's 8 (the workflows)."""
    from helpers.emu3_vq_fixtures import TINY_VQ, _randomise_batchnorm
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_emu3_tokenizer(folder)
    text = dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=9216, rope_theta=1e6, rms_norm_eps=1e-5,
                pad_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|extra_203|>"], eos_token_id=vocab["<|extra_204|>"])
    torch.manual_seed(seed)
    vq = dict(TINY_VQ, channel_multiplier=[1, 1, 2, 2][:vq_levels] if vq_levels <= 4 else TINY_VQ["channel_multiplier"])
    model = Emu3ForConditionalGeneration(Emu3Config(vq_config=vq, text_config=text, vocabulary_map=vocab)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "text_model" in name or "lm_head" in name:
                p.normal_(0, 0.3 if p.ndim > 1 else 0.1)
                if name.endswith("norm.weight"):
                    p.add_(1.0)
        _randomise_batchnorm(model.model.vqmodel, torch.Generator().manual_seed(seed + 1))
    model.save_pretrained(folder)
    return folder


def write_emu3_original(folder: Path, hf_folder: Path) -> Path:
    """The language model as BAAI/Emu3-Gen ships it: ``model.*`` + ``lm_head``, model_type "Emu3", no VQ."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {}
    for f in sorted(hf_folder.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    out = {}
    for k, v in sd.items():
        for hf_prefix, orig in (("model.text_model.", "model."), ("text_model.model.", "model."),
                                ("text_model.lm_head.", "lm_head."), ("lm_head.", "lm_head.")):
            if k.startswith(hf_prefix):
                out[orig + k[len(hf_prefix):]] = v.contiguous()
                break
    save_file(out, str(folder / "model.safetensors"))
    text = AutoConfig.from_pretrained(str(hf_folder)).text_config.to_dict()
    config = {k: text[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                   "num_hidden_layers", "vocab_size", "max_position_embeddings", "rms_norm_eps")}
    config.update(model_type="Emu3", architectures=["Emu3ForCausalLM"], rope_theta=1e6, image_area=720 * 720,
                  auto_map={"AutoConfig": "configuration_emu3.Emu3Config", "AutoModelForCausalLM": "modeling_emu3.Emu3ForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (hf_folder / name).is_file():
            shutil.copy(hf_folder / name, folder / name)
    return folder
