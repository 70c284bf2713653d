"""The Chameleon VQGAN (Lumina-mGPT's image tokenizer): published key names, decode/encode
against an independent functional reference, an exact round trip, file finding and errors."""
import hashlib
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import chameleon_vq_fixtures as fx
from zipar.errors import ZipARError
from zipar.vq.chameleon import (
    ChameleonVQ,
    ChameleonVQConfig,
    is_chameleon_vq_source,
    load_chameleon_vq,
    parse_vqgan_config,
    read_vqgan_yaml,
)

# A second architecture: three levels, two res blocks, nin_shortcuts both ways (32 -> 64 -> 32),
# attention at the top level only (resolution 16) besides the middle blocks.
THREE = dict(ch=32, ch_mult=(1, 2, 1), num_res_blocks=2, attn_resolutions=(16,), z_channels=4, embed_dim=6,
             n_embed=32, resolution=16)
# resolution 10 with 4x downsampling: the encoder's levels run at 10, 5, 2 but the decoder's at
# 2, 4, 8 (it doubles up from 10 // 4), so attention sits at encoder levels 1 and 2, decoder level 2.
ODD = dict(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=(5, 2), z_channels=4, embed_dim=4,
           n_embed=16, resolution=10)
# The release's widths (n_embed 8192, 16x); its attn_resolutions are not public outside the
# gated download, so this row only pins the layout at full width, with middle attention only.
RELEASE = dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(), z_channels=256, embed_dim=256,
               n_embed=8192, resolution=512)

# Obtained once, offline, by building VQModel from facebookresearch/chameleon
# (chameleon/inference/vqgan.py) with each architecture above as its ddconfig and taking
# len(state_dict()), sha256("\n".join(sorted(state_dict()))) and the parameter count. The same
# reference models, loaded strictly from this fixture's files (loss.* dropped), decoded to this
# loader's pixels within 1.3e-6 and encoded to the same codes.
REFERENCE_KEYS = {
    "default": (155, "81109319f092df3e07a0192dff0dce1e4306effa29b0963648a8766b1345c356"),
    "three": (255, "cc30d9887e03b957203b405064b08767fbf4490736181830b00c075886839de8"),
    "odd": (193, "3a1ca13704e7bc357d0b99b425b196b547aa728bda84260a8c325b1c26caf5f0"),
    "release": (293, "6ec59dd6d612c364dac7849bb562728eb0b2fdf632a9d559b1b436b555ad6cc2"),
}
RELEASE_PARAMS = 68_718_467
ARCHS = {"default": fx.DEFAULTS, "three": THREE, "odd": ODD, "release": RELEASE}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return fx.write_chameleon_vqgan(tmp_path_factory.mktemp("chameleon") / "tokenizer")


@pytest.fixture(scope="module")
def vq(files):
    return load_chameleon_vq(files[0])


def raw_sd(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def config_of(arch):
    return ChameleonVQConfig(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in arch.items()})


# ----------------------------------------------------------------------------- independent reference
def conv(x, sd, name, stride=1, padding=None):
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"], stride=stride, padding=w.shape[-1] // 2 if padding is None else padding)


def gn(x, sd, name):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def swish(x):
    return x * torch.sigmoid(x)


def resnet(x, sd, p):
    h = conv(swish(gn(x, sd, f"{p}.norm1")), sd, f"{p}.conv1")
    h = conv(swish(gn(h, sd, f"{p}.norm2")), sd, f"{p}.conv2")
    return (conv(x, sd, f"{p}.nin_shortcut") if f"{p}.nin_shortcut.weight" in sd else x) + h


def attention(x, sd, p):
    b, c, hh, ww = x.shape
    normed = gn(x, sd, f"{p}.norm")
    q, k, v = (conv(normed, sd, f"{p}.{n}").reshape(b, c, hh * ww) for n in "qkv")
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c ** -0.5, dim=-1)  # [batch, query, key]
    out = torch.einsum("bij,bcj->bci", weights, v).reshape(b, c, hh, ww)
    return x + conv(out, sd, f"{p}.proj_out")


