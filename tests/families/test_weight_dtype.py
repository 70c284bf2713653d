"""Decoder weights kept in 8 (or 16) bits and cast per layer at use, for every family."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.four_families import FAMILIES
from zipar import api
from zipar.core import static_step
from zipar.core.loop import generate
from zipar.core.sampling import SamplingOptions
from zipar.errors import ZipARError
from zipar.nets.stored import StoredLinear, parameter_bytes, store_linears

GREEDY = SamplingOptions(cfg=3.0, greedy=True)
NARROW = ("fp8_e4m3fn", "fp8_e5m2", "bf16")
MANTISSA_BITS = {torch.float8_e4m3fn: 3, torch.float8_e5m2: 2, torch.bfloat16: 7}


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16])
def test_cast_per_layer_is_the_stored_weight_times_its_row_scale(dtype):
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(48, 24, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(24, 48, generator=g) * torch.logspace(-3, 0, 24)[:, None])  # rows of any size
    stored = StoredLinear.from_linear(linear, dtype)
    assert stored.weight.dtype == dtype and stored.bias.dtype == torch.float32
    x = torch.randn(3, 5, 48, generator=g)
    w = stored.dequantized(torch.float32)
    assert torch.equal(stored(x), F.linear(x, w, linear.bias))  # the forward is exactly this cast
    if dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        assert stored.scale.shape == (24, 1)
        row_max = linear.weight.abs().amax(1, keepdim=True)
        assert torch.allclose(w.abs().amax(1, keepdim=True), row_max, rtol=2 ** -MANTISSA_BITS[dtype])
        # relative rounding of normal numbers, plus the subnormal spacing for the smallest entries of a row
        bound = 2.0 ** -(MANTISSA_BITS[dtype] + 1) * linear.weight.abs() + stored.scale * 2.0 ** -9
        assert ((w - linear.weight).abs() <= bound * 1.0001).all()
    else:
        assert stored.scale is None and torch.equal(w, linear.weight.to(dtype).float())


@pytest.fixture
def tiny_paths(four_families):
    return four_families


def narrow_copy(model, name: str, weight_dtype: str):
    q = api.load_ar_model(model.source_path, "cpu", "fp32", weight_dtype)
    if name == "emu3":
        q.image_size, q.downsample = model.image_size, model.downsample
    if name == "lumina-mgpt":
        q.image_size = model.image_size
    return q


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("weight_dtype", NARROW)
def test_every_family_loads_and_decodes_with_narrow_weights(tiny_paths, family, weight_dtype):
    model, cond, grid = tiny_paths[family]
    q = narrow_copy(model, family, weight_dtype)
    dtype = api.WEIGHT_DTYPES[weight_dtype]
    stored = [m for stack in q.layer_stacks() for m in stack.modules() if isinstance(m, StoredLinear)]
    assert stored and all(m.weight.dtype == dtype for m in stored)
    assert not any(type(m) is nn.Linear for stack in q.layer_stacks() for m in stack.modules())
    assert q.dtype == torch.float32 and q.weight_dtype == dtype  # computes in fp32, keeps layers narrow
    full, narrow = parameter_bytes(*model.networks()), parameter_bytes(*q.networks())
    assert narrow < full * (0.75 if dtype.itemsize == 1 else 0.85)
    # the first pass's logits stay close to the full-precision model's
    a = model.start(cond, grid, True).prefix.logits
    b = q.start(cond, grid, True).prefix.logits
    assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > (0.99 if dtype.itemsize == 2 else 0.9)
    # the whole image decodes, eager and through the bucketed step alike
    eager = generate(q, cond, grid, 2, GREEDY)
    bucketed = generate(q, cond, grid, 2, GREEDY, compile_backend="none")
    assert torch.equal(eager.tokens, bucketed.tokens)
    assert eager.tokens.min() >= 0 and eager.tokens.max() < q.vocab_size
    static_step.release(q)


def test_traced_step_with_fp8_weights(tiny_paths):
    model, cond, grid = tiny_paths["lumina-mgpt"]
    q = narrow_copy(model, "lumina-mgpt", "fp8_e4m3fn")
    eager = generate(q, cond, grid, 2, GREEDY)
    traced = generate(q, cond, grid, 2, GREEDY, compile="on", compile_backend="eager")
    assert torch.equal(eager.tokens, traced.tokens)
    static_step.release(q)


def test_bad_weight_dtype_and_a_family_without_layer_stacks(tiny_paths, tmp_path):
    model, _, _ = tiny_paths["llamagen"]
    with pytest.raises(ZipARError, match="weight dtype must be one of default, bf16, fp16, fp8_e4m3fn, fp8_e5m2"):
        api.load_ar_model(model.source_path, "cpu", "fp32", "int4")
    from helpers.toy_family import write_toy_folder

    with pytest.raises(ZipARError, match="cannot keep its weights in another dtype"):
        api.load_ar_model(write_toy_folder(tmp_path / "toy"), "cpu", "fp32", "fp8_e4m3fn")


def test_store_linears_counts_every_matrix_of_a_layer():
    from helpers.tiny_gpt import make_tiny_gpt

    gpt = make_tiny_gpt("c2i").fuse()
    assert store_linears(gpt.layers, torch.float8_e4m3fn) == 4 * len(gpt.layers)  # wqkv, wo, w13 (w1 + w3), w2
