"""Lumina-mGPT 2.0 through the nodes and the command line: a release-shaped folder and a MoVQGAN file."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import nodes  # noqa: E402
from helpers.node_fixtures import run_node as run, serving_models, write_tiny_models  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402

N = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_tiny_models(tmp_path_factory.mktemp("lumina2-models"), c2i=False, t2i=False, t5=False, lumina2=True)
    import dataclasses

    from helpers.tiny import save_official_vq, tiny_vq_config
    from zipar.vq.llamagen import VQModel

    # LlamaGen's VQ-8 layout with 16384 codes: Janus-Pro's and LlamaGen's VQs have as many as MoVQGAN
    save_official_vq(VQModel(dataclasses.replace(tiny_vq_config(8), codebook_size=16384)),
                     root / "zipar" / "janus-like-vq16.pt")
    with serving_models(root):
        yield root



def test_loaders_list_the_folder_and_the_movqgan_file(models_dir):
    ar = N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"][0]
    vq = N["ZipARLoadVQ"].INPUT_TYPES()["required"]["vq_model"][0]
    assert "Lumina-mGPT-2.0" in ar and "Lumina-mGPT-2.0" not in vq
    assert "movqgan_270M.ckpt" in vq and "movqgan_270M.ckpt" not in ar


def test_end_to_end_with_the_official_schedule_and_8bit_cache(models_dir):
    (model,) = run("ZipARLoadARModel", "Lumina-mGPT-2.0", 0, "auto", "default")
    assert model.image_size == 768
    (model,) = run("ZipARLoadARModel", "Lumina-mGPT-2.0", 64, "auto", "default", "default", "int8")  # an 8x8 grid: fast
    (vq,) = run("ZipARLoadVQ", "movqgan_270M.ckpt", "fp32", "default")
    assert (vq.vq.codebook_size, vq.vq.downsample) == (16384, 8)
    (cond,) = run("ZipARTextPrompt", "a red fox", "1:1", "")
    settings = dict(window=3, seed=0, cfg=4.0, temperature=1.0, top_k=4096, top_p=1.0, batch_size=1, preview=True)
    tokens, report = run("ZipARSampler", model, cond, **settings, vq=vq, cfg_schedule="official")
    assert tokens.grid == (8, 8) and report.startswith("window 3: 29 forward passes instead of 64")  # 8 + 7 * 3
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (1, 64, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    with pytest.raises(ZipARError, match="MoVQGAN"):
        run("ZipARLoadVQ", "Lumina-mGPT-2.0", "fp32", "default")
    with pytest.raises(ZipARError, match="10240"):
        run("ZipARLoadARModel", "Lumina-mGPT-2.0", 1024, "auto", "default")
    janus_like = run("ZipARLoadVQ", "janus-like-vq16.pt", "fp32", "default")[0]  # 16384 codes, not MoVQGAN
    with pytest.raises(ZipARError, match="SBER-MoVQGAN-270M codes"):
        run("ZipARSampler", model, cond, **settings, vq=janus_like)
    with pytest.raises(ZipARError, match="CFG schedule"):
        run("ZipARSampler", model, cond, **settings, vq=vq, cfg_schedule="linear")


def test_command_line_with_the_release_files(models_dir, tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image

    from zipar import api
    from zipar.cli import main

    folder, vq = models_dir / "zipar" / "Lumina-mGPT-2.0", models_dir / "zipar" / "movqgan_270M.ckpt"
    out, tokens = tmp_path / "fox.png", tmp_path / "fox.npy"
    assert main(["generate", "--ar-model", str(folder), "--vq-model", str(vq), "--prompt", "a red fox", "--window", "2",
                 "--image-size", "64", "--cfg", "7", "--cfg-schedule", "constant", "--kv-dtype", "int8",
                 "--out", str(out), "--tokens-out", str(tokens), "--device", "cpu"]) == 0
    assert "22 forward passes instead of 64" in capsys.readouterr().err  # 8 + 7 * 2: row 1 by the window rule
    # 8-bit pixels as the release writes them: ((x + 1) * 127.5).round(), i.e. rounded, not floored
    pixels = api.load_vq(vq, "cpu").decode_codes(torch.from_numpy(np.load(tokens)))[0] * 255
    saved = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    assert int((saved.float() - pixels).abs().max()) <= 1 and torch.equal(saved, pixels.round().to(torch.uint8))


def test_bulk_sampling_writes_the_same_images_at_any_batch(models_dir, tmp_path):
    from zipar.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue car\n")
    outs = []
    for batch in (1, 3):
        out = tmp_path / f"batch{batch}"
        assert main(["sample", "--ar-model", str(models_dir / "zipar" / "Lumina-mGPT-2.0"), "--vq-model",
                     str(models_dir / "zipar" / "movqgan_270M.ckpt"), "--prompts", str(prompts), "--per-class", "2",
                     "--image-size", "64", "--window", "3", "--seed", "5", "--shard-size", "3", "--batch", str(batch),
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("shard_*/*.png"))})
    assert len(outs[0]) == 4 and outs[0] == outs[1]
