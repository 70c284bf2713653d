"""Emu3-Gen: both folder layouts, row-end layout, exactness against transformers, ZipAR visibility."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from chat_fixtures import write_emu3_hf, write_emu3_original  # noqa: E402
from reference_seq import naive_row_end_decode, replay_logits  # noqa: E402
from zipar import api  # noqa: E402
from zipar.decode import expected_passes, generate  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.models.base import Condition  # noqa: E402
from zipar.models.emu3 import NEGATIVE_PROMPT, POSITIVE_SUFFIX, generate_size  # noqa: E402
from zipar.sampling import SamplingOptions  # noqa: E402
from zipar.schedule import build_schedule  # noqa: E402

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


@pytest.mark.parametrize("window,ratio", [(1, "1:1"), (2, "1:1"), (3, "1:1"), (2, "2:1"), (4, "2:1")])
def test_every_emitted_logit_matches_an_uncached_forward(models, window, ratio):
    model = models[0]
    cond = Condition(prompts=["a red fox", "a blue car"], aspect_ratio=ratio, negative_prompts=["", "blurry"])
    grid = model.grid_for(cond)
    seen = {}

    def trace(step, cells, logits):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = logits[:, k].clone()

    result = generate(model, cond, grid, window, SamplingOptions(cfg=3.0, top_k=20), seed=1, trace=trace)
    assert result.forward_passes == expected_passes(grid, window)
    expected = replay_logits(model, cond, True, build_schedule(*grid, window), result.tokens, model.special["eol"])
    assert sorted(seen) == list(range(grid[0] * grid[1]))
    for cell, logits in seen.items():
        torch.testing.assert_close(logits, expected[cell], atol=1e-4, rtol=1e-4, msg=f"cell {cell}")


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