def middle(x, sd, p):
    return resnet(attention(resnet(x, sd, f"{p}.block_1"), sd, f"{p}.attn_1"), sd, f"{p}.block_2")


def count(sd, pattern):
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def level(x, sd, p):
    for j in range(count(sd, p + ".block.{}.conv1.weight")):
        x = resnet(x, sd, f"{p}.block.{j}")
        if f"{p}.attn.{j}.q.weight" in sd:
            x = attention(x, sd, f"{p}.attn.{j}")
    return x


def decoder_output(sd, codes):
    """Decoder pixels before the clamp; the middle attention and resampling convs are optional
    (attn_type none / resamp_with_conv false)."""
    h = sd["quantize.embedding.weight"][codes].permute(0, 3, 1, 2)
    h = conv(conv(h, sd, "post_quant_conv"), sd, "decoder.conv_in")
    if "decoder.mid.attn_1.q.weight" in sd:
        h = middle(h, sd, "decoder.mid")
    else:
        h = resnet(resnet(h, sd, "decoder.mid.block_1"), sd, "decoder.mid.block_2")
    for i in reversed(range(count(sd, "decoder.up.{}.block.0.conv1.weight"))):
        h = level(h, sd, f"decoder.up.{i}")
        if i:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            if f"decoder.up.{i}.upsample.conv.weight" in sd:
                h = conv(h, sd, f"decoder.up.{i}.upsample.conv")
    return conv(swish(gn(h, sd, "decoder.norm_out")), sd, "decoder.conv_out")


def reference_decode(sd, codes, tanh_out=False):
    h = decoder_output(sd, codes)
    return ((torch.tanh(h) if tanh_out else h).clamp(-1, 1) + 1) / 2


def reference_latents(sd, images):
    h = conv(images * 2 - 1, sd, "encoder.conv_in")
    n_levels = count(sd, "encoder.down.{}.block.0.conv1.weight")
    for i in range(n_levels):
        h = level(h, sd, f"encoder.down.{i}")
        if f"encoder.down.{i}.downsample.conv.weight" in sd:
            h = conv(F.pad(h, (0, 1, 0, 1)), sd, f"encoder.down.{i}.downsample.conv", stride=2, padding=0)
        elif i != n_levels - 1:
            h = F.avg_pool2d(h, 2)
    if "encoder.mid.attn_1.q.weight" in sd:
        h = middle(h, sd, "encoder.mid")
    else:
        h = resnet(resnet(h, sd, "encoder.mid.block_1"), sd, "encoder.mid.block_2")
    h = conv(swish(gn(h, sd, "encoder.norm_out")), sd, "encoder.conv_out")
    return conv(h, sd, "quant_conv")


def assert_nearest_codes(sd, images, got):
    """``got`` picks a nearest codebook entry to the reference latents everywhere, and the
    reference's argmin wherever the two closest entries are not near-tied."""
    latents = reference_latents(sd, images)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double()
    dist = torch.cdist(flat, sd["quantize.embedding.weight"].double()) ** 2
    chosen = dist.gather(1, got.reshape(-1, 1)).squeeze(1)
    best2 = dist.topk(2, dim=1, largest=False).values
    assert (chosen <= best2[:, 0] + 1e-4).all()
    clear = best2[:, 1] - best2[:, 0] > 1e-3
    assert clear.float().mean() > 0.5
    assert torch.equal(got.reshape(-1)[clear], dist.argmin(1)[clear])


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("name", list(ARCHS))
def test_key_names_match_meta_reference(name):
    with torch.device("meta"):
        model = ChameleonVQ(config_of(ARCHS[name]))
    sd = model.state_dict()
    n_keys, key_hash = REFERENCE_KEYS[name]
    assert len(sd) == n_keys
    assert hashlib.sha256("\n".join(sorted(sd)).encode()).hexdigest() == key_hash
    table = fx.vqgan_key_shapes(**ARCHS[name])
    assert {k: tuple(v.shape) for k, v in sd.items()} == table
    if name == "release":
        assert sum(p.numel() for p in model.parameters()) == RELEASE_PARAMS
        assert model.downsample == 16 and model.codebook_size == 8192


