"""Values must be finite and sane, and every library error a user can cause is said in the
project's own words: one ZipARError naming the problem and the fix, never a traceback."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nodes
from nodes.datatypes import Tokens
from helpers.tiny import make_tiny_vq, save_official_vq
from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar import api
from zipar.cli import main
from zipar.conditions import caption_condition
from zipar.core.loop import generate
from zipar.errors import ZipARError
from zipar.families.llamagen import LlamaGenModel
from zipar.core.sampling import SamplingOptions

N = nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    vq = make_tiny_vq(seed=0)
    save_official_vq(vq, d / "vq_ds16_c2i.pt")
    gpt = make_tiny_gpt("c2i", seed=0, vocab_size=vq.codebook_size)
    save_official_gpt(gpt, d / "c2i_T_64.pt")
    return d


def cli_error(argv, capsys) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- finite sampling settings

@pytest.mark.parametrize("field", ["cfg", "temperature", "top_p"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "4", None])
@pytest.mark.parametrize("greedy", [False, True])
def test_sampling_settings_must_be_finite_numbers(field, value, greedy):
    with pytest.raises(ZipARError, match="must be a finite number"):
        SamplingOptions(**{field: value}, greedy=greedy).validate()


def test_top_k_must_be_a_whole_number():
    for bad in (2.5, "10", None):
        with pytest.raises(ZipARError, match="top-k must be a whole number"):
            SamplingOptions(top_k=bad).validate()
    SamplingOptions(top_k=np.int64(5)).validate()


@pytest.mark.parametrize("flag,value", [("--cfg", "nan"), ("--temperature", "inf"), ("--cfg", "-inf"), ("--top-p", "nan")])
def test_cli_refuses_non_finite_settings_even_with_greedy(files, tmp_path, capsys, flag, value):
    out = tmp_path / "s.json"
    err = cli_error(["generate", "--ar-model", files / "c2i_T_64.pt", "--class-id", 1, "--image-size", 64, "--greedy",
                     f"{flag}={value}", "--stats-json", out], capsys)
    assert "must be a finite number" in err and not out.exists()


def test_nan_weights_stop_at_the_first_logits(files):
    model = api.load_ar_model(files / "c2i_T_64.pt", "cpu")
    with torch.no_grad():
        model.gpt.output.weight[0, 0] = math.nan
    for options in (SamplingOptions(cfg=1.0, greedy=True), SamplingOptions(cfg=4.0)):
        with pytest.raises(ZipARError, match="first logits are NaN or infinite: its weights are corrupt, or half "
                                             "precision overflowed; try bf16 or fp32"):
            generate(model, api.class_condition([1]), (4, 4), 2, options)


# ----------------------------------------------------------------------------- library errors in our words

def test_checkpoint_with_a_wrong_shape_or_dtype(files, tmp_path):
    sd = torch.load(files / "c2i_T_64.pt", weights_only=False)["model"]
    bad = dict(sd)
    bad["layers.0.attention.wo.weight"] = torch.zeros(3, 5)
    torch.save({"model": bad}, tmp_path / "shape.pt")
    with pytest.raises(ZipARError, match=r"checkpoint does not match a LlamaGen c2i GPT \(.*size mismatch.*\); the file "
                                         "is damaged or another model: re-download the official file"):
        api.load_ar_model(tmp_path / "shape.pt", "cpu")
    ints = dict(sd)
    ints["norm.weight"] = sd["norm.weight"].long()
    torch.save({"model": ints}, tmp_path / "dtype.pt")
    with pytest.raises(ZipARError, match="'norm.weight' holds torch.int64 values where weights must be floating point"):
        api.load_ar_model(tmp_path / "dtype.pt", "cpu")
    vq_sd = torch.load(files / "vq_ds16_c2i.pt", weights_only=False)["model"]
    vq_sd["decoder.conv_out.bias"] = torch.zeros(7)
    torch.save({"model": vq_sd}, tmp_path / "vq.pt")
    with pytest.raises(ZipARError, match=r"VQ checkpoint does not match the LlamaGen VQ layout .*size mismatch.*"
                                         "re-download the official VQ"):
        api.load_vq(tmp_path / "vq.pt", "cpu")


def test_downsample_zero_and_unknown_devices(files, tmp_path, capsys):
    base = ["generate", "--ar-model", files / "c2i_T_64.pt", "--class-id", 1, "--stats-json", tmp_path / "s.json"]
    assert "downsampling factor must be a positive number of pixels per token (got 0)" in cli_error(
        base + ["--downsample", 0], capsys)
    assert "unknown device 'foo'; use auto, cpu, cuda or cuda:N" in cli_error(base + ["--device", "foo"], capsys)
    with pytest.raises(ZipARError, match="unknown device 'gpu:x'"):
        api.resolve_device("gpu:x")
    assert not (tmp_path / "s.json").exists()


def test_demo_cell_out_of_range(tmp_path, capsys):
    for cell in (0, -5, 100000):
        err = cli_error(["demo", "--out", tmp_path / "d.png", "--cell", cell], capsys)
        assert f"--cell must be between 8 and 1024 pixels per image (got {cell})" in err
    assert not (tmp_path / "d.png").exists()


def test_caption_mask_of_the_wrong_shape():
    feats = torch.randn(2, 8, 4)
    for mask in (torch.ones(8, 2, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool), torch.ones(16, dtype=torch.bool)):
        with pytest.raises(ZipARError, match=r"the caption mask has shape .* need one entry per token: \(2, 8\)"):
            caption_condition(feats, mask)
    with pytest.raises(ZipARError, match="caption features must be floating-point"):
        caption_condition(torch.ones(2, 8, 4, dtype=torch.long))
    assert caption_condition(torch.randn(8, 4), torch.ones(8, dtype=torch.bool)).caption_mask.shape == (1, 8)


@pytest.mark.parametrize("shape", [(0, 4, 4), (1, 4, 0), (2, 0, 3), (0, 0)])
def test_decoding_an_empty_grid_says_so(files, tmp_path, capsys, shape):
    tokens = tmp_path / "t.npy"
    np.save(tokens, np.zeros(shape, dtype=np.int64))
    err = cli_error(["decode", "--vq-model", files / "vq_ds16_c2i.pt", "--tokens", tokens, "--out", tmp_path / "o.png"],
                    capsys)
    assert "the token grids are empty" in err and "nothing to decode" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy"]


def test_vq_nodes_with_zero_images(files):
    vq = api.load_vq(files / "vq_ds16_c2i.pt", "cpu")
    empty = Tokens(torch.zeros(0, 4, 4, dtype=torch.long), vq.codebook_size)
    with pytest.raises(ZipARError, match="the token grids are empty"):
        N["ZipARVQDecode"]().decode(vq, empty)
    with pytest.raises(ZipARError, match=r"the IMAGE batch is empty \(shape \(0, 64, 64, 3\)\); connect a node"):
        N["ZipARVQEncode"]().encode(vq, torch.zeros(0, 64, 64, 3), "center crop")


def test_batch_must_be_a_whole_number(files):
    model = api.load_ar_model(files / "c2i_T_64.pt", "cpu")
    assert isinstance(model, LlamaGenModel)
    for bad in (0, -1):
        with pytest.raises(ZipARError, match="batch must be at least 1"):
            generate(model, api.class_condition([1]), (4, 4), 2, SamplingOptions(greedy=True), batch=bad)
    with pytest.raises(ZipARError, match="batch must be a whole number"):
        generate(model, api.class_condition([1]), (4, 4), 2, SamplingOptions(greedy=True), batch=1.5)
