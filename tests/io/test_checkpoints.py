"""Official checkpoint containers load, reproduce their logits, and bad files fail clearly."""
import pytest
import torch

from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar.api import load_ar_model
from zipar.io.checkpoint import read_state_dict
from zipar.errors import ZipARError
from zipar.nets.llamagen_gpt import infer_gpt_config
from zipar.families.llamagen import checkpoint_kind


def probe_logits(gpt) -> torch.Tensor:
    """Full causal forward on fixed inputs: a fingerprint of every weight."""
    cfg = gpt.config
    g = torch.Generator().manual_seed(0)
    if cfg.model_type == "c2i":
        prefix = gpt.class_prefix(torch.tensor([2]))
    else:
        prefix = gpt.caption_prefix(torch.randn(1, cfg.prefix_len, cfg.caption_dim, generator=g))
    h = torch.cat([prefix, gpt.tok_embeddings(torch.randint(0, cfg.vocab_size, (1, 6), generator=g))], dim=1)
    T = h.shape[1]
    with torch.no_grad():
        return gpt.logits(gpt.hidden(h, gpt.rope_table(3, 3)[:T], torch.ones(T, T, dtype=torch.bool).tril()))


@pytest.mark.parametrize("kind", ["c2i", "t2i"])
@pytest.mark.parametrize("fmt", ["model.pt", "module.pt", "state_dict.pt", "bare.pt", "weights.safetensors"])
def test_containers_roundtrip_exactly(tmp_path, kind, fmt):
    gpt = make_tiny_gpt(kind, seed=7)
    before = probe_logits(gpt)
    path = tmp_path / f"{kind}_{fmt}"
    wrapper = None if fmt.startswith("bare") else fmt.split(".")[0]
    save_official_gpt(gpt, path, wrapper=wrapper)
    loaded = load_ar_model(path, device="cpu", precision="fp32")
    assert loaded.model_type == kind
    assert loaded.config == gpt.config
    assert torch.equal(probe_logits(loaded.gpt), before)


def test_kind_and_config_read_from_keys(tmp_path):
    c2i, t2i = make_tiny_gpt("c2i"), make_tiny_gpt("t2i")
    assert checkpoint_kind(c2i.state_dict()) == "llamagen-c2i"
    assert checkpoint_kind(t2i.state_dict()) == "llamagen-t2i"
    cfg = infer_gpt_config(t2i.state_dict())
    assert (cfg.model_type, cfg.prefix_len, cfg.caption_dim) == ("t2i", 8, 24)
    assert infer_gpt_config(c2i.state_dict()).num_classes == 10


@pytest.mark.parametrize("dim,heads,name", [(768, 12, "B"), (1024, 16, "L"), (1280, 20, "XL"), (1536, 24, "XXL"), (3200, 32, "3B"), (640, 10, "custom-640")])
def test_head_count_from_published_table(dim, heads, name):
    sd = {
        "tok_embeddings.weight": torch.empty(16384, dim, device="meta"),
        "layers.0.attention.wqkv.weight": torch.empty(3 * dim, dim, device="meta"),
        "layers.0.feed_forward.w1.weight": torch.empty(8, dim, device="meta"),
        "cls_embedding.embedding_table.weight": torch.empty(1001, dim, device="meta"),
    }
    cfg = infer_gpt_config(sd)
    assert (cfg.n_head, cfg.n_kv_head, cfg.num_classes, cfg.size_name) == (heads, heads, 1000, name)


def test_missing_file(tmp_path):
    with pytest.raises(ZipARError, match="not found"):
        load_ar_model(tmp_path / "c2i_L_384.pt")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ZipARError, match="cannot read"):
        read_state_dict(path)
    torch.save({"steps": 3}, tmp_path / "empty.pt")
    with pytest.raises(ZipARError, match="no state dict"):
        read_state_dict(tmp_path / "empty.pt")


def test_unrelated_state_dict(tmp_path):
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "x.pt")
    with pytest.raises(ZipARError, match="not a LlamaGen GPT"):
        load_ar_model(tmp_path / "x.pt")


def test_truncated_checkpoint_is_named(tmp_path):
    gpt = make_tiny_gpt("c2i")
    sd = gpt.state_dict()
    del sd["layers.1.feed_forward.w2.weight"]
    torch.save({"model": sd}, tmp_path / "partial.pt")
    with pytest.raises(ZipARError, match="layers.1.feed_forward.w2.weight"):
        load_ar_model(tmp_path / "partial.pt")


def test_arbitrary_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ZipARError, match="cannot read"):
        read_state_dict(tmp_path / "evil.pt")