def test_attention_placement_follows_yaml_resolution():
    keys = fx.vqgan_key_shapes(**ODD)
    enc = {i for i in range(3) if f"encoder.down.{i}.attn.0.q.weight" in keys}
    dec = {i for i in range(3) if f"decoder.up.{i}.attn.0.q.weight" in keys}
    assert (enc, dec) == ({1, 2}, {2})
    assert "decoder.up.2.attn.1.q.weight" in keys  # one attention per res block (2 in the decoder)
    assert "encoder.down.2.downsample.conv.weight" not in keys and "decoder.up.0.upsample.conv.weight" not in keys


def test_fixture_loads_with_published_names(files, vq):
    ckpt, _ = files
    file_keys = {k for k in raw_sd(ckpt) if not k.startswith("loss.")}
    assert any(k.startswith("loss.") for k in raw_sd(ckpt))
    assert set(vq.state_dict()) == file_keys
    assert not vq.training and not any(p.requires_grad for p in vq.parameters())
    assert (vq.codebook_size, vq.downsample, vq.source_path) == (64, 2, str(ckpt))
    assert vq.device == torch.device("cpu") and vq.dtype == torch.float32


def test_encoder_keys_and_codes_match_transformers(files, vq):
    modeling = pytest.importorskip("transformers.models.chameleon.modeling_chameleon")
    from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig

    a = fx.DEFAULTS
    config = ChameleonVQVAEConfig(embed_dim=a["embed_dim"], num_embeddings=a["n_embed"], latent_channels=a["z_channels"],
                                  resolution=a["resolution"], base_channels=a["ch"], channel_multiplier=list(a["ch_mult"]),
                                  num_res_blocks=a["num_res_blocks"], attn_resolutions=list(a["attn_resolutions"]))
    hf = modeling.ChameleonVQVAE(config).eval()
    ours = {k: v for k, v in vq.state_dict().items() if not k.startswith("decoder.")}
    assert set(hf.state_dict()) == set(ours)
    hf.load_state_dict(ours, strict=True)
    images = torch.rand(2, 3, 6, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = hf.encode(images * 2 - 1)
    tokens = out.image_tokens if hasattr(out, "image_tokens") else out[2]  # 5.x: an output object; 4.5x: a tuple
    assert torch.equal(tokens.reshape(2, 3, 4), vq.encode_images(images))


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("name", ["default", "three", "odd"])
def test_decode_and_encode_match_functional_reference(tmp_path, name):
    ckpt, _ = fx.write_chameleon_vqgan(tmp_path, **ARCHS[name], seed=7)
    vq = load_chameleon_vq(tmp_path)
    sd = raw_sd(ckpt)
    ds = vq.downsample
    codes = torch.randint(0, vq.codebook_size, (2, 3, 5), generator=torch.Generator().manual_seed(2))
    pixels = vq.decode_codes(codes)
    assert pixels.shape == (2, 3, 3 * ds, 5 * ds) and pixels.dtype == torch.float32
    assert 0 <= pixels.min() < pixels.max() <= 1
    expected = reference_decode(sd, codes)
    assert 0 < expected.std()  # not a flat image that any bug would reproduce
    torch.testing.assert_close(pixels, expected, rtol=0, atol=1e-5)

    images = torch.rand(2, 3, 3 * ds, 5 * ds, generator=torch.Generator().manual_seed(3))
    got = vq.encode_images(images)
    assert got.shape == (2, 3, 5) and got.dtype == torch.long
    assert 0 <= got.min() and got.max() < vq.codebook_size
    assert_nearest_codes(sd, images, got)
    assert len(set(got.reshape(-1).tolist())) > 1


def bits(codes):
    """code -> its three bits as +-1 (bit k of the code gives channel k)."""
    return torch.stack([(codes >> k) & 1 for k in range(3)], dim=1).float() * 2 - 1


def round_trip_state_dict(arch):
    """Weights under which encode(decode(codes)) == codes exactly, for codes 0..7.

    All widths are 32, so GroupNorm(32, 32) normalises each channel on its own over the image.
    * codebook: code c is its 3 bits as +-1 in channels 0..2, zeros elsewhere; codes 8..15 are the
      same patterns plus 4 in channel 3, strictly farther from any vector whose channel 3 is 0, so
      the nearest entry to a latent is exactly the sign pattern of its channels 0..2.
    * every ResnetBlock's conv2 and every attention's proj_out are zero (weight and bias), so those
      blocks return their input unchanged; their other weights stay random to show they don't matter.
    * conv_in / conv_out / quant_conv / post_quant_conv / down- and upsample convs copy channels
      0..2 through their centre tap (1x1: the only tap), zero elsewhere, zero bias. Upsampling is
      then nearest-neighbour and the stride-2 downsample picks pixel (2i+1, 2j+1) of each 2x2 cell
      (its padding row/column is never read), so decode paints constant ds x ds patches and
      encode reads one pixel of each.
    * norm_out has gain 1, bias 0: on a channel taking two values a > 0 > b over the image,
      (x - mean) / std keeps each sign, and swish keeps signs; channels that are all zero stay 0.
    So decoded pixels are > 0.5 exactly where the code's bit is 1 (as long as every bit takes both
    values in each image), and encoding maps each patch back to the sign pattern, i.e. the code.
    """
    shapes = fx.vqgan_key_shapes(**arch)
    sd = fx.random_state_dict(shapes, seed=11)
    identity_maps = ("conv_in", "conv_out", "quant_conv", "post_quant_conv", "downsample.conv", "upsample.conv")
    for name, shape in shapes.items():
        module, kind = name.rsplit(".", 1)
        if module.endswith((".conv2", ".proj_out")):
            sd[name] = torch.zeros(shape)
        elif module.endswith(identity_maps):
            value = torch.zeros(shape)
            if kind == "weight":
                k = shape[-1] // 2
                for c in range(3):
                    value[c, c, k, k] = 1.0
            sd[name] = value
        elif module.endswith("norm_out"):
            sd[name] = torch.ones(shape) if kind == "weight" else torch.zeros(shape)
    patterns = bits(torch.arange(8))
    book = torch.zeros(shapes["quantize.embedding.weight"])
    book[:8, :3] = patterns
    book[8:16, :3] = patterns
    book[8:16, 3] = 4.0
    sd["quantize.embedding.weight"] = book
    return sd


def test_round_trip_is_exact(tmp_path):
    arch = dict(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_resolutions=(16, 4), z_channels=8, embed_dim=4,
                n_embed=16, resolution=16)
    keys = fx.vqgan_key_shapes(**arch)
    assert "encoder.down.0.attn.0.q.weight" in keys and "decoder.up.2.attn.1.q.weight" in keys
    fx.write_chameleon_vqgan(tmp_path, **arch, state_dict=round_trip_state_dict(arch))
    vq = load_chameleon_vq(tmp_path)
    codes = torch.randint(0, 8, (2, 4, 5), generator=torch.Generator().manual_seed(4))
    codes[:, 0, 0], codes[:, 0, 1] = 0, 7  # every bit takes both values in each image
    pixels = vq.decode_codes(codes)
    assert pixels.shape == (2, 3, 16, 20)
    patch_signs = bits(codes).repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(torch.sign(pixels - 0.5), patch_signs)
    assert torch.equal(vq.encode_images(pixels), codes)


def test_bfloat16_load_decodes_to_float32(files, vq):
    half = load_chameleon_vq(files[0], dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    codes = torch.randint(0, 64, (1, 2, 3), generator=torch.Generator().manual_seed(6))
    pixels = half.decode_codes(codes)
    assert pixels.dtype == torch.float32 and pixels.shape == (1, 3, 4, 6)
    assert (pixels - vq.decode_codes(codes)).abs().max() < 0.1
    assert half.encode_images(pixels).shape == (1, 2, 3)


# ----------------------------------------------------------------------------- finding the files
def test_sources_accepted(tmp_path, files, vq):
    ckpt, cfg = files
    release_root = ckpt.parent.parent  # Meta's layout: <root>/tokenizer/vqgan.{ckpt,yaml}
    codes = torch.randint(0, 64, (1, 2, 2), generator=torch.Generator().manual_seed(8))
    expected = vq.decode_codes(codes)
    for source in (ckpt, cfg, ckpt.parent, release_root, str(ckpt)):
        assert is_chameleon_vq_source(source) == (source != cfg)  # a yaml is loadable but not a dispatch key
        assert torch.equal(load_chameleon_vq(source).decode_codes(codes), expected)
    # same-stem files, a bare state dict, and torch's legacy (non-zip, not memory-mappable) format
    other, _ = fx.write_chameleon_vqgan(tmp_path / "stem", stem="chameleon_vq", extra_loss_keys=False, wrap=False)
    legacy, _ = fx.write_chameleon_vqgan(tmp_path / "legacy", legacy_format=True)
    for source in (other, legacy):
        assert is_chameleon_vq_source(source)
        assert torch.equal(load_chameleon_vq(source).decode_codes(codes), expected)
    assert not is_chameleon_vq_source(tmp_path / "stem")  # no vqgan.* pair in that folder
    assert not is_chameleon_vq_source(tmp_path / "nothing")


@pytest.mark.parametrize("case", ["no_yaml", "no_ckpt", "empty_folder", "missing_path"])
def test_missing_files_point_to_meta_release(tmp_path, files, case):
    ckpt, cfg = files
    if case == "no_yaml":
        source = tmp_path / "vqgan.ckpt"
        source.write_bytes(ckpt.read_bytes())
    elif case == "no_ckpt":
        source = tmp_path
        (tmp_path / "vqgan.yaml").write_text(cfg.read_text())
    elif case == "empty_folder":
        source = tmp_path
    else:
        source = tmp_path / "absent" / "vqgan.ckpt"
    assert not is_chameleon_vq_source(source)
    with pytest.raises(ZipARError, match="Meta's Chameleon release") as info:
        load_chameleon_vq(source)
    assert "vqgan.ckpt" in str(info.value) and "vqgan.yaml" in str(info.value)
    if case == "no_ckpt":
        assert "found only vqgan.yaml" in str(info.value)


# ----------------------------------------------------------------------------- config / weight disagreements
def rewrite_yaml(cfg, **changes):
    cfg.write_text(fx.vqgan_yaml_text(**{**fx.DEFAULTS, **changes}))


@pytest.mark.parametrize("changes, needles", [
    (dict(ch=64), ["'encoder.conv_in.weight' is [32, 3, 3, 3]", "implies [64, 3, 3, 3]", "ch 64"]),
    (dict(n_embed=128), ["'quantize.embedding.weight' is [64, 8]", "implies [128, 8]", "n_embed 128"]),
    (dict(embed_dim=4), ["is [64, 8] in vqgan.ckpt but vqgan.yaml implies [64, 4]"]),
    (dict(attn_resolutions=[]), ["tensors in vqgan.ckpt that vqgan.yaml has no place for",
                                 "e.g. 'encoder.down.1.attn.0.norm.weight' (and 29 more)"]),
    (dict(attn_resolutions=[8, 16]), ["30 tensors missing from vqgan.ckpt, e.g. 'encoder.down.0.attn.0.norm.weight'"]),
    # counted before the network is built (a config claiming thousands of blocks must not build them first)
    (dict(num_res_blocks=2), ["the config describes 2 blocks 'encoder.down.0.block.N' but the weights hold 1"]),
], ids=["ch", "n_embed", "embed_dim", "no_attention", "more_attention", "num_res_blocks"])
def test_yaml_and_weights_disagree(tmp_path, changes, needles):
    ckpt, cfg = fx.write_chameleon_vqgan(tmp_path)
    rewrite_yaml(cfg, **changes)
    with pytest.raises(ZipARError) as info:
        load_chameleon_vq(tmp_path)
    message = str(info.value)
    for needle in needles + [str(ckpt), "same Chameleon release download"]:
        assert needle in message


def test_missing_and_unexpected_tensors(tmp_path):
    sd = fx.random_state_dict(fx.vqgan_key_shapes(**fx.DEFAULTS))
    sd.pop("decoder.mid.attn_1.proj_out.weight")
    fx.write_chameleon_vqgan(tmp_path / "missing", state_dict=sd)
    with pytest.raises(ZipARError, match=r"1 tensors missing from vqgan.ckpt, e.g. 'decoder.mid.attn_1.proj_out.weight'"):
        load_chameleon_vq(tmp_path / "missing")
    sd = fx.random_state_dict(fx.vqgan_key_shapes(**fx.DEFAULTS))
    sd["encoder.mid.attn_2.q.weight"] = torch.zeros(64, 64, 1, 1)
    fx.write_chameleon_vqgan(tmp_path / "extra", state_dict=sd)
    with pytest.raises(ZipARError, match=r"has no place for, e.g. 'encoder.mid.attn_2.q.weight'"):
        load_chameleon_vq(tmp_path / "extra")


def test_other_models_are_named(tmp_path, files):
    from zipar.vq.llamagen import VQConfig, VQModel

    _, cfg = files
    llamagen = VQModel(VQConfig(codebook_size=16, codebook_embed_dim=4, ch=32, ch_mult=(1, 1), z_channels=4,
                                num_res_blocks=1))
    torch.save({"model": llamagen.state_dict()}, tmp_path / "vq_ds16_c2i.pt")
    with pytest.raises(ZipARError, match="no config next to .*vq_ds16_c2i.pt.*Meta's Chameleon release"):
        load_chameleon_vq(tmp_path / "vq_ds16_c2i.pt")
    assert not is_chameleon_vq_source(tmp_path / "vq_ds16_c2i.pt")
    (tmp_path / "vqgan.yaml").write_text(cfg.read_text())
    with pytest.raises(ZipARError, match="is a LlamaGen VQ tokenizer .* not the Chameleon VQGAN"):
        load_chameleon_vq(tmp_path / "vq_ds16_c2i.pt")
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}},
               tmp_path / "vqgan.ckpt")
    with pytest.raises(ZipARError, match="is not the Chameleon VQGAN: it has none of encoder.conv_in.weight"):
        load_chameleon_vq(tmp_path)
    torch.save({"state_dict": {}, "epoch": 1}, tmp_path / "vqgan.ckpt")
    with pytest.raises(ZipARError, match="holds no state dict"):
        load_chameleon_vq(tmp_path)
    (tmp_path / "vqgan.ckpt").write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(ZipARError, match=r"cannot read .*vqgan.ckpt.* as a torch checkpoint \(Unsupported operand") as info:
        load_chameleon_vq(tmp_path)
    assert "weights_only" not in str(info.value)  # torch's advice to turn the safety off is not repeated


