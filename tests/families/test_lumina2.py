"""Lumina-mGPT 2.0: release-shaped folders, the official layout and CFG schedule, exactness under ZipAR."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")

from helpers.lumina2_fixtures import IMAGE_OFFSET, SPECIALS, write_lumina2  # noqa: E402
from helpers.lumina_fixtures import write_lumina  # noqa: E402
from helpers.reference_seq import replay_logits  # noqa: E402
from zipar import api  # noqa: E402
from zipar.core.loop import expected_passes, generate  # noqa: E402
from zipar.core.sampling import SamplingOptions  # noqa: E402
from zipar.core.schedule import build_schedule  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.families.base import Condition  # noqa: E402
from zipar.families.lumina import LuminaMGPTModel  # noqa: E402
from zipar.families.lumina2 import LuminaMGPT2Model, official_scales  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return write_lumina2(tmp_path_factory.mktemp("lumina2") / "Lumina-mGPT-2.0")


@pytest.fixture(scope="module")
def model(built):
    return api.load_ar_model(built[0], "cpu", "fp32")


def greedy(cfg, schedule="official"):
    return SamplingOptions(cfg=cfg, greedy=True, cfg_schedule=schedule)


# ----------------------------------------------------------------------------- the official code, restated

@torch.no_grad()
def official_decode(hf_model, prompt_text: str, size_tokens: list[int], cfg: float, schedule: str = "official"):
    """Greedy generation the way the release's processors drive it, on transformers' Chameleon
    (base model + lm_head: the conditional-generation class would mask image logits), every
    token recomputed from scratch.

    The token kind comes from the sequence alone, as the official logits processor decides it:
    after begin-of-image and the two size tokens, a row end whenever (tokens + 1) % (W + 1) == 0,
    end-of-image at (W + 1) * H + 1, else an image id 155000.. (argmax over those). The guidance
    scale is one running number updated at every token after the size tokens, row ends too:
    ``scale = max(4, scale * (1 - n / D))`` with n the tokens after begin-of-image and
    D = h_units * 2 * w_units * 2. Returns (the whole conditional sequence, per code: the
    conditional and unconditional logits over the image ids)."""
    vocab = SPECIALS
    h_units, w_units = size_tokens[0] - 151671, size_tokens[1] - 151671
    H, W = h_units * 4, w_units * 4
    cond = [vocab["<|endoftext|>"], *prompt_text, vocab["<reserved08706>"], vocab["<racm3:break>"], *size_tokens]
    uncond = [vocab["<racm3:break>"], *size_tokens]
    scale, image_logits = cfg, []
    image_ids = torch.arange(IMAGE_OFFSET, IMAGE_OFFSET + 16384)

    def last(seq):
        return hf_model.lm_head(hf_model.model(input_ids=torch.tensor([seq])).last_hidden_state[0, -1])

    while True:
        boi = len(cond) - 1 - cond[::-1].index(vocab["<racm3:break>"])
        n = len(cond) - boi - 1  # tokens after begin-of-image
        tokens = n - 2
        if schedule == "official" and cfg != 1.0:
            scale = max(4.0, scale * (1 - n / (h_units * 2 * w_units * 2)))
        if (tokens + 1) % (W + 1) == 0:
            nxt = vocab["<reserved08799>"]
        elif tokens + 1 == (W + 1) * H + 1:
            cond.append(vocab["<eoss>"])
            return cond, image_logits
        else:
            c = last(cond)[image_ids]
            if cfg != 1.0:
                u = last(uncond)[image_ids]
                image_logits.append((c, u))
                guided = scale * (c - u) + u
            else:
                image_logits.append((c, None))
                guided = c
            nxt = IMAGE_OFFSET + int(guided.argmax())
        cond.append(nxt)
        uncond.append(nxt)


def prompt_word_ids(model, text):
    return model.tokenizer.encode(text, add_special_tokens=False)


# ----------------------------------------------------------------------------- loading and layout

def test_release_folder_is_lumina2_and_1_0_folders_stay_1_0(built, model, tmp_path):
    assert type(model) is LuminaMGPT2Model and model.family == "lumina-mgpt-2"
    assert model.vocab_size == 16384 and torch.equal(model.net.code_ids, torch.arange(155000, 171384))
    assert model.image_size == 768 and model.config.max_positions == 10240 and model.config.qk_norm
    config = json.loads((built[0] / "config.json").read_text())
    assert config["architectures"] == ["ChameleonXLLMXForConditionalGeneration"] and config["model_type"] == "chameleon"
    old, _ = write_lumina(tmp_path / "Lumina-mGPT-7B-768")
    assert type(api.load_ar_model(old, "cpu", "fp32")) is LuminaMGPTModel


def test_image_rows_of_lm_head_are_the_offset_rows(built, model):
    head = built[1].lm_head.weight
    assert torch.equal(model.net.image_head.weight, head[155000:171384].to(torch.bfloat16).float())


def test_prompt_and_sequence_follow_the_official_layout(model):
    cond = Condition(prompts=["a red fox"], aspect_ratio="2:1")
    grid = model.grid_for(cond, 128)
    assert grid == (12, 20)  # 96 px high, 160 wide: the crop walk's nearest to 2:1 at a 128 px budget
    rows = model.prompt_rows(cond, True, grid)
    header = [SPECIALS["<racm3:break>"], 151671 + 3, 151671 + 5]  # begin-of-image, height 3 x 32 px, width 5 x 32 px
    assert rows[0][0] == SPECIALS["<|endoftext|>"]  # no BOS in a Qwen tokenizer: the release uses EOS
    assert rows[0][-4:] == [SPECIALS["<reserved08706>"], *header]
    assert model.tokenizer.decode(rows[0][1:-4]) == "Generate an image of 160x96 according to the following prompt: a red fox"
    assert rows[1] == header  # the official unconditional branch: from begin-of-image on, no text
    codes = (torch.arange(12 * 20).view(12, 20) * 37) % 16384
    seq = model.sequence("a red fox", codes)
    P = len(rows[0])
    assert seq[:P] == rows[0] and len(seq) == P + 12 * 21 + 1
    for r in range(12):
        row = seq[P + 21 * r: P + 21 * r + 21]
        assert row[:20] == [155000 + int(c) for c in codes[r]] and row[20] == SPECIALS["<reserved08799>"]
    assert seq[-1] == SPECIALS["<eoss>"]


def test_sizes_and_the_position_limit(model):
    assert model.grid_for(Condition(prompts=["a"])) == (96, 96)  # 768 px native: 9312 positions with row ends
    assert model.grid_for(Condition(prompts=["a"], aspect_ratio="16:9")) == (72, 128)  # 1024 x 576
    with pytest.raises(ZipARError, match="10240"):
        model.grid_for(Condition(prompts=["a"]), 1024)  # 128 rows of 129 positions
    with pytest.raises(ZipARError, match="multiples of 4"):
        model.start(Condition(prompts=["a"]), (6, 8), True)
    with pytest.raises(ZipARError, match="size token"):
        model.image_prefix((4 * 49, 4))


# ----------------------------------------------------------------------------- the CFG schedule

def test_official_schedule_restated():
    # D = 48 * 48 at 768 px; the running scale starts at n = 2 and counts row ends as tokens
    s = official_scales((96, 96), 7.0)
    expected, scale, k = [], 7.0, 0
    for index in range(96 * 97):
        scale = max(4.0, scale * (1 - (index + 2) / 2304))
        if index % 97 != 96:
            expected.append(scale)
    assert torch.equal(s, torch.tensor(expected, dtype=torch.float32))
    assert s[0] == pytest.approx(7 * (1 - 2 / 2304)) and s[1] == pytest.approx(7 * (1 - 2 / 2304) * (1 - 3 / 2304))
    assert bool((s[:-1] >= s[1:]).all()) and float(s.min()) == 4.0 and int((s > 4.0).sum()) < 96  # 4.0 within row 0
    assert torch.equal(official_scales((96, 96), 3.0), torch.full((96 * 96,), 4.0))  # never below 4.0
    assert torch.equal(official_scales((96, 96), 4.0), torch.full((96 * 96,), 4.0))


def test_schedule_choices(model):
    assert model.guidance_scales((8, 8), 7.0, "constant") is None
    assert model.guidance_scales((8, 8), 1.0, "official") is None  # 1.0: the official code skips guidance
    assert model.guidance_scales((8, 8), 7.0, "official").shape == (64,)
    with pytest.raises(ZipARError, match="CFG schedule"):
        SamplingOptions(cfg_schedule="cosine").validate()


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("cfg,schedule,ratio,side", [
    (1.0, "official", "1:1", 64), (12.0, "official", "1:1", 64), (3.0, "official", "2:1", 64),
    (2.5, "constant", "1:2", 64)])
def test_ntp_equals_the_official_decoder(built, model, cfg, schedule, ratio, side):
    """Tokens, and the logits of both branches, equal the release's processors restated on
    transformers' Chameleon; 12.0 at 64 px (8 x 8 codes, D = 16) decays to 4.0 over the first 5 tokens."""
    cond = Condition(prompts=["a red fox"], aspect_ratio=ratio)
    grid = model.grid_for(cond, side)
    prefix = model.image_prefix(grid)
    seq, logits = official_decode(built[1], prompt_word_ids(model, "Generate an image of {}x{} according to the "
                                  "following prompt:\na red fox".format(grid[1] * 8, grid[0] * 8)),
                                  prefix[1:], cfg, schedule)
    seen = {}

    def trace(step, cells, out):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = out[:, k].clone()

    got = generate(model, cond, grid, grid[1], greedy(cfg, schedule), trace=trace)
    P = len(model.prompt_ids("a red fox", grid))
    assert seq == model.sequence("a red fox", got.tokens[0])  # header, row ends and end-of-image included
    assert seq[P - 3:P] == prefix and got.forward_passes == grid[0] * grid[1]
    for cell, (c, u) in enumerate(logits):
        torch.testing.assert_close(seen[cell][0], c, atol=1e-4, rtol=1e-4)
        if u is not None:
            torch.testing.assert_close(seen[cell][1], u, atol=1e-4, rtol=1e-4)
    assert len(set(got.tokens.flatten().tolist())) > 3, "degenerate model: the check would be vacuous"


