"""SimpleAR: release-shaped folders, the official recipe, exactness under ZipAR."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from helpers.reference_seq import replay_logits  # noqa: E402
from helpers.simplear_fixtures import CODES, write_simplear, write_simplear_tokenizer  # noqa: E402
from zipar import api  # noqa: E402
from zipar.core.loop import expected_passes, generate  # noqa: E402
from zipar.core.sampling import SamplingOptions  # noqa: E402
from zipar.core.schedule import build_schedule  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.families.base import Condition  # noqa: E402
from zipar.families.simplear import SimpleARModel  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return write_simplear(tmp_path_factory.mktemp("simplear") / "SimpleAR-0.5B-RL")


@pytest.fixture(scope="module")
def model(built):
    return api.load_ar_model(built[0], "cpu", "fp32")


# ----------------------------------------------------------------------------- the official code, restated

POSITIVE = "<|t2i|>" + "A highly realistic image of " + "{}" + "<|soi|>"
NEGATIVE = ("<|t2i|>" + "An image of aerial view, overexposed, low quality, deformation, a poor composition, bad hands, "
            "bad teeth, bad eyes, bad limbs, distortion" + "<|soi|>")


@torch.no_grad()
def official_decode(hf_model, tokenizer, prompt: str, side: int, cfg: float):
    """Greedy generation the way the release's generate.py drives it, on transformers' Qwen2, every
    token recomputed from scratch: both branches' logits turned into log-softmax over the whole
    vocabulary, guided as ``lsm_u + s * (lsm_c - lsm_u)`` (no guidance at s = 1), the image id read
    off as ``len(tokenizer) + code`` (restricted to the image ids: the official code would draw from
    the whole vocabulary and clamp). Returns codes [1, H, W] and per code (c, u) logits over the image ids."""
    offset = len(tokenizer)
    H = W = side // 16
    cond = tokenizer(POSITIVE.format(prompt))["input_ids"]
    uncond = tokenizer(NEGATIVE)["input_ids"]
    image = slice(offset, offset + CODES)

    def last(seq):
        return hf_model.lm_head(hf_model.model(input_ids=torch.tensor([seq])).last_hidden_state[0, -1]).float()

    codes, logits = [], []
    for _ in range(H * W):
        c = last(cond)
        scores = F.log_softmax(c, -1)
        u = None
        if cfg != 1.0:
            u = last(uncond)
            lu = F.log_softmax(u, -1)
            scores = cfg * (scores - lu) + lu
            # our guidance in logit space differs from the official one by one constant per row
            ours = u[image] + cfg * (c[image] - u[image])
            delta = scores[image] - ours
            torch.testing.assert_close(delta, delta[:1].expand_as(delta), atol=1e-3, rtol=0)
        code = int(scores[image].argmax())
        codes.append(code)
        logits.append((c[image], None if u is None else u[image]))
        cond.append(offset + code)
        uncond.append(offset + code)
    return torch.tensor(codes).view(1, H, W), logits


def greedy(cfg):
    return SamplingOptions(cfg=cfg, greedy=True)


# ----------------------------------------------------------------------------- loading and detection

def test_release_folder_loads_as_simplear(built, model):
    folder, hf, offset = built
    assert type(model) is SimpleARModel and model.family == "simplear" and model.row0_first is True
    assert model.vocab_size == CODES and model.image_offset == offset == len(model.tokenizer)
    assert torch.equal(model.net.code_ids, torch.arange(offset, offset + CODES))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"] and config["vocab_size"] == offset + CODES
    # tied: the file holds no lm_head; the image rows of the head are the embedding's
    assert torch.equal(model.net.image_head.weight, hf.model.embed_tokens.weight[offset:offset + CODES])
    assert model.config.qkv_bias and not model.config.attention_bias and model.config.rope_theta == 1e6
    assert model.defaults.cfg == 6.0 and model.defaults.top_k == 64000 and model.defaults.temperature == 1.0
    assert model.native_image_size == 1024 and model.grid_for(Condition(prompts=["a"])) == (64, 64)


def test_untied_head_and_the_release_class_name(tmp_path):
    folder, hf, offset = write_simplear(tmp_path / "untied", seed=3, tied=False, architecture="SimpARForCausalLM",
                                        extra_vocab=5)
    m = api.load_ar_model(folder, "cpu", "fp32")
    assert type(m) is SimpleARModel
    assert torch.equal(m.net.image_head.weight, hf.lm_head.weight[offset:offset + CODES])


def with_tokens(built, folder, added, architecture=None):
    """A copy of the release folder with another tokenizer (and class name)."""
    shutil.copytree(built[0], folder)
    write_simplear_tokenizer(folder, added)
    if architecture:
        config = json.loads((folder / "config.json").read_text())
        config["architectures"] = [architecture]
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_plain_qwen2_folder_is_not_claimed(built, tmp_path):
    folder = with_tokens(built, tmp_path / "Qwen2-tiny", ["<|im_start|>", "<|im_end|>"])
    assert not SimpleARModel.detect(folder)
    with pytest.raises(ZipARError, match="'qwen2'"):
        api.load_ar_model(folder, "cpu", "fp32")


def test_prompt_layout_is_the_official_recipe(built, model):
    tok = model.tokenizer
    rows = model.prompt_rows(Condition(prompts=["a red fox", "a blue car"]), True)
    assert rows[0] == tok(POSITIVE.format("a red fox"))["input_ids"] and rows[2] == tok(NEGATIVE)["input_ids"]
    assert rows[0][0] == tok.convert_tokens_to_ids("<|t2i|>") and rows[0][-1] == tok.convert_tokens_to_ids("<|soi|>")
    assert tok.decode(rows[0][1:-1]) == "A highly realistic image of a red fox"  # nothing unknown, no BOS
    assert rows[2] == rows[3] and len(rows) == 4
    own = model.prompt_rows(Condition(prompts=["a red fox"], negative_prompts=["blurry dark"]), True)
    assert tok.decode(own[1]) == "<|t2i|> blurry dark <|soi|>"
    codes = (torch.arange(16).view(4, 4) * 4099) % CODES
    seq = model.sequence("a red fox", codes)  # no row ends, no closing token
    assert seq == rows[0] + [model.image_offset + int(c) for c in codes.flatten()]


def test_sizes_are_square_multiples_of_16(model):
    for side in (256, 512, 768, 1024):
        assert model.grid_for(Condition(prompts=["a"]), side) == (side // 16, side // 16)
    with pytest.raises(ZipARError, match="square"):
        model.grid_for(Condition(prompts=["a"], aspect_ratio="16:9"))
    with pytest.raises(ZipARError, match="multiple of 16"):
        model.grid_for(Condition(prompts=["a"]), 1000)


# ----------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("cfg", [1.0, 6.0])
def test_ntp_equals_the_official_decoder(built, model, cfg):
    """Tokens, and the logits of both branches, equal the official recipe restated on transformers' Qwen2."""
    cond = Condition(prompts=["a red fox"])
    grid = model.grid_for(cond, 64)
    codes, logits = official_decode(built[1], model.tokenizer, "a red fox", 64, cfg)
    seen = {}

    def trace(step, cells, out):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = out[:, k].clone()

    got = generate(model, cond, grid, grid[1], greedy(cfg), trace=trace)
    assert torch.equal(got.tokens, codes) and got.forward_passes == 16
    for cell, (c, u) in enumerate(logits):
        torch.testing.assert_close(seen[cell][0], c, atol=1e-4, rtol=1e-4)
        if u is not None:
            torch.testing.assert_close(seen[cell][1], u, atol=1e-4, rtol=1e-4)
    assert len(set(got.tokens.flatten().tolist())) > 3, "degenerate model: the check would be vacuous"


