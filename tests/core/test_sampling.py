import pytest
import torch

from helpers.tiny_gpt import make_tiny_gpt
from zipar.conditions import class_condition
from zipar.core.loop import generate
from zipar.errors import ZipARError
from zipar.families.llamagen import LlamaGenModel
from zipar.core.sampling import SamplingOptions, combine_guidance, filter_logits, sample_tokens


def test_guidance_formula():
    cond, uncond = torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 0.0]])
    out = combine_guidance(torch.cat([cond, uncond]), 4.0)
    assert torch.equal(out, uncond + 4.0 * (cond - uncond))


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[0.0, 5.0, 1.0, 3.0, 2.0]])
    kept = filter_logits(logits, top_k=2, top_p=1.0).isfinite()
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = filter_logits(probs.log(), top_k=0, top_p=0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5+0.3 >= 0.7
    kept = filter_logits(probs.log(), top_k=0, top_p=0.4).isfinite()
    assert kept.tolist() == [[True, False, False, False]]  # the top token always survives


def test_sampling_respects_filters():
    logits = torch.randn(4000, 50, generator=torch.Generator().manual_seed(0))
    opts = SamplingOptions(top_k=3)
    ids = sample_tokens(logits, opts, seed=1)
    top3 = logits.topk(3, dim=-1).indices
    assert (ids[:, None] == top3).any(-1).all()


def test_greedy_is_argmax():
    logits = torch.randn(3, 7, 11)
    assert torch.equal(sample_tokens(logits, SamplingOptions(greedy=True)), logits.argmax(-1))


@pytest.mark.parametrize("window", [2, 6])
def test_same_seed_same_image_different_seed_different_image(window):
    model = LlamaGenModel(make_tiny_gpt("c2i", seed=4))
    opts = SamplingOptions(cfg=2.0, temperature=1.0, top_k=20, top_p=0.95)
    a = generate(model, class_condition([1, 2]), (4, 6), window, opts, seed=123)
    b = generate(model, class_condition([1, 2]), (4, 6), window, opts, seed=123)
    c = generate(model, class_condition([1, 2]), (4, 6), window, opts, seed=124)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_batch_repeats_each_condition():
    model = LlamaGenModel(make_tiny_gpt("c2i", seed=4))
    greedy = SamplingOptions(cfg=2.0, greedy=True)
    r = generate(model, class_condition([1, 2]), (3, 4), 2, greedy, batch=3)
    assert r.tokens.shape == (6, 3, 4)
    assert all(torch.equal(r.tokens[i], r.tokens[0]) for i in range(3))
    assert all(torch.equal(r.tokens[i], r.tokens[3]) for i in range(3, 6))
    assert not torch.equal(r.tokens[0], r.tokens[3])


@pytest.mark.parametrize(
    "opts,match",
    [
        (SamplingOptions(temperature=0.0), "temperature"),
        (SamplingOptions(top_k=-1), "top-k"),
        (SamplingOptions(top_p=0.0), "top-p"),
        (SamplingOptions(cfg=-1.0), "CFG"),
    ],
)
def test_bad_sampling_options(opts, match):
    model = LlamaGenModel(make_tiny_gpt("c2i"))
    with pytest.raises(ZipARError, match=match):
        generate(model, class_condition([1]), (2, 2), 1, opts)


def test_progress_callback_sees_every_pass_and_can_interrupt():
    model = LlamaGenModel(make_tiny_gpt("c2i"))
    seen = []

    def callback(p):
        seen.append((p.step, p.total, int(p.filled.sum())))

    generate(model, class_condition([1]), (4, 4), 2, SamplingOptions(cfg=1.0), callback=callback)
    assert [s for s, _, _ in seen] == list(range(1, 13)) and seen[-1][1] == 12
    assert seen[-1][2] == 16 and all(a[2] < b[2] for a, b in zip(seen, seen[1:]))

    class Stop(Exception):
        pass

    def stop_at_3(p):
        if p.step == 3:
            raise Stop

    with pytest.raises(Stop):
        generate(model, class_condition([1]), (4, 4), 2, SamplingOptions(cfg=1.0), callback=stop_at_3)


def test_blocked_cumulative_sums_equal_a_plain_scan():
    from zipar.core.sampling import cumulative

    w = torch.rand(3, 2, 16384, dtype=torch.float64)
    torch.testing.assert_close(cumulative(w), w.cumsum(-1), rtol=1e-12, atol=1e-9)
    small = torch.rand(2, 100)
    assert torch.equal(cumulative(small), small.cumsum(-1))  # short vocabularies: one scan
