"""Layers that bring their weights to the work per use (ComfyUI's low-VRAM streaming protocol,
``zipar.nets.castable``), and ``Family.place``: where the work runs, apart from the weights."""
from __future__ import annotations

import pytest
import torch

from helpers.four_families import FAMILIES
from zipar import api
from zipar.core.loop import generate
from zipar.core.sampling import SamplingOptions
from zipar.nets.castable import CastsWeights
from zipar.nets.stored import StoredLinear

GREEDY = SamplingOptions(cfg=3.0, greedy=True)


def castable(model) -> list:
    return [m for net in model.networks() for m in net.modules() if isinstance(m, CastsWeights)]


def greedy_run(model, cond, grid):
    logits = []
    result = generate(model, cond, grid, 2, GREEDY, seed=0, trace=lambda step, cells, lg: logits.append(lg.clone()))
    return result.tokens, torch.cat([lg.flatten() for lg in logits])


def streamed(model, cond, grid, patch=None):
    """A run with every castable layer flagged as ComfyUI flags layers it leaves in system memory."""
    layers, seen = castable(model), []
    try:
        for m in layers:
            m.comfy_cast_weights = True
            m.weight_function = [patch or (lambda w: seen.append(w.device) or w)]
        return (*greedy_run(model, cond, grid), seen)
    finally:
        for m in layers:  # back to the class defaults
            del m.comfy_cast_weights, m.weight_function


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_layers_give_the_same_logits(four_families, family):
    model, cond, grid = four_families[family]
    assert castable(model)  # every family has norms of its own
    tokens, logits = greedy_run(model, cond, grid)
    s_tokens, s_logits, seen = streamed(model, cond, grid)
    assert torch.equal(tokens, s_tokens) and torch.equal(logits, s_logits)
    assert len(seen) >= len(castable(model)) and all(d == model.device for d in seen)  # patched at each use


def test_streamed_8bit_layers_give_the_same_logits(four_families):
    model, cond, grid = four_families["llamagen"]
    narrow = api.load_ar_model(model.source_path, "cpu", "fp32", "fp8_e4m3fn")
    assert any(isinstance(m, StoredLinear) for m in castable(narrow))
    tokens, logits = greedy_run(narrow, cond, grid)
    s_tokens, s_logits, _ = streamed(narrow, cond, grid)
    assert torch.equal(tokens, s_tokens) and torch.equal(logits, s_logits)


def test_a_host_patch_on_the_way_is_applied(four_families):
    model, cond, grid = four_families["llamagen"]
    _, logits, _ = streamed(model, cond, grid, patch=lambda w: w * 0)  # every norm and stored layer zeroed
    assert torch.equal(logits, torch.zeros_like(logits))  # the final norm feeds the (bias-free) head nothing


@pytest.mark.parametrize("family", FAMILIES)
def test_place_moves_the_work_not_the_weights(four_families, family):
    model = four_families[family][0]
    weights = next(model.networks()[0].parameters()).device
    try:
        model.place(torch.device("meta"))
        assert model.device == torch.device("meta") and next(model.networks()[0].parameters()).device == weights
        net = model.networks()[0]
        lm = getattr(net, "lm", net)  # the chat families' language model, or LlamaGen's GPT
        assert lm.new_cache(1, 4).k[0].device == torch.device("meta")  # caches go where the work runs
    finally:
        model.place(None)
    assert model.device == weights