class Payload:
    """A picklable object that a weights_only load must refuse."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def test_checkpoint_with_code_is_refused(tmp_path):
    sd = fx.random_state_dict(fx.vqgan_key_shapes(**fx.DEFAULTS))
    fx.write_chameleon_vqgan(tmp_path, state_dict=sd)
    torch.save({"state_dict": sd, "callbacks": Payload()}, tmp_path / "vqgan.ckpt")
    with pytest.raises(ZipARError, match="refusing to load .*pickles Python objects.*Unsupported global") as info:
        load_chameleon_vq(tmp_path)
    assert "weights_only=False" not in str(info.value)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


# ----------------------------------------------------------------------------- yaml parsing
def test_yaml_defaults_and_extras(tmp_path):
    path = tmp_path / "vqgan.yaml"
    path.write_text(fx.vqgan_yaml_text(**fx.DEFAULTS, omit=("double_z", "dropout", "ckpt_path", "ch_mult")))
    config = read_vqgan_yaml(path)
    assert config.ch_mult == (1, 2, 4, 8) and config.downsample == 8  # taming's default
    assert (config.resamp_with_conv, config.tanh_out, config.attn_type) == (True, False, "vanilla")
    assert config.attn_resolutions == (8,) and config.n_embed == 64
    # a bare params dict, attn_resolutions null (transformers' spelling of "none")
    bare = {"embed_dim": 8, "n_embed": 64, "ddconfig": {"z_channels": 8, "resolution": 16, "in_channels": 3,
                                                       "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                                                       "attn_resolutions": None}}
    assert parse_vqgan_config(bare).attn_resolutions == ()


def test_yaml_options_change_the_network(tmp_path):
    arch = dict(fx.DEFAULTS)
    keys = fx.vqgan_key_shapes(**arch)
    no_resample = {k: v for k, v in keys.items() if "sample.conv" not in k}
    no_attention = {k: v for k, v in keys.items() if ".attn" not in k}
    for extra, shapes in (({"resamp_with_conv": "false"}, no_resample), ({"attn_type": "none"}, no_attention),
                          ({"tanh_out": "true"}, keys)):
        folder = tmp_path / next(iter(extra))
        ckpt, cfg = fx.write_chameleon_vqgan(folder, state_dict=fx.random_state_dict(shapes, seed=1))
        cfg.write_text(fx.vqgan_yaml_text(**arch, extra=extra))
        vq = load_chameleon_vq(folder)
        assert set(vq.state_dict()) == set(shapes)
        codes = torch.randint(0, 64, (1, 2, 2), generator=torch.Generator().manual_seed(9))
        sd = raw_sd(ckpt)
        expected = reference_decode(sd, codes, tanh_out="tanh_out" in extra)
        torch.testing.assert_close(vq.decode_codes(codes), expected, rtol=0, atol=1e-5)
        images = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(10))
        assert_nearest_codes(sd, images, vq.encode_images(images))


@pytest.mark.parametrize("text, needle", [
    ("model: [1, 2", "is not valid YAML"),
    ("model:\n  params:\n    embed_dim: 8\n", "no ddconfig section"),
    ("just a string\n", "is not a taming VQGAN config"),
    (fx.vqgan_yaml_text(**fx.DEFAULTS, omit=("n_embed",)), "has no 'n_embed' field"),
    (fx.vqgan_yaml_text(**fx.DEFAULTS, omit=("attn_resolutions",)), "has no 'attn_resolutions' field"),
    (fx.vqgan_yaml_text(**{**fx.DEFAULTS, "ch": "wide"}), "'ch' in .* must be an integer"),
    (fx.vqgan_yaml_text(**{**fx.DEFAULTS, "ch": 48}), "not all multiples of 32"),
    (fx.vqgan_yaml_text(**fx.DEFAULTS, extra={"double_z": "true"}), "double_z: true"),
    (fx.vqgan_yaml_text(**fx.DEFAULTS, extra={"give_pre_end": "true"}), "give_pre_end: true"),
    (fx.vqgan_yaml_text(**fx.DEFAULTS, extra={"attn_type": "linear"}), "attn_type 'linear'"),
    (fx.vqgan_yaml_text(**fx.DEFAULTS, extra={"out_ch": 1}), "1-channel output"),
], ids=["syntax", "no_ddconfig", "not_a_mapping", "no_n_embed", "no_attn_resolutions", "ch_not_int", "ch_48",
        "double_z", "give_pre_end", "linear_attn", "out_ch_1"])
def test_bad_yaml(tmp_path, text, needle):
    path = tmp_path / "vqgan.yaml"
    path.write_text(text)
    with pytest.raises(ZipARError, match=needle):
        read_vqgan_yaml(path)


def test_missing_pyyaml_says_how_to_install(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(ZipARError, match="pip install pyyaml"):
        load_chameleon_vq(files[0])


# ----------------------------------------------------------------------------- input validation
@pytest.mark.parametrize("codes, needle", [
    (torch.zeros(2, 3, dtype=torch.long), r"shaped \[batch, rows, cols\]; got \(2, 3\)"),
    ([[[0]]], r"shaped \[batch, rows, cols\]; got list"),
    (torch.zeros(1, 2, 2), "integer token ids; got dtype torch.float32"),
    (torch.zeros(1, 2, 2, dtype=torch.bool), "integer token ids"),
    (torch.zeros(1, 0, 2, dtype=torch.long), "empty code grid"),
    (torch.full((1, 2, 2), 64), "token id 64 out of range .* 64 codes"),
    (torch.full((1, 2, 2), -1), "token id -1 out of range"),
])
def test_bad_codes(vq, codes, needle):
    with pytest.raises(ZipARError, match=needle):
        vq.decode_codes(codes)


@pytest.mark.parametrize("images, needle", [
    (torch.rand(3, 4, 4), r"\[batch, 3, height, width\]; got \(3, 4, 4\)"),
    (torch.rand(1, 1, 4, 4), r"got \(1, 1, 4, 4\)"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "float images in \\[0, 1\\]; got dtype torch.uint8"),
    (torch.rand(1, 3, 5, 4), "image size 5x4 is not a positive multiple of .* factor 2"),
])
def test_bad_images(vq, images, needle):
    with pytest.raises(ZipARError, match=needle):
        vq.encode_images(images)


def test_bad_dtype(files):
    with pytest.raises(ZipARError, match="floating-point dtype"):
        load_chameleon_vq(files[0], dtype=torch.int64)


# ----------------------------------------------------------------------------- the key map
def published_keys(arch, **options):
    """The release's key table, less what the yaml options switch off (attn_type none / no resampling convs)."""
    keys = fx.vqgan_key_shapes(**arch)
    if options.get("attn_type") == "none":
        keys = {k: v for k, v in keys.items() if ".attn" not in k}
    if options.get("resamp_with_conv") is False:
        keys = {k: v for k, v in keys.items() if "sample.conv" not in k}
    return keys


