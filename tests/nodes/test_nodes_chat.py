"""The nodes with Janus-Pro, Emu3-Gen and Lumina-mGPT: listing, loading, Text Prompt, sampling, decoding."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import nodes  # noqa: E402
from nodes import host  # noqa: E402
from helpers.node_fixtures import run_node as run, serving_models, write_tiny_models  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402

N = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_tiny_models(tmp_path_factory.mktemp("chat-models"), c2i=True, t2i=False, t5=False, chat=True)
    with serving_models(root):
        yield root



def sample(model, cond, vq, **overrides):
    settings = dict(window=2, seed=0, cfg=3.0, temperature=1.0, top_k=0, top_p=1.0, batch_size=1, preview=True)
    return run("ZipARSampler", model, cond, **{**settings, **overrides}, vq=vq)


def test_folders_are_listed_by_name_without_their_shards(models_dir):
    listed = host.list_models()
    assert "Janus-Pro/Janus-Pro-1B" in listed and "Emu3-Gen-hf" in listed  # models/Janus-Pro and models/zipar
    assert "Lumina-mGPT-7B-768" in listed and "chameleon-vqgan/vqgan.ckpt" in listed  # .ckpt: Meta's VQGAN
    assert not any(n.endswith("model.safetensors") for n in listed)
    ar = N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"][0]
    vq = N["ZipARLoadVQ"].INPUT_TYPES()["required"]["vq_model"][0]
    # folders by their configs: Janus-Pro and Emu3-Gen-hf hold both parts, Lumina-mGPT only the language model
    assert {"Janus-Pro/Janus-Pro-1B", "Emu3-Gen-hf", "Lumina-mGPT-7B-768"} <= set(ar)
    assert {"Janus-Pro/Janus-Pro-1B", "Emu3-Gen-hf", "chameleon-vqgan/vqgan.ckpt"} <= set(vq)
    assert "chameleon-vqgan/vqgan.ckpt" not in ar and "Lumina-mGPT-7B-768" not in vq


def test_janus_pro_end_to_end(models_dir):
    (model,) = run("ZipARLoadARModel", "Janus-Pro/Janus-Pro-1B", 0, "auto", "default")
    (vq,) = run("ZipARLoadVQ", "Janus-Pro/Janus-Pro-1B", "fp32", "default")
    assert model.image_size == 384  # 24x24 codes at Janus's 16 px per code (the tiny VQ itself draws 2 px per code)
    (cond,) = run("ZipARTextPrompt", "a red fox in the snow", "1:1", "")
    tokens, report = sample(model, cond, vq, window=8, cfg=5.0, batch_size=2)
    assert tokens.tokens.shape == (2, 24, 24) and report.startswith("window 8: 224 forward passes instead of 576")
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (2, 48, 48, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    (wide,) = run("ZipARTextPrompt", "a red fox", "16:9", "")
    with pytest.raises(ZipARError, match="square"):
        sample(model, wide, vq)
    with pytest.raises(ZipARError, match="Text Prompt"):
        sample(model, run("ZipARClassID", 3)[0], vq)


def test_emu3_end_to_end_with_an_aspect_ratio(models_dir):
    (model,) = run("ZipARLoadARModel", "Emu3-Gen-hf", 64, "auto", "default")
    (vq,) = run("ZipARLoadVQ", "Emu3-Gen-hf", "fp32", "default")
    assert vq.vq.downsample == 8
    (cond,) = run("ZipARTextPrompt", "a red fox", "2:1", "blurry")
    tokens, report = sample(model, cond, vq, window=3, top_k=20)
    assert tokens.grid == (6, 11)  # 64 x 64 pixels of area at 2:1, 8 pixels per token
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (1, 48, 88, 3)
    with pytest.raises(ZipARError, match="window must be between 1 and 11"):
        sample(model, cond, vq, window=12)


def test_lumina_mgpt_end_to_end(models_dir):
    (model,) = run("ZipARLoadARModel", "Lumina-mGPT-7B-768", 0, "auto", "default")
    assert model.image_size == 768  # from the folder name
    (model,) = run("ZipARLoadARModel", "Lumina-mGPT-7B-768", 128, "auto", "default")  # a 8x8 grid keeps the test fast
    (vq,) = run("ZipARLoadVQ", "chameleon-vqgan/vqgan.ckpt", "fp32", "default")
    assert (vq.vq.codebook_size, vq.vq.downsample) == (32, 16)
    (cond,) = run("ZipARTextPrompt", "a red fox", "2:1", "")
    tokens, report = sample(model, cond, vq, window=3, cfg=4.0, top_k=2000)
    assert tokens.grid == (6, 10)  # 128 px budget at 2:1: the crop list's nearest shape is 160 x 96 px (5:3)
    # Lumina-mGPT's official ZipAR starts row 1 by the window rule: W + (H-1) * window = 10 + 5 * 3
    assert report.startswith("window 3: 25 forward passes instead of 60")
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (1, 96, 160, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    with pytest.raises(ZipARError, match="Chameleon VQGAN"):
        run("ZipARLoadVQ", "Lumina-mGPT-7B-768", "fp32", "default")
    with pytest.raises(ZipARError, match="multiple of 32"):
        run("ZipARLoadARModel", "Lumina-mGPT-7B-768", 200, "auto", "default")
    with pytest.raises(ZipARError, match="not an AR"):
        run("ZipARLoadARModel", "chameleon-vqgan/vqgan.ckpt", 0, "auto", "default")


def test_command_line_with_a_lumina_folder(models_dir, tmp_path, capsys):
    from zipar.cli import main

    folder, vq = models_dir / "zipar" / "Lumina-mGPT-7B-768", models_dir / "zipar" / "chameleon-vqgan" / "vqgan.ckpt"
    out = tmp_path / "fox.png"
    tokens = tmp_path / "fox.npy"
    assert main(["generate", "--ar-model", str(folder), "--vq-model", str(vq), "--prompt", "a red fox", "--window", "2",
                 "--image-size", "64", "--out", str(out), "--tokens-out", str(tokens), "--device", "cpu"]) == 0
    assert "10 forward passes instead of 16" in capsys.readouterr().err and out.is_file()  # 4 + 3 * 2: row 1 by window
    # 8-bit pixels as Lumina-mGPT writes them: floor(255 * x), not rounded
    import numpy as np
    import torch
    from PIL import Image

    from zipar import api

    pixels = api.load_vq(vq, "cpu").decode_codes(torch.from_numpy(np.load(tokens)))[0] * 255
    saved = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    assert torch.equal(saved, pixels.to(torch.uint8)) and not torch.equal(saved, pixels.round().to(torch.uint8))


def test_text_prompt_with_a_llamagen_model_says_which_node_to_use(models_dir):
    (model,) = run("ZipARLoadARModel", "c2i_L_384.pt", 64, "auto", "default")
    (cond,) = run("ZipARTextPrompt", "a red fox", "1:1", "")
    with pytest.raises(ZipARError, match="ImageNet Class"):
        sample(model, cond, None)
    with pytest.raises(ZipARError, match="prompt is empty"):
        run("ZipARTextPrompt", "  ", "1:1", "")


def test_command_line_with_a_janus_folder(models_dir, tmp_path, capsys):
    from zipar.cli import main

    folder = str(models_dir / "Janus-Pro" / "Janus-Pro-1B")
    out = tmp_path / "fox.png"
    assert main(["generate", "--ar-model", folder, "--vq-model", folder, "--prompt", "a red fox", "--window", "8",
                 "--cfg", "5", "--seed", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert "224 forward passes instead of 576" in capsys.readouterr().err and out.is_file()
    assert main(["generate", "--ar-model", folder, "--out", str(tmp_path / "x.png"), "--vq-model", folder]) == 2
    assert "give --prompt" in capsys.readouterr().err


@pytest.mark.parametrize("folder,extra", [("Janus-Pro/Janus-Pro-1B", []), ("zipar/Emu3-Gen-hf", ["--image-size", "32"])])
def test_janus_and_emu3_pngs_are_truncated_like_their_official_writers(models_dir, tmp_path, capsys, folder, extra):
    """Janus-Pro's and Emu3's official code clip pixel * 255 and cast to uint8 (floor), as Lumina-mGPT's does;
    LlamaGen's sampler rounds."""
    import numpy as np
    import torch
    from PIL import Image

    from zipar import api
    from zipar.cli import main

    path = models_dir / folder
    out, tokens = tmp_path / "img.png", tmp_path / "img.npy"
    assert main(["generate", "--ar-model", str(path), "--vq-model", str(path), "--prompt", "a red fox", "--window", "2",
                 *extra, "--out", str(out), "--tokens-out", str(tokens), "--device", "cpu"]) == 0
    vq = api.load_vq(path, "cpu")
    assert vq.truncates_to_uint8
    pixels = vq.decode_codes(torch.from_numpy(np.load(tokens)))[0] * 255
    saved = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    assert torch.equal(saved, pixels.to(torch.uint8)) and not torch.equal(saved, pixels.round().to(torch.uint8))


def test_text_prompt_quality_suffix_switch(models_dir):
    (on,) = run("ZipARTextPrompt", "a red fox", "1:1", "")
    (off,) = run("ZipARTextPrompt", "a red fox", "1:1", "", quality_suffix=False)
    assert on.quality_suffix is True and off.quality_suffix is False
    optional = N["ZipARTextPrompt"].INPUT_TYPES()["optional"]
    assert optional["quality_suffix"][0] == "BOOLEAN" and optional["quality_suffix"][1]["default"] is True
    assert "film grained" in optional["quality_suffix"][1]["tooltip"]
    (model,) = run("ZipARLoadARModel", "Emu3-Gen-hf", 32, "auto", "default")
    emu3 = model.model
    grid = emu3.grid_for(on, 32)
    with_suffix, without = emu3.prompt_rows(on, False, grid)[0], emu3.prompt_rows(off, False, grid)[0]
    assert emu3.tokenizer.decode(with_suffix[1:-5]) != emu3.tokenizer.decode(without[1:-5]) == "a red fox"
    assert len(with_suffix) > len(without)