@pytest.mark.parametrize("static", [None, "none"], ids=["eager", "bucketed"])
@pytest.mark.parametrize("row0_first", [None, False], ids=["row0-first", "window-rule"])
@pytest.mark.parametrize("window", [1, 3])
def test_every_emitted_logit_matches_an_uncached_forward(model, window, row0_first, static):
    cond = Condition(prompts=["a red fox", "a blue car"])
    grid = model.grid_for(cond, 64)
    seen = {}

    def trace(step, cells, logits):
        for k, cell in enumerate(cells.tolist()):
            seen[cell] = logits[:, k].clone()

    # greedy: sorting 64000 logits per cell for a sampled draw would take most of the test's time
    result = generate(model, cond, grid, window, greedy(6.0), trace=trace, row0_first=row0_first,
                      compile_backend=static)
    rule = model.row0_first if row0_first is None else row0_first
    assert result.forward_passes == expected_passes(grid, window, rule)
    expected = replay_logits(model, cond, True, build_schedule(*grid, window, rule), result.tokens, None)
    assert sorted(seen) == list(range(grid[0] * grid[1]))
    for cell, logits in seen.items():
        torch.testing.assert_close(logits, expected[cell], atol=1e-4, rtol=1e-4, msg=f"cell {cell}")


def test_pass_counts_row0_first():
    table = {16: (256, 256, 144, 88), 32: (1024, 544, 304, 184), 48: (2304, 832, 464, 280),
             64: (4096, 1120, 624, 376)}
    for side, (ntp, w16, w8, w4) in table.items():
        grid = (side, side)
        assert expected_passes(grid, side, True) == ntp
        assert [expected_passes(grid, w, True) for w in (16, 8, 4)] == [w16, w8, w4]
    assert expected_passes((64, 64), 8, True) == 2 * 64 + 62 * 8


def test_8bit_weights_keep_the_qkv_biases(built):
    m = api.load_ar_model(built[0], "cpu", "fp32", weight_dtype="fp8_e4m3fn")
    qkv = m.net.lm.layers[0].self_attn.qkv
    assert qkv.bias is not None and m.net.lm.layers[0].self_attn.o_proj.bias is None
    out = generate(m, Condition(prompts=["a red fox"]), (4, 4), 2, SamplingOptions(cfg=6.0, top_k=64000), seed=2)
    assert out.tokens.shape == (1, 4, 4) and int(out.tokens.max()) < CODES


# ----------------------------------------------------------------------------- bad files

def test_bad_folders_give_one_clear_error(built, tmp_path):
    folder, _, offset = built
    no_soi = with_tokens(built, tmp_path / "no-soi", ["<|t2i|>", "<|i2t|>", "<|vtokens|>"], "SimpARForCausalLM")
    with pytest.raises(ZipARError, match=r"<\|soi\|>"):
        api.load_ar_model(no_soi, "cpu")
    short = tmp_path / "short-vocab"
    shutil.copytree(folder, short)
    config = json.loads((short / "config.json").read_text())
    config["vocab_size"] = offset + CODES - 1
    (short / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZipARError, match="64000 image codes"):
        api.load_ar_model(short, "cpu")
    untied = tmp_path / "untied-no-head"
    shutil.copytree(folder, untied)
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (untied / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZipARError, match="lm_head"):
        api.load_ar_model(untied, "cpu")
    wide = tmp_path / "wrong-width"
    shutil.copytree(folder, wide)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 64
    (wide / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZipARError, match="do not belong together"):
        api.load_ar_model(wide, "cpu")
