"""Emu3-Gen: both folder layouts, row-end layout, exactness against transformers, ZipAR visibility."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from helpers.chat_fixtures import write_emu3_hf, write_emu3_original  # noqa: E402
from helpers.reference_seq import naive_row_end_decode, replay_logits  # noqa: E402
from zipar import api  # noqa: E402
from zipar.core.loop import expected_passes, generate  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.families.base import Condition  # noqa: E402
from zipar.families.emu3 import NEGATIVE_PROMPT, POSITIVE_SUFFIX, generate_size  # noqa: E402
from zipar.core.sampling import SamplingOptions  # noqa: E402
from zipar.core.schedule import build_schedule  # noqa: E402

SIDE = 16  # pixels: with the tiny VQ (downsample 4) a 4x4 grid at 1:1


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("emu3")
    hf = write_emu3_hf(root / "Emu3-Gen-tiny-hf")
    return hf, write_emu3_original(root / "Emu3-Gen-tiny", hf)


@pytest.fixture(scope="module")
def models(folders):
    out = [api.load_ar_model(f, "cpu", "fp32") for f in folders]
    for m in out:
        m.image_size, m.downsample = SIDE, 4  # the original LM folder cannot know its VQ's downsampling
    return out


@pytest.fixture(scope="module")
def hf_model(folders):
    from transformers import Emu3ForConditionalGeneration

    return Emu3ForConditionalGeneration.from_pretrained(str(folders[0])).eval()


def greedy(cfg):
    return SamplingOptions(cfg=cfg, greedy=True)


def test_both_layouts_load_to_identical_logits(models):
    a, b = models
    assert (a.format, b.format) == ("hf", "original") and a.vocab_size == b.vocab_size == 64
    assert torch.equal(a.net.code_ids, b.net.code_ids)
    cond = Condition(prompts=["a red fox"], aspect_ratio="2:1")
    grid = a.grid_for(cond)
    assert grid == (3, 6)
    assert torch.equal(a.start(cond, grid, True).prefix.logits, b.start(cond, grid, True).prefix.logits)
    ra, rb = (generate(m, cond, grid, 2, greedy(3.0)) for m in models)
    assert torch.equal(ra.tokens, rb.tokens)


def test_visual_codes_map_by_token_name(models):
    model = models[0]
    vocab = model.tokenizer.get_vocab()
    for code in (0, 5, 63):
        assert int(model.net.code_ids[code]) == vocab[f"<|visual token {code:06d}|>"]
    assert len(set(model.net.code_ids.tolist())) == 64  # the fixture shuffles them: no offset would work


def test_prompt_and_sequence_layout_follow_the_official_recipe(models):
    model = models[0]
    vocab, sp = model.tokenizer.get_vocab(), model.special
    rows = model.prompt_rows(Condition(prompts=["a red fox"]), True, (3, 6))
    size = [vocab["3"], vocab["*"], vocab["6"]]  # height first
    tail = [vocab["<|image start|>"], *size, vocab["<|image token|>"]]
    assert rows[0][0] == vocab["<|extra_203|>"] and rows[0][-5:] == tail
    assert model.tokenizer.decode(rows[0][1:-5]) == "a red fox" + POSITIVE_SUFFIX
    assert rows[1][0] == vocab["<|extra_203|>"] and rows[1][-5:] == tail  # the negative prompt, built alike
    assert len(rows[1]) - 6 == len(NEGATIVE_PROMPT.split())
    codes = torch.arange(18).view(3, 6) % 64
    seq = model.sequence("a red fox", codes)
    P = len(rows[0])
    assert seq[:P] == rows[0] and len(seq) == P + 3 * 7 + 3
    for r in range(3):
        row = seq[P + 7 * r: P + 7 * r + 7]
        assert row[:6] == [int(model.net.code_ids[c]) for c in codes[r]] and row[6] == sp["eol"] == vocab["<|extra_200|>"]
    assert seq[-3:] == [vocab["<|extra_201|>"], vocab["<|image end|>"], vocab["<|extra_204|>"]]


def naive_emu3(hf_model, model, cond: Condition, grid, cfg: float) -> torch.Tensor:
    """transformers' Emu3 as the reference, row ends included in the sequence it reads."""
    return naive_row_end_decode(model, cond, grid, cfg, lambda s: hf_model(input_ids=torch.tensor([s])).logits[0, -1])


@pytest.mark.parametrize("cfg,ratio", [(1.0, "1:1"), (3.0, "1:1"), (3.0, "2:1")])
def test_full_window_equals_naive_transformers_decoder(models, hf_model, cfg, ratio):
    cond = Condition(prompts=["a red fox"], aspect_ratio=ratio)
    for model in models:
        grid = model.grid_for(cond)
        expected = naive_emu3(hf_model, model, cond, grid, cfg)
        got = generate(model, cond, grid, grid[1], greedy(cfg))
        assert torch.equal(got.tokens, expected) and got.forward_passes == grid[0] * grid[1]


