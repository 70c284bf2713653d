"""Our GPT against logits recorded from the official LlamaGen model code.

The numbers below were produced once by LlamaGen's own ``Transformer`` (autoregressive/
models/gpt.py, run outside this project) loaded with ``deterministic_state_dict`` weights
for the tiny configs below, on the fixed inputs of ``golden_inputs``, 4x4 grid, full causal
forward. Matching them pins the key names, the 2D rotary layout (including the zeroed
condition positions), RMSNorm, SwiGLU and the caption MLP to the reference.
"""
import pytest
import torch

from helpers.tiny_gpt import deterministic_state_dict, golden_inputs, tiny_gpt_config
from zipar.nets.llamagen_gpt import LlamaGenGPT

GOLDEN_SHAPE = dict(dim=64, n_head=4, n_kv_head=4, ffn_hidden=176)  # the official ModelArgs(dim=64, n_layer=2, n_head=4, multiple_of=16)
GOLDEN = {
    "c2i": dict(
        prefix_len=1,
        total=17.945695877075195,
        last=[[0.1316777467727661, -0.4803973436355591, -0.31459885835647583, -0.3809036910533905],
              [0.1802387237548828, -0.674352765083313, 0.5945269465446472, -0.2934207618236542]],
        prefix_end=[[-0.06182205677032471, -0.2526327669620514, -0.9182182550430298, 0.05573511868715286],
                    [-0.06897410750389099, -0.08860412985086441, -0.4563796818256378, 0.6110255718231201]],
    ),
    "t2i": dict(
        prefix_len=120,
        total=-138.97000122070312,
        last=[[-0.25538045167922974, 0.33383646607398987, -0.2092151790857315, -0.2541147768497467],
              [0.04075154289603233, -0.3910519778728485, -0.285386860370636, 0.2731919288635254]],
        prefix_end=[[-0.22392421960830688, 0.01062173955142498, -0.3467286229133606, -0.4471975862979889],
                    [-0.18592569231987, -0.050578523427248, 0.09215323626995087, -0.7132486701011658]],
    ),
}


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
def test_logits_match_official_implementation(kind):
    golden = GOLDEN[kind]
    cfg = tiny_gpt_config(kind, prefix_len=golden["prefix_len"], **GOLDEN_SHAPE)
    gpt = LlamaGenGPT(cfg)
    gpt.load_state_dict(deterministic_state_dict(gpt), strict=True)
    gpt.eval()
    cond, tokens = golden_inputs(kind, cfg)
    prefix = gpt.class_prefix(cond) if kind == "c2i" else gpt.caption_prefix(cond)
    h = torch.cat([prefix, gpt.tok_embeddings(tokens)], dim=1)
    T = h.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    with torch.no_grad():
        logits = gpt.logits(gpt.hidden(h, gpt.rope_table(4, 4)[:T], mask))
    P = cfg.prefix_len
    torch.testing.assert_close(logits[:, -1, :4], torch.tensor(golden["last"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits[:, P - 1, :4], torch.tensor(golden["prefix_end"]), rtol=1e-4, atol=1e-5)
    assert logits.sum().item() == pytest.approx(golden["total"], rel=1e-4, abs=1e-3)
