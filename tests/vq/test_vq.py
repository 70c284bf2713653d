"""The VQ tokenizer: official key names and size, file round trips, decode/encode, errors."""
import hashlib

import pytest
import torch

from helpers.tiny import make_tiny_vq, save_official_vq, tiny_vq_config
from zipar.errors import ZipARError
from zipar.vq.llamagen import VQConfig, VQModel, infer_vq_config, is_vq_state_dict, load_vq, vq_from_state_dict

# Obtained once, offline, by building the reference models on the meta device
# (tokenizer/tokenizer_image/vq_model.py of FoundationVision/LlamaGen: VQ_16() and VQ_8()
# with default ModelArgs) and taking sum(p.numel() for p in model.parameters()),
# len(model.state_dict()) and sha256("\n".join(sorted(model.state_dict()))).
OFFICIAL = {
    16: (71_883_403, 344, "d226bebc8a9c8e91a8d0cfe5bb8f371b8afe4d01b68e592baaec15af73148ef6"),
    8: (70_109_835, 300, "50db2289b90c7c45f9492800157659859e1cbd97f21be2a912335c547d3c6573"),
}
OFFICIAL_KEY_SAMPLE = [
    "encoder.conv_in.weight", "encoder.conv_blocks.0.res.0.norm1.weight", "encoder.conv_blocks.1.res.0.conv2.bias",
    "encoder.conv_blocks.2.res.0.nin_shortcut.weight", "encoder.conv_blocks.4.attn.1.q.weight",
    "encoder.conv_blocks.0.downsample.conv.weight", "encoder.mid.1.proj_out.weight", "encoder.mid.2.norm2.bias",
    "encoder.norm_out.weight", "encoder.conv_out.weight", "decoder.conv_in.weight", "decoder.mid.0.conv1.weight",
    "decoder.conv_blocks.0.res.2.conv2.weight", "decoder.conv_blocks.0.attn.2.k.bias",
    "decoder.conv_blocks.0.upsample.conv.weight", "decoder.conv_blocks.1.res.0.nin_shortcut.weight",
    "decoder.conv_out.bias", "quant_conv.weight", "post_quant_conv.weight", "quantize.embedding.weight",
    "quantize.codebook_used",
]
NOT_OFFICIAL = ["encoder.conv_blocks.4.downsample.conv.weight", "encoder.conv_blocks.3.attn.0.q.weight",
                "decoder.conv_blocks.4.upsample.conv.weight", "encoder.conv_blocks.0.res.2.conv1.weight"]


@pytest.fixture(scope="module")
def tiny16():
    return make_tiny_vq(seed=0, downsample=16)