def test_the_schedule_changes_the_tokens(model):
    """On this model the decaying scale picks other codes than a constant 12 (else the test above
    could not tell the schedules apart)."""
    cond = Condition(prompts=["a red fox"])
    grid = model.grid_for(cond, 64)
    official = generate(model, cond, grid, grid[1], greedy(12.0)).tokens
    constant = generate(model, cond, grid, grid[1], greedy(12.0, "constant")).tokens
    assert not torch.equal(official, constant)


@pytest.mark.parametrize("static", [None, "none"], ids=["eager", "bucketed"])
@pytest.mark.parametrize("row0_first", [None, True], ids=["window-rule", "row0-first"])
@pytest.mark.parametrize("window", [1, 3])
def test_every_emitted_logit_matches_an_uncached_forward(model, window, row0_first, static):
    cond = Condition(prompts=["a red fox", "a blue car"], aspect_ratio="2:1")
    grid = model.grid_for(cond, 64)
    assert grid == (4, 8)
    seen = {}

    def trace(step, cells, logits):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = logits[:, k].clone()

    result = generate(model, cond, grid, window, SamplingOptions(cfg=7.0, top_k=4096), seed=1, trace=trace,
                      row0_first=row0_first, compile_backend=static)
    rule = model.row0_first if row0_first is None else row0_first
    assert result.forward_passes == expected_passes(grid, window, rule)
    model.image_size = 64  # replay_logits asks the model for the prompt rows at its own size
    try:
        expected = replay_logits(model, cond, True, build_schedule(*grid, window, rule), result.tokens,
                                 model.special["eol"])
    finally:
        model.image_size = 768
    assert sorted(seen) == list(range(grid[0] * grid[1]))
    for cell, logits in seen.items():
        torch.testing.assert_close(logits, expected[cell], atol=1e-4, rtol=1e-4, msg=f"cell {cell}")


