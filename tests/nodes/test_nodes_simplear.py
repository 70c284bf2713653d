"""SimpleAR through the nodes and the command line: a release-shaped folder and a Cosmos DV8x16x16 folder."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import nodes  # noqa: E402
from helpers.node_fixtures import run_node as run, serving_models, write_tiny_models  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402

N = nodes.NODE_CLASS_MAPPINGS
COSMOS = "Cosmos-1.0-Tokenizer-DV8x16x16"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_tiny_models(tmp_path_factory.mktemp("simplear-models"), c2i=False, t2i=False, t5=False,
                             simplear=True)
    with serving_models(root):
        yield root



def test_loaders_list_the_model_folder_and_the_tokenizer_folder(models_dir):
    ar = N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"][0]
    vq = N["ZipARLoadVQ"].INPUT_TYPES()["required"]["vq_model"][0]
    assert "SimpleAR-1.5B-RL" in ar and "SimpleAR-1.5B-RL" not in vq
    assert COSMOS in vq and COSMOS not in ar  # a folder without config.json, told by its decoder.jit
    assert not any(n.endswith(".jit") for n in ar + vq)  # the archives inside are not listed on their own


def test_end_to_end_with_the_8bit_cache(models_dir):
    (model,) = run("ZipARLoadARModel", "SimpleAR-1.5B-RL", 0, "auto", "default")
    assert model.image_size == 1024
    (model,) = run("ZipARLoadARModel", "SimpleAR-1.5B-RL", 64, "auto", "default", "default", "int8")  # 4x4 codes
    (vq,) = run("ZipARLoadVQ", COSMOS, "fp32", "default")
    assert (vq.vq.codebook_size, vq.vq.downsample) == (64000, 16)
    (cond,) = run("ZipARTextPrompt", "a red fox", "1:1", "")
    settings = dict(window=2, seed=0, cfg=6.0, temperature=1.0, top_k=0, top_p=1.0, batch_size=1, preview=True)
    tokens, report = run("ZipARSampler", model, cond, **settings, vq=vq)
    assert tokens.grid == (4, 4) and report.startswith("window 2: 12 forward passes instead of 16")  # 2*4 + 2*2
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (1, 64, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    with pytest.raises(ZipARError, match="square"):
        run("ZipARSampler", model, run("ZipARTextPrompt", "a red fox", "16:9", "")[0], **settings, vq=vq)


def test_command_line_with_the_release_files(models_dir, tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image

    from zipar import api
    from zipar.cli import main

    folder, vq = models_dir / "zipar" / "SimpleAR-1.5B-RL", models_dir / "zipar" / COSMOS
    out, tokens = tmp_path / "fox.png", tmp_path / "fox.npy"
    assert main(["generate", "--ar-model", str(folder), "--vq-model", str(vq), "--prompt", "a red fox", "--window", "2",
                 "--image-size", "64", "--out", str(out), "--tokens-out", str(tokens), "--device", "cpu"]) == 0
    assert "12 forward passes instead of 16" in capsys.readouterr().err
    # 8-bit pixels as torchvision's save_image writes them: rounded
    pixels = api.load_vq(vq, "cpu").decode_codes(torch.from_numpy(np.load(tokens)))[0] * 255
    saved = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    assert torch.equal(saved, pixels.round().to(torch.uint8))


def test_speculative_and_bulk_sampling(models_dir, tmp_path):
    """Greedy speculative decoding gives NTP's tokens (this random tiny model's drafts are never right, so not
    in fewer forwards); bulk sampling writes the same images at any batch."""
    import torch

    from zipar import api
    from zipar.cli import main
    from zipar.core.loop import generate
    from zipar.core.sampling import SamplingOptions
    from zipar.families.base import Condition

    folder = models_dir / "zipar" / "SimpleAR-1.5B-RL"
    model = api.load_ar_model(folder, "cpu", "fp32")
    cond, greedy = Condition(prompts=["a red fox"]), SamplingOptions(cfg=6.0, greedy=True)
    ntp = generate(model, cond, (8, 8), 8, greedy)
    spec = generate(model, cond, (8, 8), 8, greedy, speculative=True, draft_length=3)
    assert spec.speculative and torch.equal(spec.tokens, ntp.tokens)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue car\n")
    outs = []
    for batch in (1, 3):
        out = tmp_path / f"batch{batch}"
        assert main(["sample", "--ar-model", str(folder), "--vq-model", str(models_dir / "zipar" / COSMOS),
                     "--prompts", str(prompts), "--per-class", "2", "--image-size", "64", "--window", "2", "--seed", "5",
                     "--shard-size", "3", "--batch", str(batch), "--device", "cpu", "--out", str(out), "--quiet"]) == 0
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("shard_*/*.png"))})
    assert len(outs[0]) == 4 and outs[0] == outs[1]