@pytest.mark.parametrize("static", [None, "none"], ids=["eager", "bucketed"])
@pytest.mark.parametrize("row0_first", [None, False], ids=["official", "row1-by-window"])
@pytest.mark.parametrize("window,ratio", [(1, "1:1"), (2, "1:1"), (3, "1:1"), (2, "2:1"), (4, "2:1")])
def test_every_emitted_logit_matches_an_uncached_forward(models, window, ratio, row0_first, static):
    model = models[0]
    cond = Condition(prompts=["a red fox", "a blue car"], aspect_ratio=ratio, negative_prompts=["", "blurry"])
    grid = model.grid_for(cond)
    seen = {}

    def trace(step, cells, logits):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = logits[:, k].clone()

    result = generate(model, cond, grid, window, SamplingOptions(cfg=3.0, top_k=20), seed=1, trace=trace,
                      row0_first=row0_first, compile_backend=static)
    rule = model.row0_first if row0_first is None else row0_first
    assert result.forward_passes == expected_passes(grid, window, rule)
    expected = replay_logits(model, cond, True, build_schedule(*grid, window, rule), result.tokens, model.special["eol"])
    assert sorted(seen) == list(range(grid[0] * grid[1]))
    for cell, logits in seen.items():
        torch.testing.assert_close(logits, expected[cell], atol=1e-4, rtol=1e-4, msg=f"cell {cell}")


def test_speculative_logits_match_an_uncached_forward_with_row_ends(models):
    """Speculative decoding with lanes and draft branches: every logit used to keep or draw a
    token is an uncached forward over its plan context, end-of-line tokens included (NTP, and
    windows 2 and 1 with both row-1 rules), and some tokens came through branches (slots past
    the image that take a cell's position)."""
    model = models[0]
    cond = Condition(prompts=["a red fox", "a blue car"], aspect_ratio="1:1", negative_prompts=["", "blurry"])
    grid = model.grid_for(cond)
    branched = saved = 0
    for window, row0_first in ((grid[1], None), (2, None), (1, False)):
        seen = {}

        def trace(step, cells, logits):
            for k, cell in enumerate(cells.tolist()):
                assert cell not in seen
                seen[cell] = logits[:, k].clone()

        result = generate(model, cond, grid, window, SamplingOptions(cfg=3.0, top_k=20, temperature=0.6), seed=1,
                          trace=trace, row0_first=row0_first, speculative=True, draft_length=4)
        rule = model.row0_first if row0_first is None else row0_first
        expected = replay_logits(model, cond, True, build_schedule(*grid, window, rule), result.tokens,
                                 model.special["eol"])
        assert sorted(seen) == list(range(grid[0] * grid[1]))
        for cell, logits in seen.items():
            torch.testing.assert_close(logits, expected[cell], atol=1e-4, rtol=1e-4, msg=f"window {window} cell {cell}")
        saved += expected_passes(grid, window, rule) - result.forward_passes
        branched += result.branch_tokens
    assert saved > 0 and branched > 0, (saved, branched)


def test_sizes_keep_the_token_area():
    assert generate_size("1:1", 720 * 720) == (90, 90)
    h, w = generate_size("16:9", 720 * 720)
    assert (h, w) == (68, 120) and abs(h * w - 8100) / 8100 < 0.01
    assert generate_size("9:16", 720 * 720) == (120, 68)
    for bad in ("5:1", "16x9", "0:1"):
        with pytest.raises(ZipARError, match="aspect ratio"):
            generate_size(bad, 720 * 720)


def test_vq_pairs_with_the_model_and_bad_folders_give_one_clear_error(folders, models, tmp_path):
    hf, original = folders
    vq = api.load_vq(hf, "cpu")
    api.check_pair(models[0], vq)
    assert vq.decode_codes(torch.zeros(1, 4, 4, dtype=torch.long)).shape == (1, 3, 16, 16)
    with pytest.raises(ZipARError, match="Emu3-VisionTokenizer"):
        api.load_vq(original, "cpu")  # the original LM folder has no VQ
    remote = tmp_path / "remote-code-tokenizer"
    shutil.copytree(original, remote)
    (remote / "tokenizer.json").unlink()
    (remote / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Emu3Tokenizer",
                                                              "auto_map": {"AutoTokenizer": ["tokenization_emu3.Emu3Tokenizer", None]}}))
    with pytest.raises(ZipARError, match="tokenizer.json"):
        api.load_ar_model(remote, "cpu")
    no_vision = tmp_path / "no-visual-tokens"
    shutil.copytree(original, no_vision)
    tok = json.loads((no_vision / "tokenizer.json").read_text())
    tok["model"]["vocab"] = {k: v for k, v in tok["model"]["vocab"].items() if "visual" not in k}
    tok["added_tokens"] = [t for t in tok["added_tokens"] if "visual" not in t["content"]]
    (no_vision / "tokenizer.json").write_text(json.dumps(tok))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = no_vision / name
        if path.is_file():
            cfg = json.loads(path.read_text())
            cfg.pop("additional_special_tokens", None)
            cfg.pop("extra_special_tokens", None)
            if "added_tokens_decoder" in cfg:
                cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items() if "visual" not in v["content"]}
            path.write_text(json.dumps(cfg))
    with pytest.raises(ZipARError, match="visual token"):
        api.load_ar_model(no_vision, "cpu")
    with pytest.raises(ZipARError, match="too extreme"):
        models[0].grid_for(Condition(prompts=["a"], aspect_ratio="8:1"))


