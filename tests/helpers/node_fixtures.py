"""Tiny models saved under the file names the shipped workflows use, in ComfyUI's folder layout.

    <models>/zipar/c2i_L_384.pt            tiny LlamaGen c2i GPT (1000 classes, vocabulary 64)
    <models>/zipar/vq_ds16_c2i.pt          tiny VQ-16 (codebook 64)
    <models>/zipar/t2i_XL_stage2_512.pt    tiny LlamaGen t2i GPT (120 caption tokens of width 24)
    <models>/zipar/vq_ds16_t2i.pt          tiny VQ-16 (codebook 64)
    <models>/text_encoders/flan-t5-xl/     tiny T5 encoder + word-level tokenizer (width 24)
    <models>/Janus-Pro/Janus-Pro-1B/       tiny Janus-Pro, transformers layout (24x24 codes as released, 48 px)
    <models>/zipar/Emu3-Gen-hf/            tiny Emu3-Gen with its VQ, transformers layout (downsample 8)
    <models>/zipar/Lumina-mGPT-7B-768/     tiny Lumina-mGPT (Chameleon, 32 image tokens; 768 px = 48x48 tokens)
    <models>/zipar/chameleon-vqgan/        tiny Chameleon VQGAN: vqgan.ckpt + vqgan.yaml (32 codes, downsample 16)

Run as a script to write them somewhere, e.g. for a real ComfyUI:
    python tests/helpers/node_fixtures.py /tmp/zipar-models
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

T5_WORDS = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "red", "fox", "in", "snow", "the", "dog", "blue", "car"]
T5_WIDTH = 24


def write_tiny_t5(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(T5_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    # transformers 5 names its own backend class here; name the class both 4.x and 5.x know,
    # so a ComfyUI venv with transformers 4 reads the folder too.
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2))
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(T5_WORDS), d_model=T5_WIDTH, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      feed_forward_proj="gated-gelu")
    T5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def write_tiny_models(models_dir: Path, c2i: bool = True, t2i: bool = True, t5: bool = True, chat: bool = False,
                      lumina2: bool = False, simplear: bool = False) -> Path:
    """Write the tiny files (as the official releases store them) and return ``models_dir``.

    ``lumina2``: also Lumina-mGPT 2.0 (a 22 MB folder: its vocabulary is 171k rows) with a MoVQGAN file;
    ``simplear``: SimpleAR (a Qwen2 with 64000 code rows) with a Cosmos DV8x16x16 folder (traced archives)."""
    from helpers.tiny import make_tiny_vq, save_official_vq
    from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt

    models_dir = Path(models_dir)
    zipar_dir = models_dir / "zipar"
    zipar_dir.mkdir(parents=True, exist_ok=True)
    if c2i:
        save_official_gpt(make_tiny_gpt("c2i", seed=1, num_classes=1000), zipar_dir / "c2i_L_384.pt")
        save_official_vq(make_tiny_vq(seed=2), zipar_dir / "vq_ds16_c2i.pt")
    if t2i:
        save_official_gpt(make_tiny_gpt("t2i", seed=3, prefix_len=120, caption_dim=T5_WIDTH), zipar_dir / "t2i_XL_stage2_512.pt")
        save_official_vq(make_tiny_vq(seed=4), zipar_dir / "vq_ds16_t2i.pt")
    if t5:
        write_tiny_t5(models_dir / "text_encoders" / "flan-t5-xl")
    if chat:
        from helpers.chameleon_vq_fixtures import write_chameleon_vqgan
        from helpers.chat_fixtures import write_emu3_hf, write_janus_hf
        from helpers.lumina_fixtures import CODES, write_lumina

        write_janus_hf(models_dir / "Janus-Pro" / "Janus-Pro-1B", grid=24)
        write_emu3_hf(zipar_dir / "Emu3-Gen-hf", vq_levels=4)
        write_lumina(zipar_dir / "Lumina-mGPT-7B-768")
        write_chameleon_vqgan(zipar_dir / "chameleon-vqgan", ch_mult=(1, 1, 1, 1, 1), attn_resolutions=(), n_embed=CODES,
                              resolution=512, seed=5)
    if lumina2:
        from helpers.lumina2_fixtures import MOVQ_8X, write_lumina2
        from helpers.movq_fixtures import tiny_state_dict, write_movqgan

        write_lumina2(zipar_dir / "Lumina-mGPT-2.0")
        write_movqgan(zipar_dir / "movqgan_270M.ckpt", tiny_state_dict(MOVQ_8X))
    if simplear:
        from helpers.cosmos_fixtures import make_tokenizer, write_archives
        from helpers.simplear_fixtures import write_simplear

        write_simplear(zipar_dir / "SimpleAR-1.5B-RL")
        write_archives(zipar_dir / "Cosmos-1.0-Tokenizer-DV8x16x16", make_tokenizer(seed=3))
    return models_dir


@contextmanager
def serving_models(root: Path):
    """The nodes list and load from ``root`` (instead of ComfyUI's folders) inside the block; the
    previous folder and an empty node-side model cache afterwards."""
    from nodes import cache, host

    previous = host._models_dir_override
    host.set_models_dir(root)
    host.forget_modules()
    try:
        yield root
    finally:
        host.set_models_dir(previous)
        cache.clear_all()


def run_node(name: str, *args, **kwargs):
    """Call node ``name`` (its class name in NODE_CLASS_MAPPINGS) as ComfyUI would: a fresh instance, its FUNCTION."""
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)(*args, **kwargs)


def extra_model_paths_yaml(models_dir: Path, custom_nodes: Path | None = None) -> str:
    """An extra_model_paths.yaml pointing ComfyUI's zipar, Janus-Pro and text_encoders folders (and
    optionally an extra custom_nodes folder) at ``models_dir``."""
    lines = ["zipar_tests:", f"    base_path: {Path(models_dir).resolve()}", "    zipar: zipar", "    Janus-Pro: Janus-Pro",
             "    text_encoders: text_encoders"]
    if custom_nodes is not None:
        lines.append(f"    custom_nodes: {Path(custom_nodes).resolve()}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(root), str(root / "tests")]
    out = write_tiny_models(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models"), chat=True, lumina2=True,
                            simplear=True)
    (out / "extra_model_paths.yaml").write_text(extra_model_paths_yaml(out))
    print(out)
