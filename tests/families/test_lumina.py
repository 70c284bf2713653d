"""Lumina-mGPT: layout, name-mapped image tokens, exactness against transformers' Chameleon, ZipAR visibility."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from helpers.lumina_fixtures import CODES, image_token, write_lumina, write_lumina_release  # noqa: E402
from helpers.reference_seq import naive_row_end_decode, replay_logits  # noqa: E402
from zipar import api  # noqa: E402
from zipar.core.loop import expected_passes, generate  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.families.base import Condition  # noqa: E402
from zipar.families.lumina import crop_sizes, image_code, native_size, size_for  # noqa: E402
from zipar.core.sampling import SamplingOptions  # noqa: E402
from zipar.core.schedule import build_schedule  # noqa: E402

SIDE = 64  # pixels: a 4x4 token grid at 1:1 (size token 2), 2x4 at 2:1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lumina")
    return write_lumina(root / "Lumina-mGPT-tiny")


@pytest.fixture(scope="module")
def model(built):
    m = api.load_ar_model(built[0], "cpu", "fp32")
    m.image_size = SIDE
    return m


def greedy(cfg):
    return SamplingOptions(cfg=cfg, greedy=True)


def test_image_tokens_map_by_name(model):
    vocab = model.tokenizer.get_vocab()
    assert model.vocab_size == CODES
    for code in (0, 7, 10, 31):
        assert int(model.net.code_ids[code]) == vocab[image_token(code)]
    assert image_code("IMGIMGBCDZ") == 123 and image_code("<reserved08799>") is None
    assert model.net.code_ids.tolist() != sorted(model.net.code_ids.tolist())  # shuffled: no offset would work


def test_prompt_and_sequence_follow_the_official_layout(model):
    vocab, sp = model.tokenizer.get_vocab(), model.special
    cond = Condition(prompts=["a red fox"], aspect_ratio="2:1")
    grid = model.grid_for(cond)
    assert grid == (2, 4)  # 32 px high, 64 px wide
    rows = model.prompt_rows(cond, True, grid)
    prefix = [vocab["<racm3:break>"], vocab["<reserved08801>"], vocab["<reserved08802>"]]  # height first
    assert rows[0][0] == vocab["<s>"] and rows[0][-4:] == [vocab["<reserved08706>"], *prefix]
    assert model.tokenizer.decode(rows[0][1:-4]) == "Generate an image of 64x32 according to the following prompt: a red fox"
    assert rows[1] == prefix  # the official unconditional branch: from begin-of-image on, no text
    codes = torch.arange(8).view(2, 4) * 3 % CODES
    seq = model.sequence("a red fox", codes)
    P = len(rows[0])
    assert seq[:P] == rows[0] and len(seq) == P + 2 * 5 + 2
    for r in range(2):
        row = seq[P + 5 * r: P + 5 * r + 5]
        assert row[:4] == [vocab[image_token(int(c))] for c in codes[r]] and row[4] == sp["eol"] == vocab["<reserved08799>"]
    assert seq[-2:] == [vocab["<eoss>"], vocab["<reserved08706>"]]


def test_negative_prompt_is_laid_out_like_a_positive_one(model):
    rows = model.prompt_rows(Condition(prompts=["a red fox"], negative_prompts=["blue car"]), True, (4, 4))
    assert rows[1] == model.prompt_ids("blue car", (4, 4)) and rows[1][-3:] == rows[0][-3:]


def naive_lumina(hf_model, model, cond: Condition, grid, cfg: float) -> torch.Tensor:
    """transformers' Chameleon base model + lm_head as the reference (the conditional-generation class
    would mask the image logits), size tokens and row ends included in the sequence it reads."""
    def last_logits(seq):
        return hf_model.lm_head(hf_model.model(input_ids=torch.tensor([seq])).last_hidden_state[0, -1])

    return naive_row_end_decode(model, cond, grid, cfg, last_logits)


@pytest.mark.parametrize("cfg,ratio", [(1.0, "1:1"), (4.0, "1:1"), (4.0, "2:1"), (3.0, "1:2")])
def test_full_window_equals_naive_transformers_decoder(built, model, cfg, ratio):
    cond = Condition(prompts=["a red fox"], aspect_ratio=ratio)
    grid = model.grid_for(cond)
    expected = naive_lumina(built[1], model, cond, grid, cfg)
    got = generate(model, cond, grid, grid[1], greedy(cfg))
    assert torch.equal(got.tokens, expected) and got.forward_passes == grid[0] * grid[1]


def test_swin_norm_variant_equals_transformers(tmp_path):
    folder, hf_model = write_lumina(tmp_path / "Lumina-mGPT-swin", seed=3, swin=True)
    model = api.load_ar_model(folder, "cpu", "fp32")
    assert model.config.swin_norm and model.config.qk_norm
    cond = Condition(prompts=["a blue car"])
    expected = naive_lumina(hf_model, model, cond, (4, 4), 4.0)
    assert torch.equal(generate(model, cond, (4, 4), 4, greedy(4.0)).tokens, expected)


@pytest.mark.parametrize("static", [None, "none"], ids=["eager", "bucketed"])
@pytest.mark.parametrize("row0_first", [None, True], ids=["official", "row0-first"])
@pytest.mark.parametrize("window,side,ratio", [(1, 64, "1:1"), (2, 64, "1:1"), (3, 64, "1:1"), (2, 64, "2:1"),
                                               (3, 96, "1:1"), (4, 96, "1:1")])
def test_every_emitted_logit_matches_an_uncached_forward(model, window, side, ratio, row0_first, static):
    cond = Condition(prompts=["a red fox", "a blue car"], aspect_ratio=ratio)
    grid = model.grid_for(cond, side)
    seen = {}

    def trace(step, cells, logits):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = logits[:, k].clone()

    result = generate(model, cond, grid, window, SamplingOptions(cfg=4.0, top_k=20), seed=1, trace=trace,
                      row0_first=row0_first, compile_backend=static)
    rule = model.row0_first if row0_first is None else row0_first
    assert result.forward_passes == expected_passes(grid, window, rule)
    model.image_size = side  # replay_logits asks the model for the prompt rows at its own size
    try:
        expected = replay_logits(model, cond, True, build_schedule(*grid, window, rule), result.tokens,
                                 model.special["eol"])
    finally:
        model.image_size = SIDE
    assert sorted(seen) == list(range(grid[0] * grid[1]))
    for cell, logits in seen.items():
        torch.testing.assert_close(logits, expected[cell], atol=1e-4, rtol=1e-4, msg=f"cell {cell}")


def test_pass_counts_at_the_released_sizes(model):
    assert [size_for("1:1", s) for s in (512, 768, 1024)] == [(512, 512), (768, 768), (1024, 1024)]
    # Lumina-mGPT's official ZipAR starts row 1 by the window rule: W + (H-1) * window. At 768 px the
    # reference takes 756 / 1508 calls at its windows 16 / 32, 3 of them for BOI + size tokens we place.
    assert model.row0_first is False
    rule = model.row0_first
    assert expected_passes((48, 48), 48, rule) == 2304 and expected_passes((48, 48), 15, rule) == 756 - 3
    assert expected_passes((48, 48), 31, rule) == 1508 - 3 and expected_passes((48, 48), 16, rule) == 48 + 47 * 16
    assert expected_passes((32, 32), 16, rule) == 528 and expected_passes((64, 64), 16, rule) == 1072
    assert build_schedule(48, 48, 16, rule).num_passes == 800
    # the row-0-first rule (LlamaGen's) at the same windows, for comparison: 786 / 1522
    assert expected_passes((48, 48), 15) == 786 and expected_passes((48, 48), 31) == 1522
    cond = Condition(prompts=["a red fox"])
    assert generate(model, cond, (6, 6), 2, greedy(1.0)).forward_passes == 6 + 5 * 2


def test_official_crop_list_and_aspect_ratios():
    # the budget-4 walk written out by hand: (4,1) (3,1) (2,1) (2,2) (1,2) (1,3) (1,4) units of 32 px
    assert crop_sizes(64) == [(128, 32), (96, 32), (64, 32), (64, 64), (32, 64), (32, 96), (32, 128)]
    sizes = crop_sizes(768)
    assert (768, 768) in sizes and (1024, 576) in sizes and (576, 1024) in sizes
    assert all(max(w, h) <= 4 * min(w, h) and w * h <= 768 * 768 and w % 32 == 0 == h % 32 for w, h in sizes)
    assert size_for("16:9", 768) == (576, 1024) and size_for("9:16", 768) == (1024, 576)
    with pytest.raises(ZipARError, match="too extreme"):
        size_for("5:1", 768)
    with pytest.raises(ZipARError, match="multiple of 32"):
        crop_sizes(500)
    assert [native_size(f"Lumina-mGPT-7B-{s}") for s in ("512", "768", "768-Omni", "1024")] == [512, 768, 768, 1024]
    assert native_size("my-lumina") == 768


def test_vq_weights_in_the_folder_are_ignored(built, model, tmp_path):
    folder, _ = write_lumina(tmp_path / "with-vq", keep_vq_weights=True)
    other = api.load_ar_model(folder, "cpu", "fp32")
    other.image_size = SIDE
    cond = Condition(prompts=["a red fox"])
    assert torch.equal(other.start(cond, (4, 4), True).prefix.logits, model.start(cond, (4, 4), True).prefix.logits)


def test_bad_inputs_give_one_clear_error(built, model, tmp_path):
    folder = built[0]
    with pytest.raises(ZipARError, match="even number of rows"):
        model.start(Condition(prompts=["a"]), (3, 4), True)
    with pytest.raises(ZipARError, match="size token"):
        model.start(Condition(prompts=["a"]), (98, 98), True)  # 1568 px: beyond the tiny vocabulary's size tokens
    with pytest.raises(ZipARError, match="size token"):
        model.grid_for(Condition(prompts=["a"]), 1600)
    with pytest.raises(ZipARError, match="text prompt"):
        model.check_condition(Condition(class_ids=[1]))
    with pytest.raises(ZipARError, match="Chameleon VQGAN"):
        api.load_vq(folder, "cpu")  # the language model folder has no image decoder
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(folder, no_tok)
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ZipARError, match="tokenizer"):
        api.load_ar_model(no_tok, "cpu")
    no_images = tmp_path / "no-image-tokens"
    shutil.copytree(folder, no_images)
    config = json.loads((no_images / "config.json").read_text())
    config["vocabulary_map"] = {k: v for k, v in config["vocabulary_map"].items() if not k.startswith("IMGIMG")}
    (no_images / "config.json").write_text(json.dumps(config))
    tok = json.loads((no_images / "tokenizer.json").read_text())
    tok["model"]["vocab"] = {k: v for k, v in tok["model"]["vocab"].items() if not k.startswith("IMGIMG")}
    (no_images / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ZipARError, match="image tokens"):
        api.load_ar_model(no_images, "cpu")
    wrong_width = tmp_path / "wrong-width"
    shutil.copytree(folder, wrong_width)
    config = json.loads((wrong_width / "config.json").read_text())
    config["hidden_size"] = 128
    (wrong_width / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZipARError, match="do not belong together"):
        api.load_ar_model(wrong_width, "cpu")


def test_row_end_layout_prepared_from_the_plan_equals_the_one_derived_per_step(model, monkeypatch):
    """generate() hands the plan to the session (no device read-back per pass); a session stepped
    without it derives the same layout from the tensors it is given."""
    from zipar.families.sequence import SequenceSession

    cond = Condition(prompts=["a red fox", "a blue car"], aspect_ratio="1:1")
    grid = model.grid_for(cond, 96)
    logits = {}

    def run(tag):
        def trace(step, cells, out):
            logits[tag, step] = out.clone()
        return generate(model, cond, grid, 2, SamplingOptions(cfg=4.0, top_k=20), seed=3, trace=trace).tokens

    prepared = run("plan")
    monkeypatch.setattr(SequenceSession, "prepare", lambda self, plan: None)
    assert torch.equal(run("steps"), prepared)
    assert all(torch.equal(logits["plan", s], logits["steps", s]) for (tag, s) in logits if tag == "plan")


# ----------------------------------------------------------------------------- the release's own files

@pytest.fixture(scope="module")
def release_pair(tmp_path_factory):
    """One tiny model written twice: by transformers (per-head norms) and as Lumina-mGPT's release
    writes it (one norm row per model-parallel shard, written tensor by tensor)."""
    root = tmp_path_factory.mktemp("lumina-release")
    hf_folder, hf_model = write_lumina(root / "transformers-layout", seed=5, norm_shards=1)
    release = write_lumina_release(root / "Lumina-mGPT-7B-512", hf_model, shards=1)
    return release, hf_folder


def test_release_files_hold_the_release_layout(release_pair):
    from safetensors import safe_open

    release, _ = release_pair
    config = json.loads((release / "config.json").read_text())
    index = json.loads((release / "model.safetensors.index.json").read_text())
    assert config["architectures"] == ["ChameleonXLLMXForConditionalGeneration"] and config["model_parallel_size"] == 1
    name = "model.layers.0.self_attn.q_norm.weight"
    with safe_open(str(release / index["weight_map"][name]), framework="pt") as f:
        assert tuple(f.get_tensor(name).shape) == (1, 16) and f.get_tensor(name).dtype == torch.bfloat16
    assert not any("vqmodel" in k for k in index["weight_map"])


@pytest.mark.parametrize("cfg,ratio", [(1.0, "1:1"), (3.0, "1:1"), (1.0, "2:1"), (3.0, "2:1")])
def test_release_folder_decodes_like_the_transformers_layout_at_512(release_pair, cfg, ratio):
    release, hf_folder = release_pair
    ours, theirs = api.load_ar_model(release, "cpu", "fp32"), api.load_ar_model(hf_folder, "cpu", "fp32")
    assert ours.image_size == 512  # from the release's folder name
    norm = ours.net.lm.layers[1].self_attn.k_norm
    assert norm.weight.shape == (2, 16) and torch.equal(norm.weight, theirs.net.lm.layers[1].self_attn.k_norm.weight)
    cond = Condition(prompts=["a red fox"], aspect_ratio=ratio)
    grid = ours.grid_for(cond)
    assert grid == ((32, 32) if ratio == "1:1" else (22, 44))  # 704 x 352 px: the crop list's 2:1 at 512
    got = generate(ours, cond, grid, grid[1], greedy(cfg))
    expected = generate(theirs, cond, grid, grid[1], greedy(cfg))
    assert torch.equal(got.tokens, expected.tokens)
    assert len(set(got.tokens.flatten().tolist())) > 3, "degenerate model: the check would be vacuous"


def test_two_shard_release_layout_repeats_each_row_over_its_heads(tmp_path):
    hf_folder, hf_model = write_lumina(tmp_path / "transformers-layout", seed=6, norm_shards=2)
    release = write_lumina_release(tmp_path / "Lumina-mGPT-7B-512", hf_model, shards=2)
    ours, theirs = api.load_ar_model(release, "cpu", "fp32"), api.load_ar_model(hf_folder, "cpu", "fp32")
    q = ours.net.lm.layers[0].self_attn.q_norm.weight
    assert q.shape == (4, 16) and torch.equal(q[0], q[1]) and not torch.equal(q[1], q[2])
    cond = Condition(prompts=["a blue car"])
    grid = ours.grid_for(cond, 128)
    assert torch.equal(generate(ours, cond, grid, grid[1], greedy(3.0)).tokens,
                       generate(theirs, cond, grid, grid[1], greedy(3.0)).tokens)


def test_norm_shape_that_fits_neither_layout_names_both(release_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    release, _ = release_pair
    broken = tmp_path / "Lumina-mGPT-broken"
    shutil.copytree(release, broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    name = "model.layers.0.self_attn.q_norm.weight"
    path = broken / index["weight_map"][name]
    sd = load_file(str(path))
    sd[name] = torch.ones(3, 16, dtype=torch.bfloat16)  # 3 rows for 4 heads
    save_file(sd, str(path), metadata={"format": "pt"})
    with pytest.raises(ZipARError) as err:
        api.load_ar_model(broken, "cpu")
    message = str(err.value)
    assert "(3, 16)" in message and "(4, 16)" in message and "(shards, 16)" in message and "(1, 16)" in message
