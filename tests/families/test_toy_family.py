"""A fifth family added the way docs/engine.md's checklist says (a family module, this test, its
fixture): the API, the command line and the ComfyUI nodes all run it with no other file edited."""
from __future__ import annotations

import pytest
import torch

import nodes
from helpers import toy_family
from helpers.tiny import make_tiny_vq, save_official_vq
from nodes import cache, host
from zipar import api
from zipar.cli import main
from zipar.core.loop import expected_passes, generate
from zipar.core.sampling import SamplingOptions
from zipar.errors import ConditionMismatch, ZipARError
from zipar.families.registry import families

N = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-models")
    toy_family.write_toy_folder(root / "zipar" / "ZipAR-Toy-64")
    save_official_vq(make_tiny_vq(seed=0), root / "zipar" / "vq_ds16_c2i.pt")  # 64 codes, 16 px per code
    return root


def test_the_family_is_registered_by_its_module_alone():
    assert toy_family.ToyModel in families()
    assert {f.family for f in families()} >= {"llamagen", "janus-pro", "emu3", "lumina-mgpt", "zipar-toy"}


def test_api_loads_prepares_and_generates(models_dir):
    model = api.load_ar_model(models_dir / "zipar" / "ZipAR-Toy-64", "cpu")
    vq = api.load_vq(models_dir / "zipar" / "vq_ds16_c2i.pt", "cpu")
    assert isinstance(model, toy_family.ToyModel) and model.native_image_size == 64
    request = api.prepare(model, api.class_condition([1, 3]), vq=vq)
    assert request.grid == (4, 4) and request.defaults.cfg == 2.0
    greedy = SamplingOptions(cfg=2.0, greedy=True)
    for window in (4, 2, 1):
        result = generate(model, request.condition, request.grid, window, greedy)
        assert result.forward_passes == expected_passes(request.grid, window) and result.tokens.shape == (2, 4, 4)
    again = generate(model, request.condition, request.grid, 2, greedy)
    assert torch.equal(again.tokens, generate(model, request.condition, request.grid, 2, greedy).tokens)
    with pytest.raises(ConditionMismatch, match="ZipAR-Toy draws from class ids, not a text prompt"):
        api.prepare(model, api.prompt_condition(["a fox"]))
    with pytest.raises(ZipARError, match="class id 9 is out of range"):
        api.prepare(model, api.class_condition([9]))


def test_command_line(models_dir, tmp_path, capsys):
    folder, vq = models_dir / "zipar" / "ZipAR-Toy-64", models_dir / "zipar" / "vq_ds16_c2i.pt"
    out = tmp_path / "toy.png"
    assert main(["generate", "--ar-model", str(folder), "--vq-model", str(vq), "--class-id", "2", "--window", "2",
                 "--out", str(out)]) == 0
    assert "ZipAR-Toy (4 classes, 64 codes): 12 forward passes instead of 16" in capsys.readouterr().err
    assert out.is_file()
    assert main(["generate", "--ar-model", str(folder), "--prompt", "a fox", "--stats-json", str(tmp_path / "s.json")]) == 2
    assert "ZipAR-Toy draws from class ids, not a text prompt; give --class-id" in capsys.readouterr().err


def test_comfyui_nodes(models_dir):
    host.set_models_dir(models_dir)
    host.forget_modules()
    try:
        assert "ZipAR-Toy-64" in N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"][0]
        (model,) = N["ZipARLoadARModel"]().load("ZipAR-Toy-64", 0, "fp32", "cpu")
        (vq,) = N["ZipARLoadVQ"]().load("vq_ds16_c2i.pt", "fp32", "cpu")
        (cond,) = N["ZipARClassID"]().encode(3)
        tokens, report = N["ZipARSampler"]().sample(model, cond, 2, 0, 2.0, 1.0, 0, 1.0, 2, True, vq)
        assert tokens.tokens.shape == (2, 4, 4) and report.startswith("window 2: 12 forward passes instead of 16")
        (image,) = N["ZipARVQDecode"]().decode(vq, tokens)
        assert image.shape == (2, 64, 64, 3)
        (prompt,) = N["ZipARTextPrompt"]().encode("a fox", "1:1")
        with pytest.raises(ZipARError, match="draws from class ids, not a text prompt; connect a ZipAR ImageNet Class"):
            N["ZipARSampler"]().sample(model, prompt, 2, 0, 2.0, 1.0, 0, 1.0, 1, True, vq)
    finally:
        host.set_models_dir(None)
        cache.clear_all()
