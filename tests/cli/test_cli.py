"""The command line end to end on tiny official-format files, and its error messages."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.tiny import make_tiny_vq, save_official_vq
from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    vq = make_tiny_vq(seed=0)
    save_official_vq(vq, d / "vq_ds16_c2i.pt")
    gpt = make_tiny_gpt("c2i", seed=0, vocab_size=vq.codebook_size)
    save_official_gpt(gpt, d / "c2i_T_64.pt")
    t2i = make_tiny_gpt("t2i", seed=0, vocab_size=vq.codebook_size)
    save_official_gpt(t2i, d / "t2i_T_64.safetensors")
    wrong_vocab = make_tiny_gpt("c2i", seed=0, vocab_size=vq.codebook_size * 2)
    save_official_gpt(wrong_vocab, d / "c2i_other_64.pt")
    return d


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base_args(files, tmp_path, *extra):
    return ["generate", "--ar-model", files / "c2i_T_64.pt", "--vq-model", files / "vq_ds16_c2i.pt", *extra]


def test_generate_writes_images_tokens_and_stats(files, tmp_path, capsys):
    out, toks, stats = tmp_path / "a.png", tmp_path / "t.npy", tmp_path / "s.json"
    code, stdout, err = run(base_args(files, tmp_path, "--class-id", 1, 2, "--batch", 2, "--window", 2, "--seed", 3,
                                      "--out", out, "--tokens-out", toks, "--stats-json", stats), capsys)
    assert code == 0, err
    paths = [tmp_path / f"a_{i}.png" for i in range(4)]
    assert all(p.exists() for p in paths) and not out.exists()
    assert Image.open(paths[0]).size == (64, 64)
    tokens = np.load(toks)
    assert tokens.shape == (4, 4, 4) and tokens.dtype == np.int64
    s = json.loads(stats.read_text())
    assert s["forward_passes"] == 4 + 2 * 2 + 4 == s["forward_passes"]
    assert s["grid"] == [4, 4] and s["window"] == 2 and s["images"] == 4
    assert {"seconds", "device", "dtype"} <= set(s)
    assert "forward passes instead of 16" in err


def test_decode_reproduces_generate_images(files, tmp_path, capsys):
    toks = tmp_path / "t.npy"
    assert run(base_args(files, tmp_path, "--class-id", 5, "--greedy", "--out", tmp_path / "g.png", "--tokens-out", toks), capsys)[0] == 0
    assert run(["decode", "--vq-model", files / "vq_ds16_c2i.pt", "--tokens", toks, "--out", tmp_path / "d.png"], capsys)[0] == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), np.asarray(Image.open(tmp_path / "d.png")))


def test_full_window_equals_ntp_and_greedy_is_deterministic(files, tmp_path, capsys):
    for name, window in (("a", 4), ("b", 99), ("c", 4)):
        assert run(base_args(files, tmp_path, "--class-id", 1, "--greedy", "--window", window, "--tokens-out", tmp_path / f"{name}.npy"), capsys)[0] == 0
    a, b, c = (np.load(tmp_path / f"{n}.npy") for n in "abc")
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_t2i_from_caption_embeddings(files, tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"features": torch.randn(1, 8, 24), "mask": torch.ones(1, 8, dtype=torch.bool)}, tmp_path / "c.safetensors")
    code, _, err = run(["generate", "--ar-model", files / "t2i_T_64.safetensors", "--vq-model", files / "vq_ds16_c2i.pt",
                        "--caption-embeddings", tmp_path / "c.safetensors", "--out", tmp_path / "t.png"], capsys)
    assert code == 0, err and (tmp_path / "t.png").exists()


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda a, f, t: a.__setitem__(2, t / "missing.pt"), "not found"),
        (lambda a, f, t: (a.__setitem__(2, f / "vq_ds16_c2i.pt")), "VQ image tokenizer, not an AR model"),
        (lambda a, f, t: (a.__setitem__(4, f / "c2i_T_64.pt")), "AR model"),
        (lambda a, f, t: a.__setitem__(2, f / "c2i_other_64.pt"), "codebook"),
        (lambda a, f, t: a.extend(["--class-id", "10"]), "class id 10 is out of range"),
        (lambda a, f, t: a.extend(["--class-id", "1", "--window", "0"]), "window must be between 1 and 4"),
        (lambda a, f, t: a.extend(["--class-id", "1", "--image-size", "70"]), "not a multiple"),
        (lambda a, f, t: a.__setitem__(2, f / "t2i_T_64.safetensors"), "text-to-image model"),
        (lambda a, f, t: a.extend([]), "--class-id"),
    ],
)
def test_bad_input_gets_one_clear_line(files, tmp_path, capsys, mutate, message):
    args = base_args(files, tmp_path)
    mutate(args, files, tmp_path)
    args += ["--out", tmp_path / "x.png"]
    code, _, err = run(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_existing_output_is_not_overwritten(files, tmp_path, capsys):
    out = tmp_path / "keep.png"
    out.write_bytes(b"user data")
    code, _, err = run(base_args(files, tmp_path, "--class-id", 1, "--out", out), capsys)
    assert code == 2 and "already exists" in err and out.read_bytes() == b"user data"
    assert run(base_args(files, tmp_path, "--class-id", 1, "--out", out, "--overwrite"), capsys)[0] == 0
    assert Image.open(out).size == (64, 64)


@pytest.mark.slow
def test_compile_on_through_inductor_gives_the_eager_image(files, tmp_path, capsys):
    """What a CPU user gets from --compile on: inductor's C++ build of every bucket, with the torch
    installed (no private knob), and the same sampled tokens as --compile off."""
    for mode in ("off", "on"):
        code, _, err = run(base_args(files, tmp_path, "--class-id", 1, 2, "--window", 2, "--seed", 5, "--compile", mode,
                                     "--tokens-out", tmp_path / f"{mode}.npy",
                                     "--stats-json", tmp_path / f"{mode}.json"), capsys)
        assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "off.npy"), np.load(tmp_path / "on.npy"))
    on = json.loads((tmp_path / "on.json").read_text())
    assert on["compiled"] is True and on["graphs_built"] >= 3


def test_compile_switch_gives_the_same_image(files, tmp_path, capsys, monkeypatch):
    """--compile on runs the bucketed, compiled step (traced with dynamo's eager backend here: inductor's
    C++ build is covered in tests/core/test_compiled_step.py) and draws the same sampled tokens."""
    from zipar.core import static_step

    monkeypatch.setattr(static_step, "_compiler", lambda backend, device: (
        lambda fn: torch.compile(fn, fullgraph=True, dynamic=False, backend="eager")))
    for mode in ("off", "on"):
        code, _, err = run(base_args(files, tmp_path, "--class-id", 1, 2, "--window", 2, "--seed", 5, "--compile", mode,
                                     "--tokens-out", tmp_path / f"{mode}.npy", "--stats-json", tmp_path / f"{mode}.json"),
                           capsys)
        assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "off.npy"), np.load(tmp_path / "on.npy"))
    off, on = (json.loads((tmp_path / f"{m}.json").read_text()) for m in ("off", "on"))
    assert off["compiled"] is False and off["graphs_built"] == 0
    from zipar.core.plan import build_plan

    buckets = static_step.static_tables(build_plan(4, 4, 2, "cpu", True), False).buckets
    assert on["compiled"] is True and on["graphs_built"] == len(buckets) == 3  # passes of 1, 2 and 3-4 inputs
    with pytest.raises(SystemExit):
        main([str(a) for a in base_args(files, tmp_path, "--class-id", 1, "--compile", "yes")])


def test_speculative_flag_gives_the_same_greedy_tokens_in_fewer_passes(files, tmp_path, capsys):
    for name, extra in (("plain", []), ("spec", ["--speculative", "--draft-length", 3])):
        code, _, err = run(base_args(files, tmp_path, "--class-id", 1, 2, "--window", 4, "--greedy", *extra,
                                     "--tokens-out", tmp_path / f"{name}.npy", "--stats-json", tmp_path / f"{name}.json"),
                           capsys)
        assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "spec.npy"))
    plain, spec = (json.loads((tmp_path / f"{m}.json").read_text()) for m in ("plain", "spec"))
    assert plain["speculative"] is False and spec["speculative"] is True and spec["draft_length"] == 3
    assert spec["forward_passes"] <= plain["forward_passes"] == 16
    assert spec["tokens_per_pass"] == round(16 / spec["forward_passes"], 3)
    code, _, err = run(base_args(files, tmp_path, "--class-id", 1, "--speculative", "--draft-length", 0,
                                 "--tokens-out", tmp_path / "x.npy"), capsys)
    assert code == 2 and "draft length must be between 1 and 64" in err


def test_weight_dtype_keeps_the_layers_in_8_bits(files, tmp_path, capsys, monkeypatch):
    from zipar import api
    from zipar.nets.stored import StoredLinear

    loaded = []
    real = api.load_ar_model
    monkeypatch.setattr(api, "load_ar_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    code, _, err = run(base_args(files, tmp_path, "--class-id", 1, "--weight-dtype", "fp8_e5m2", "--greedy",
                                 "--tokens-out", tmp_path / "t.npy"), capsys)
    assert code == 0, err
    layers = loaded[0].layer_stacks()[0]
    assert all(m.weight.dtype == torch.float8_e5m2 for m in layers.modules() if isinstance(m, StoredLinear))
    assert np.load(tmp_path / "t.npy").shape == (1, 4, 4)
    with pytest.raises(SystemExit):
        main([str(a) for a in base_args(files, tmp_path, "--class-id", 1, "--weight-dtype", "int4")])


def test_kv_dtype_keeps_the_cache_in_8_bits(files, tmp_path, capsys, monkeypatch):
    from zipar import api
    from zipar.cli import build_parser

    loaded = []
    real = api.load_ar_model
    monkeypatch.setattr(api, "load_ar_model", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    code, _, err = run(base_args(files, tmp_path, "--class-id", 1, "--kv-dtype", "int8", "--greedy",
                                 "--tokens-out", tmp_path / "t.npy"), capsys)
    assert code == 0, err
    assert loaded[0].kv_dtype == "int8" and np.load(tmp_path / "t.npy").shape == (1, 4, 4)
    with pytest.raises(SystemExit):
        main([str(a) for a in base_args(files, tmp_path, "--class-id", 1, "--kv-dtype", "fp4")])
    sample = build_parser().parse_args(["sample", "--ar-model", "a", "--vq-model", "b", "--out", "o", "--kv-dtype", "int8"])
    assert sample.kv_dtype == "int8"