@pytest.fixture(scope="module")
def codes():
    return torch.randint(0, 64, (1, 3, 2), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def decoded(tiny16, codes):
    return tiny16.decode_codes(codes)


@pytest.mark.parametrize("ds", [16, 8])
def test_full_size_matches_official_layout(ds):
    with torch.device("meta"):
        model = VQModel(VQConfig(codebook_size=16384, codebook_embed_dim=8, ch_mult=tiny_vq_config(ds).ch_mult))
    keys = model.state_dict().keys()
    n_params, n_keys, key_hash = OFFICIAL[ds]
    assert model.downsample == ds
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert len(keys) == n_keys
    if ds == 16:
        assert set(OFFICIAL_KEY_SAMPLE) <= set(keys)
        assert not set(NOT_OFFICIAL) & set(keys)
    assert hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest() == key_hash


def test_tiny_has_official_key_names(tiny16):
    assert set(OFFICIAL_KEY_SAMPLE) <= set(tiny16.state_dict())
    assert tiny16.quantize.codebook_used.shape == (65536,)


@pytest.mark.parametrize("ds", [16, 8])
def test_inferred_config(ds):
    with torch.device("meta"):
        model = VQModel(tiny_vq_config(ds))
    sd = model.state_dict()
    assert infer_vq_config(sd) == model.config
    assert is_vq_state_dict(sd)
    sd.pop("quantize.codebook_used")
    assert infer_vq_config(sd) == model.config


@pytest.mark.parametrize("fmt", ["official.pt", "bare.pt", "file.safetensors", "no_usage.pt"])
def test_file_round_trip_decodes_identically(tmp_path, tiny16, codes, decoded, fmt):
    path = tmp_path / fmt
    if fmt == "official.pt" or fmt.endswith(".safetensors"):
        save_official_vq(tiny16, path)
    else:
        sd = tiny16.state_dict()
        if fmt == "no_usage.pt":
            sd.pop("quantize.codebook_used")
        torch.save(sd, path)
    loaded = load_vq(path)
    assert loaded.source_path == str(path)
    assert loaded.config == tiny16.config and not loaded.training
    assert torch.equal(loaded.decode_codes(codes), decoded)


def test_decode_shape_range_and_encode(tiny16, codes, decoded):
    ds = tiny16.downsample
    assert decoded.shape == (1, 3, 3 * ds, 2 * ds) and decoded.dtype == torch.float32
    assert decoded.min() >= 0 and decoded.max() <= 1 and decoded.std() > 0.01  # not saturated
    assert torch.equal(tiny16.decode_codes(codes.int()), decoded)
    recoded = tiny16.encode_images(decoded)
    assert recoded.dtype == torch.long and recoded.shape == codes.shape
    assert recoded.min() >= 0 and recoded.max() < tiny16.codebook_size


def test_encode_picks_nearest_normalised_code():
    # Scaled codebook entries map back to their own ids: the lookup compares directions (L2 norm).
    model = make_tiny_vq(seed=3)
    codebook = torch.nn.functional.normalize(model.quantize.embedding.weight, dim=-1)
    latents = 5.0 * codebook[torch.tensor([[7, 0], [63, 7]])].permute(2, 0, 1).unsqueeze(0)
    assert model.quantize.nearest(latents).tolist() == [[[7, 0], [63, 7]]]


def test_vq8_decode_shape():
    model = make_tiny_vq(seed=0, downsample=8)
    assert model.decode_codes(torch.zeros(2, 2, 1, dtype=torch.long)).shape == (2, 3, 16, 8)


def test_gpt_checkpoint_is_rejected():
    gpt_like = {"tok_embeddings.weight": torch.zeros(64, 16), "layers.0.attention.wqkv.weight": torch.zeros(48, 16)}
    assert not is_vq_state_dict(gpt_like)
    with pytest.raises(ZipARError, match="AR model"):
        vq_from_state_dict(gpt_like)
    with pytest.raises(ZipARError, match="quantize.embedding.weight"):
        vq_from_state_dict({"foo.weight": torch.zeros(1)})


def test_mismatched_weights_are_rejected(tiny16):
    sd = dict(tiny16.state_dict())
    sd["decoder.conv_out.weight"] = torch.zeros(3, 32, 1, 1)
    with pytest.raises(ZipARError, match="does not match"):
        vq_from_state_dict(sd)
    sd = dict(tiny16.state_dict(), **{"decoder.extra.weight": torch.zeros(1)})
    with pytest.raises(ZipARError, match="decoder.extra.weight"):
        vq_from_state_dict(sd)


def test_bad_codes_and_images(tiny16):
    with pytest.raises(ZipARError, match="token id 64 out of range for a VQ with 64 codes"):
        tiny16.decode_codes(torch.tensor([[[0, 64]]]))
    with pytest.raises(ZipARError, match="token id -1 out of range"):
        tiny16.decode_codes(torch.tensor([[[-1, 3]]]))
    with pytest.raises(ZipARError, match="rows, cols"):
        tiny16.decode_codes(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ZipARError, match="integer"):
        tiny16.decode_codes(torch.zeros(1, 2, 2))
    with pytest.raises(ZipARError, match=r"40x32 .* factor 16"):
        tiny16.encode_images(torch.rand(1, 3, 40, 32))


def test_missing_file(tmp_path):
    with pytest.raises(ZipARError, match="not found"):
        load_vq(tmp_path / "nope.pt")
