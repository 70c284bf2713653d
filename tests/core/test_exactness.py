"""Exactness: NTP equals a naive decoder; every ZipAR logit equals an uncached forward."""
import pytest
import torch

from helpers.reference import naive_ntp, replay_logits
from helpers.tiny_gpt import make_tiny_gpt
from zipar.conditions import caption_condition, class_condition
from zipar.core.loop import expected_passes, generate
from zipar.families.llamagen import LlamaGenModel
from zipar.core.sampling import SamplingOptions
from zipar.core.schedule import build_schedule

GRID = (5, 6)


def tiny_model(kind: str) -> LlamaGenModel:
    return LlamaGenModel(make_tiny_gpt(kind, seed=1))


def condition(kind: str, model: LlamaGenModel):
    if kind == "c2i":
        return class_condition([3, 7])
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, model.config.prefix_len, model.config.caption_dim, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    return caption_condition(feats, mask)


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
@pytest.mark.parametrize("window", [GRID[1], GRID[1] + 5])
def test_full_window_is_next_token_prediction(kind, cfg, window):
    model = tiny_model(kind)
    cond = condition(kind, model)
    result = generate(model, cond, GRID, window, SamplingOptions(cfg=cfg, greedy=True))
    assert result.forward_passes == GRID[0] * GRID[1]
    expected = naive_ntp(model, cond, GRID, cfg)
    assert torch.equal(result.tokens, expected)
    assert len(set(result.tokens.flatten().tolist())) > 3, "degenerate model: the check would be vacuous"


@pytest.mark.parametrize("static", [None, "none"], ids=["eager", "bucketed"])
@pytest.mark.parametrize("row0_first", [True, False], ids=["row0-first", "row1-by-window"])
@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("window", range(1, GRID[1] + 1))
def test_every_emitted_logit_matches_an_uncached_forward(kind, window, row0_first, static):
    model = tiny_model(kind)
    cond = condition(kind, model)
    seen = {}

    def trace(step, cells, logits):
        for j, cell in enumerate(cells.tolist()):
            seen[cell] = logits[:, j].clone()

    result = generate(model, cond, GRID, window, SamplingOptions(cfg=3.0, temperature=1.0), seed=11, trace=trace,
                      row0_first=row0_first, compile_backend=static)
    assert result.forward_passes == expected_passes(GRID, window, row0_first)
    expected = replay_logits(model, cond, True, build_schedule(*GRID, window, row0_first), result.tokens)
    assert sorted(seen) == sorted(expected) == list(range(GRID[0] * GRID[1]))
    for cell in seen:
        torch.testing.assert_close(seen[cell], expected[cell], rtol=1e-4, atol=1e-4, msg=f"cell {cell}")


def test_zipar_context_really_differs_from_ntp():
    """Guards the test above: with a small window the logits of late rows must differ from NTP's."""
    model = tiny_model("c2i")
    cond = class_condition([3])
    ntp = generate(model, cond, GRID, GRID[1], SamplingOptions(cfg=1.0, greedy=True))
    sched = build_schedule(*GRID, 1)
    zip_logits = replay_logits(model, cond, False, sched, ntp.tokens)
    ntp_logits = replay_logits(model, cond, False, build_schedule(*GRID, GRID[1]), ntp.tokens)
    assert torch.allclose(zip_logits[1], ntp_logits[1])  # row 0 is sequential in both
    last = GRID[0] * GRID[1] - 1
    assert not torch.allclose(zip_logits[last], ntp_logits[last], atol=1e-3)


@pytest.mark.parametrize("window,passes", [(24, 576), (16, 400), (12, 312), (8, 224)])
def test_pass_counts_24x24(window, passes):
    model = LlamaGenModel(make_tiny_gpt("c2i", seed=2, n_layer=1, dim=32, n_head=2, n_kv_head=2, ffn_hidden=64))
    assert model.row0_first  # LlamaGen's official ZipAR: row 0 first, the paper's counts
    result = generate(model, class_condition([1]), (24, 24), window, SamplingOptions(cfg=1.0, greedy=True))
    assert result.forward_passes == passes
    assert result.stats()["forward_passes"] == passes


def test_grouped_query_attention_checkpoints_decode_exactly():
    model = LlamaGenModel(make_tiny_gpt("c2i", seed=3, n_head=4, n_kv_head=2))
    cond = class_condition([4])
    result = generate(model, cond, (3, 4), 4, SamplingOptions(cfg=2.0, greedy=True))
    assert torch.equal(result.tokens, naive_ntp(model, cond, (3, 4), 2.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_fp32(dtype):
    cond = class_condition([3, 7])
    full = tiny_model("c2i")
    half = LlamaGenModel(make_tiny_gpt("c2i", seed=1).to(dtype))
    first = {}
    for name, model in (("full", full), ("half", half)):
        result = generate(model, cond, (3, 4), 2, SamplingOptions(cfg=3.0, greedy=True),
                          trace=lambda s, cells, logits, name=name: first.setdefault(name, logits.float()))
        assert result.tokens.shape == (2, 3, 4) and result.dtype == str(model.dtype).removeprefix("torch.")
    torch.testing.assert_close(first["half"], first["full"], atol=0.05, rtol=0.05)