def test_row1_rule_and_pass_counts(model):
    """Row 1 starts by the window rule (as ZipAR's Lumina-mGPT code does): W + (H - 1) * window."""
    assert model.row0_first is False
    assert expected_passes((96, 96), 16, False) == 96 + 95 * 16 == 1616
    assert expected_passes((96, 96), 96, False) == 9216
    cond = Condition(prompts=["a red fox"])
    assert generate(model, cond, (8, 8), 2, greedy(1.0)).forward_passes == 8 + 7 * 2


@pytest.mark.parametrize("cfg", [12.0, 3.0])
def test_sampled_tokens_agree_across_eager_bucketed_and_speculative(model, cfg):
    """The per-cell scale reaches every path: one seed, the same tokens eager and bucketed; the
    speculative path (greedy) gives NTP's tokens."""
    cond = Condition(prompts=["a red fox"])
    grid = model.grid_for(cond, 64)
    opts = SamplingOptions(cfg=cfg, top_k=4096)
    eager = generate(model, cond, grid, 4, opts, seed=5).tokens
    assert torch.equal(generate(model, cond, grid, 4, opts, seed=5, compile_backend="none").tokens, eager)
    ntp = generate(model, cond, grid, grid[1], greedy(cfg)).tokens
    spec = generate(model, cond, grid, grid[1], greedy(cfg), speculative=True, draft_length=3)
    assert torch.equal(spec.tokens, ntp) and spec.forward_passes < grid[0] * grid[1]


