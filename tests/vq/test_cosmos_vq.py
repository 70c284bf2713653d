"""Cosmos Tokenizer DV8x16x16 (SimpleAR's image tokenizer) from its TorchScript archives: decode
and encode equal the traced archives themselves (run here only, as the reference), loading never
runs an archive, the architecture is read off the tensors, and wrong paths fail clearly."""
import math

import pytest
import torch

from helpers import cosmos_fixtures as fx
from zipar.errors import ZipARError
from zipar.io.torchscript import read_torchscript_tensors
from zipar.vq import describe_vq_source, find_format, load_vq
from zipar.vq import cosmos
from zipar.vq.base import VQ

# torch.jit.trace writes the reference archives and warns about deprecation and traced branches
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning",
                                        "ignore:`torch.jit:DeprecationWarning")  # torch 2.13 says it this way


@pytest.fixture(scope="module")
def tokenizer():
    return fx.make_tokenizer(fx.TINY, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    return fx.write_archives(tmp_path_factory.mktemp("cosmos") / "Cosmos-Tokenizer-DV8x16x16", tokenizer)


@pytest.fixture(scope="module")
def vq(folder):
    return load_vq(folder)


@pytest.fixture(scope="module")
def reference(folder):
    """The archives run by TorchScript: what SimpleAR does with the release (test-only)."""
    return torch.jit.load(str(folder / "decoder.jit")), torch.jit.load(str(folder / "encoder.jit"))


def codes_for(shape, seed=0):
    return torch.randint(0, 64000, shape, generator=torch.Generator().manual_seed(seed))


def test_loads_without_running_the_archives(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load called while loading")

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch.jit, "_load_for_lite_interpreter", refuse, raising=False)
    monkeypatch.setattr(torch._C, "import_ir_module", refuse)
    vq = load_vq(folder)
    assert isinstance(vq, VQ) and vq.enc is not None
    assert (vq.codebook_size, vq.downsample, vq.truncates_to_uint8) == (64000, 16, False)


def test_the_architecture_is_read_off_the_tensors(vq):
    assert vq.config == cosmos.CosmosConfig(levels=(8, 8, 8, 5, 5, 5), z_channels=4, widths=(8, 16, 16),
                                            decoder_blocks=2, decoder_attn=(False, True, False), patch=4)
    # the release's resamplers: the deepest decoder level upsamples in space only, the next in both
    assert vq.config.upsample_flags() == [(True, True), (True, False)]


def test_release_shapes_give_the_release_architecture():
    with torch.device("meta"):
        dec_sd = fx.DiscreteVideoTokenizer(fx.RELEASE).decoder_jit().state_dict(keep_vars=True)
    dec_sd["inv_quant.quantizer._levels"] = torch.tensor([8, 8, 8, 5, 5, 5], dtype=torch.int32)
    config = cosmos.infer_cosmos_config(dec_sd)
    assert config == cosmos.CosmosConfig(levels=(8, 8, 8, 5, 5, 5), z_channels=16, widths=(256, 512, 512),
                                         decoder_blocks=3, decoder_attn=(False, False, False), patch=4)
    assert config.downsample == 16 and config.codebook_size == 64000


def test_decode_equals_the_archive(vq, reference):
    decoder, _ = reference
    codes = codes_for((2, 4, 4), seed=1)
    with torch.no_grad():
        raw = decoder(codes.unsqueeze(1)).squeeze(2)  # SimpleAR: [B, 1, h, w] -> decode -> drop the frame axis
        ours_raw = torch.cat([vq.net(vq.fsq.codes(g, torch.float32)) for g in codes.split(1)])
    assert ours_raw.shape == (2, 3, 64, 64)
    torch.testing.assert_close(ours_raw, raw, atol=1e-4, rtol=1e-4)  # before clamping: every pixel
    images = vq.decode_codes(codes)
    expected = (raw.clamp(-1, 1) + 1) / 2  # save_image(normalize=True, value_range=(-1, 1))
    assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    assert (images - expected).abs().max() <= 1 / 255


def test_decode_matches_the_3d_network_on_another_grid(vq, tokenizer):
    """The untraced official-structure network (causal 3D, full Haar) on a non-square grid."""
    codes = codes_for((1, 3, 5), seed=2)
    with torch.no_grad():
        raw = tokenizer.decoder_jit()(codes.unsqueeze(1)).squeeze(2)
        ours = vq.net(vq.fsq.codes(codes, torch.float32))
    torch.testing.assert_close(ours, raw, atol=1e-4, rtol=1e-4)


def test_encode_equals_the_archive(vq, reference):
    _, encoder = reference
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = torch.cat([encoder(one.unsqueeze(2) * 2 - 1) for one in images.split(1)])[:, 0].long()
    ids = vq.encode_images(images)
    assert ids.shape == (2, 4, 4) and ids.dtype == torch.long
    assert (ids == expected).float().mean() >= 0.98  # a latent on a rounding edge may flip
    assert vq.decode_codes(ids).shape == images.shape


def test_fsq_ids_and_codes():
    fsq = cosmos.FSQ((8, 8, 8, 5, 5, 5))
    assert fsq.basis == (1, 8, 64, 512, 2560, 12800)
    ids = torch.tensor([[[0, 1, 63999]]])
    codes = fsq.codes(ids, torch.float32)[0, :, 0]
    assert codes[:, 0].tolist() == [-1.0] * 6
    assert codes[:, 1].tolist() == [-0.75] + [-1.0] * 5
    assert codes[:, 2].tolist() == [0.75, 0.75, 0.75, 1.0, 1.0, 1.0]
    # latents whose bounded values are exactly the digits (the bound inverted) come back as the ids
    latents = []
    for b, lv in zip(fsq.basis, fsq.levels):
        half_l, offset = (lv - 1) * (1 + 1e-3) / 2, 0.5 if lv % 2 == 0 else 0.0
        digit = ((ids // b) % lv - lv // 2).double()
        latents.append(torch.atanh((digit + offset) / half_l) - math.atanh(offset / half_l))
    assert fsq.ids(torch.stack(latents, dim=1)).tolist() == ids.tolist()


def test_decoder_file_alone_decodes_but_cannot_encode(folder, vq):
    alone = load_vq(folder / "decoder.jit")
    codes = codes_for((1, 2, 2), seed=4)
    assert torch.equal(alone.decode_codes(codes), vq.decode_codes(codes))
    with pytest.raises(ZipARError, match="cannot encode; put encoder.jit beside it"):
        alone.encode_images(torch.rand(1, 3, 32, 32))


def test_detection(folder, tmp_path, tokenizer):
    assert find_format(folder) is cosmos.FORMAT
    assert find_format(folder / "decoder.jit") is cosmos.FORMAT
    assert "Cosmos Tokenizer DV8x16x16" in describe_vq_source(folder)
    from zipar.model_kind import VQ as VQ_KIND, model_kind

    assert model_kind(folder) == {VQ_KIND} and model_kind(folder / "decoder.jit") == {VQ_KIND}  # the loaders' lists
    plain = tmp_path / "weights.pt"
    torch.save(tokenizer.state_dict(), plain)
    assert not cosmos.is_cosmos_path(plain)
    assert not cosmos.is_cosmos_path(tmp_path)  # a folder without decoder.jit


def test_wrong_inputs_fail_clearly(folder, vq, tmp_path):
    with pytest.raises(ZipARError, match="out of range for the Cosmos DV8x16x16 VQ with 64000 codes"):
        vq.decode_codes(torch.tensor([[[64000]]]))
    with pytest.raises(ZipARError, match="multiple of the Cosmos DV8x16x16 VQ downsampling factor 16"):
        vq.encode_images(torch.rand(1, 3, 24, 32))
    with pytest.raises(ZipARError, match="is a Cosmos encoder archive"):
        cosmos.load_cosmos(folder / "encoder.jit")
    fake = tmp_path / "decoder.jit"
    fake.write_bytes(b"not a zip")
    with pytest.raises(ZipARError, match="not a TorchScript archive"):
        cosmos.load_cosmos(tmp_path)
    with pytest.raises(ZipARError, match="not found"):
        cosmos.load_cosmos(tmp_path / "missing")


def test_other_cosmos_releases_are_refused(tmp_path, folder, tokenizer):
    import shutil

    for name in ("Cosmos-0.1-Tokenizer-DV4x8x8", "Cosmos-Tokenizer-DI16x16", "Cosmos-1.0-Tokenizer-CV8x8x8"):
        other = shutil.copytree(folder, tmp_path / name)
        release = name.rsplit("-", 1)[1]
        with pytest.raises(ZipARError, match=f"named for the Cosmos {release} tokenizer.*only DV8x16x16"):
            load_vq(other)
        with pytest.raises(ZipARError, match="only DV8x16x16"):
            load_vq(other / "decoder.jit")
    renamed = shutil.copytree(folder, tmp_path / "my-tokenizer")
    assert load_vq(renamed).downsample == 16  # a name that says nothing is fine
    # a continuous tokenizer's decoder: latents straight into post_quant_conv, no quantizer
    sd = {k: v for k, v in read_torchscript_tensors(folder / "decoder.jit").items()
          if not k.startswith("inv_quant.")}
    sd["post_quant_conv.conv3d.weight"] = torch.zeros(4, 16, 1, 1, 1)
    with pytest.raises(ZipARError, match="16-channel latents with no FSQ quantizer"):
        cosmos.infer_cosmos_config(sd)


def test_bfloat16_archives(tmp_path, tokenizer):
    """Archives saved in bfloat16 (the official tools run the tokenizer in bfloat16) load to the
    same network as float32 ones holding the same (rounded) weights."""
    import copy

    rounded = copy.deepcopy(tokenizer).to(dtype=torch.bfloat16).to(dtype=torch.float32)
    half = copy.deepcopy(rounded).to(dtype=torch.bfloat16)
    folder = fx.write_archives(tmp_path / "bf16", half, encoder=False)
    assert read_torchscript_tensors(folder / "decoder.jit")["post_quant_conv.conv3d.weight"].dtype == torch.bfloat16
    vq = load_vq(folder)
    assert vq.enc is None and vq.dtype == torch.float32
    codes = codes_for((1, 2, 3), seed=5)
    with torch.no_grad():
        expected = rounded.decoder_jit()(codes.unsqueeze(1)).squeeze(2)
        ours = vq.net(vq.fsq.codes(codes, torch.float32))
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