@pytest.mark.parametrize("name, options", [(name, {}) for name in ARCHS] + [
    ("three", {"attn_type": "none"}), ("odd", {"resamp_with_conv": False})], ids=lambda v: str(v))
def test_key_map_places_every_published_key_exactly_once(name, options):
    from zipar.vq.taming import TamingVQ, rename_key

    config = ChameleonVQConfig(**{**config_of(ARCHS[name]).__dict__, **options})
    with torch.device("meta"):
        model = ChameleonVQ(config)
        network = TamingVQ(config.spec())  # the shared network under its canonical names
    published = published_keys(ARCHS[name], **options)
    canonical = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    # published -> canonical: every published key has a place, no two share one, every place is filled
    assert set(model.canonical_names) == set(published)
    assert sorted(model.canonical_names.values()) == sorted(canonical)
    # canonical -> published: the exact inverse
    assert model.file_names == {c: p for p, c in model.canonical_names.items()}
    for published_key, canonical_key in model.canonical_names.items():
        assert canonical[canonical_key] == published[published_key], published_key
        levels = len(config.ch_mult)
        assert rename_key(published_key, to_taming=False, reversed_levels=levels) == canonical_key
        assert rename_key(canonical_key, to_taming=True, reversed_levels=levels) == published_key
    assert model.canonical_names["decoder.up.0.block.0.conv1.weight"] == \
        f"decoder.conv_blocks.{len(config.ch_mult) - 1}.res.0.conv1.weight"  # taming indexes up by level


def test_state_dict_round_trip_and_canonical_names_are_not_published(files, vq):
    other = ChameleonVQ(vq.config)
    other.load_state_dict(vq.state_dict(), strict=True)
    codes = torch.randint(0, 64, (1, 2, 2), generator=torch.Generator().manual_seed(12))
    assert torch.equal(other.eval().decode_codes(codes), vq.decode_codes(codes))
    sd = dict(vq.state_dict())
    sd["encoder.conv_blocks.0.res.0.conv1.weight"] = sd.pop("encoder.down.0.block.0.conv1.weight")
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*encoder.conv_blocks.0.res.0.conv1.weight"):
        other.load_state_dict(sd, strict=True)