# ----------------------------------------------------------------------------- prompt recipe switches

def test_quality_suffix_is_a_switch_and_never_doubled(models):
    model = models[0]
    decode = model.tokenizer.decode
    on = model.prompt_rows(Condition(prompts=["a red fox"]), True, (3, 6))
    off = model.prompt_rows(Condition(prompts=["a red fox"], quality_suffix=False), True, (3, 6))
    already = model.prompt_rows(Condition(prompts=["a red fox" + POSITIVE_SUFFIX]), True, (3, 6))
    assert decode(on[0][1:-5]) == "a red fox" + POSITIVE_SUFFIX
    assert decode(off[0][1:-5]) == "a red fox"
    assert already[0] == on[0]  # a prompt that ends with the suffix does not get it twice
    # the negative prompt keeps the official repository's layout (BOS + text + size tag, no suffix) either way
    assert on[1] == off[1] == model.prompt_ids(NEGATIVE_PROMPT, (3, 6), suffix="")
    assert len(on[1]) - 6 == len(NEGATIVE_PROMPT.split())  # BOS + its words + image start, 3 size tokens, image token
    assert api.prompt_condition(["a"], quality_suffix=False).quality_suffix is False
    assert Condition(prompts=["a"], quality_suffix=False).repeat(2).quality_suffix is False


def test_quality_suffix_switch_reaches_the_model_from_the_cli(folders, tmp_path, monkeypatch):
    from zipar import cli

    seen = []
    real = api.generate
    monkeypatch.setattr(api, "generate", lambda model, cond, *a, **k: seen.append(cond) or real(model, cond, *a, **k))
    stats = tmp_path / "s.json"
    for flag in ([], ["--no-quality-suffix"]):
        stats.unlink(missing_ok=True)
        assert cli.main(["generate", "--ar-model", str(folders[0]), "--prompt", "a red fox", "--image-size", "16",
                         "--window", "2", "--stats-json", str(stats), "--device", "cpu", *flag]) == 0
    assert [c.quality_suffix for c in seen] == [True, False]


def test_default_size_is_the_folder_image_area(folders, tmp_path):
    original = tmp_path / "Emu3-Gen-area"
    shutil.copytree(folders[1], original)
    config = json.loads((original / "config.json").read_text())
    assert config["image_area"] == 720 * 720  # the release's value, as BAAI/Emu3-Gen's config states it
    config["image_area"] = 512  # not a square number: kept exactly
    (original / "config.json").write_text(json.dumps(config))
    model = api.load_ar_model(original, "cpu", "fp32")
    model.downsample = 4
    assert model.image_area == 512 and model.image_size == 23
    wide = Condition(prompts=["a"], aspect_ratio="2:1")
    assert model.grid_for(wide) == model.grid_for(wide, model.image_size) == generate_size("2:1", 512, 4) == (4, 8)
    assert model.grid_for(wide, 32) == generate_size("2:1", 32 * 32, 4)  # an explicit size is a side
    hf = api.load_ar_model(folders[0], "cpu", "fp32")  # no image_area in a transformers folder: the release's
    hf.downsample = 8  # the release's VQ (the tiny one has 4: 180x180 tokens would exceed its 9216 positions)
    assert hf.image_area == 720 * 720 and hf.grid_for(Condition(prompts=["a"])) == (90, 90)


def test_original_folder_without_tokenizer_points_at_the_hf_tokenizer(folders, tmp_path):
    bare = tmp_path / "Emu3-Gen"
    shutil.copytree(folders[1], bare)
    for f in bare.glob("*token*"):
        f.unlink()
    with pytest.raises(ZipARError) as err:
        api.load_ar_model(bare, "cpu")
    message = str(err.value)
    assert "BAAI/Emu3-Gen-hf" in message and "tokenizer.json" in message and "Janus" not in message
