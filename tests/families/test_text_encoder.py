"""flan-t5 caption features through transformers, on a tiny T5 saved as a HF folder."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from helpers.tiny_gpt import make_tiny_gpt  # noqa: E402
from zipar.conditions import caption_condition  # noqa: E402
from zipar.core.loop import generate  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.families.llamagen import LlamaGenModel  # noqa: E402
from zipar.core.sampling import SamplingOptions  # noqa: E402
from zipar.text_encoder import MAX_TOKENS, T5TextEncoder, load_caption_embeddings  # noqa: E402

WORDS = ["<pad>", "</s>", "<unk>", "a", "blue", "car", "photo", "of", "dog", "red"]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    folder = tmp_path_factory.mktemp("flan-t5-tiny")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(WORDS), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu")
    T5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def test_features_are_120_tokens_with_a_mask(t5_folder):
    enc = T5TextEncoder(t5_folder)
    feats, mask = enc.encode(["A photo of a blue car", "dog"])
    assert feats.shape == (2, MAX_TOKENS, 24) and mask.shape == (2, MAX_TOKENS)
    assert mask.sum(1).tolist() == [7, 2]  # words + </s>
    cond = enc.condition(["A photo of a blue car", "dog"])
    # left padding: the real tokens sit right before the image, in their original order
    assert cond.caption_mask[0, -7:].all() and not cond.caption_mask[0, :-7].any()
    torch.testing.assert_close(cond.caption_features[0, -7:], feats[0, :7])
    torch.testing.assert_close(cond.caption_features[1, -2:], feats[1, :2])


def test_prompt_to_tokens_end_to_end(t5_folder):
    enc = T5TextEncoder(t5_folder)
    model = LlamaGenModel(make_tiny_gpt("t2i", prefix_len=MAX_TOKENS, caption_dim=24))
    result = generate(model, enc.condition(["red dog"]), (3, 3), 2, SamplingOptions(cfg=3.0), seed=1)
    assert result.tokens.shape == (1, 3, 3)


def test_caption_embedding_file(tmp_path):
    from safetensors.torch import save_file

    feats, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    save_file({"features": feats, "mask": mask}, tmp_path / "caps.safetensors")
    cond = load_caption_embeddings(tmp_path / "caps.safetensors")
    expected = caption_condition(feats, mask)
    assert torch.equal(cond.caption_features, expected.caption_features)
    assert cond.caption_mask[0].tolist() == [False, False, False, True, True]
    save_file({"x": feats}, tmp_path / "bad.safetensors")
    with pytest.raises(ZipARError, match="features"):
        load_caption_embeddings(tmp_path / "bad.safetensors")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ZipARError, match="config.json"):
        T5TextEncoder(tmp_path)