def test_8bit_weights_load_and_draw(built):
    m = api.load_ar_model(built[0], "cpu", "fp32", weight_dtype="fp8_e4m3fn")
    cond = Condition(prompts=["a red fox"])
    out = generate(m, cond, (8, 8), 4, SamplingOptions(cfg=4.0, top_k=4096), seed=2)
    assert out.tokens.shape == (1, 8, 8) and int(out.tokens.max()) < 16384


# ----------------------------------------------------------------------------- bad files

def test_bad_folders_give_one_clear_error(built, tmp_path):
    folder = built[0]
    with pytest.raises(ZipARError, match="MoVQGAN"):
        api.load_vq(folder, "cpu")  # the language-model folder has no image decoder
    no_specials = tmp_path / "no-specials"
    shutil.copytree(folder, no_specials)
    tok = json.loads((no_specials / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<racm3:break>"]
    tok["model"]["vocab"].pop("<racm3:break>")
    (no_specials / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ZipARError, match="racm3:break"):
        api.load_ar_model(no_specials, "cpu")
    truncated = tmp_path / "truncated-head"
    shutil.copytree(folder, truncated)
    config = json.loads((truncated / "config.json").read_text())
    config["hidden_size"] = 64
    (truncated / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZipARError, match="do not belong together"):
        api.load_ar_model(truncated, "cpu")


def test_a_top_k_of_every_code_is_no_filter(model, monkeypatch):
    """top-k at or above the codes keeps every code: drawn as unfiltered (no sort of 16384 logits per cell),
    token for token the same as top-k 0."""
    from zipar.core import sampling

    cond = Condition(prompts=["a red fox"])
    with monkeypatch.context() as m:
        m.setattr(sampling, "filter_logits", lambda *a, **k: (_ for _ in ()).throw(AssertionError("sorted")))
        every = generate(model, cond, (8, 8), 3, SamplingOptions(cfg=4.0, top_k=16384), seed=9).tokens
    assert torch.equal(every, generate(model, cond, (8, 8), 3, SamplingOptions(cfg=4.0, top_k=0), seed=9).tokens)
    assert not torch.equal(every, generate(model, cond, (8, 8), 3, SamplingOptions(cfg=4.0, top_k=2), seed=9).tokens)
