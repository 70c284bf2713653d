"""SBER-MoVQGAN (Lumina-mGPT 2.0's image tokenizer): the published key layout, the architecture
read off the weights, decode/encode against an independent functional reference, the file forms
accepted, detection among the other VQ formats, and the errors."""
import pytest
import torch

from helpers import chameleon_vq_fixtures as cham_fx
from helpers import movq_fixtures as fx
from helpers.tiny import make_tiny_vq, save_official_vq
from zipar.errors import ZipARError
from zipar.vq import describe_vq_source, find_format, load_vq
from zipar.vq import movq
from zipar.vq.base import VQ
from zipar.vq.movq import (
    RELEASE_270M,
    MoVQConfig,
    MoVQGAN,
    infer_movq_config,
    is_movqgan_file,
    load_movqgan,
    movqgan_from_state_dict,
)

FIX = "use ai-forever/MoVQGAN movqgan_270M.ckpt"


@pytest.fixture(scope="module")
def sd():
    return fx.tiny_state_dict(fx.DEFAULTS, seed=0)


@pytest.fixture(scope="module")
def release_file(tmp_path_factory, sd):
    """The release's form: torch.save of the bare state dict, under the release's name."""
    return fx.write_movqgan(tmp_path_factory.mktemp("movq") / "movqgan_270M.ckpt", sd)


@pytest.fixture(scope="module")
def vq(release_file):
    return load_movqgan(release_file)


def codes_for(vq, shape, seed=0):
    return torch.randint(0, vq.codebook_size, shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- layout and architecture
@pytest.mark.parametrize("arch", [fx.DEFAULTS, fx.THREE, fx.RELEASE], ids=["default", "three", "release"])
def test_the_network_has_exactly_the_published_tensors(arch):
    shapes = fx.movq_key_shapes(**arch)
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = infer_movq_config(meta)
    with torch.device("meta"):
        model = MoVQGAN(config)
    assert list(model.state_dict()) == list(shapes)  # same names, in the official module order
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def test_the_architecture_is_read_off_the_weights():
    def infer(arch):
        return infer_movq_config({k: torch.empty(s, device="meta") for k, s in fx.movq_key_shapes(**arch).items()})

    assert infer(fx.DEFAULTS) == MoVQConfig(n_embed=64, embed_dim=4, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                                            z_channels=4, encoder_attn=(False, True), decoder_attn=(False, True))
    # attention at resolution 16: the encoder's first level, and the decoder's shallowest (it starts at 16 // 4)
    assert infer(fx.THREE) == MoVQConfig(n_embed=40, embed_dim=3, ch=32, ch_mult=(1, 2, 1), num_res_blocks=2,
                                         z_channels=4, encoder_attn=(True, False, False),
                                         decoder_attn=(True, False, False), resample_with_conv=False, zq_conv=True)
    release = infer(fx.RELEASE)
    assert release == RELEASE_270M and release.downsample == 8
    # the release's name says 270M parameters: 270,669,103 with this layout
    assert sum(torch.Size(s).numel() for s in fx.movq_key_shapes(**fx.RELEASE).values()) == 270_669_103


# ----------------------------------------------------------------------------- decode / encode
@pytest.mark.parametrize("arch", [fx.DEFAULTS, fx.THREE], ids=["default", "three"])
def test_decode_matches_the_reference(arch):
    weights = fx.tiny_state_dict(arch, seed=3)
    model = movqgan_from_state_dict(weights)
    codes = codes_for(model, (2, 3, 5), seed=1)  # a batch of two non-square grids
    ds = model.downsample
    pixels = model.decode_codes(codes)
    assert pixels.shape == (2, 3, 3 * ds, 5 * ds) and pixels.dtype == torch.float32
    assert 0 <= pixels.min() and pixels.max() <= 1
    torch.testing.assert_close(pixels, fx.reference_decode(weights, codes), rtol=0, atol=1e-5)
    # before the clamp too (a good part of the random decoder's output lies outside [-1, 1])
    vectors = model.quantize.lookup(codes)
    with torch.no_grad():
        raw = model.decoder(model.post_quant_conv(vectors), vectors)
    torch.testing.assert_close(raw, fx.reference_decoder_output(weights, codes), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", [fx.DEFAULTS, fx.THREE], ids=["default", "three"])
def test_encode_matches_the_reference(arch):
    weights = fx.tiny_state_dict(arch, seed=4)
    model = movqgan_from_state_dict(weights)
    ds = model.downsample
    images = torch.rand(2, 3, 2 * ds, 3 * ds, generator=torch.Generator().manual_seed(2))
    codes = model.encode_images(images)
    assert codes.shape == (2, 2, 3) and codes.dtype == torch.long
    assert torch.equal(codes, fx.reference_encode(weights, images))


def test_encode_decode_round_trip_shapes(vq):
    codes = codes_for(vq, (2, 4, 3))
    pixels = vq.decode_codes(codes)
    assert pixels.shape == (2, 3, 4 * vq.downsample, 3 * vq.downsample)
    again = vq.encode_images(pixels)
    assert again.shape == codes.shape and again.dtype == torch.long
    assert 0 <= again.min() and again.max() < vq.codebook_size
    assert vq.decode_codes(again).shape == pixels.shape


def test_decoding_one_image_at_a_time_equals_the_batch(vq):
    codes = codes_for(vq, (3, 2, 4), seed=5)
    whole = vq.decode_codes(codes)
    one_by_one = torch.cat([vq.decode_codes(codes[i:i + 1]) for i in range(3)])
    assert torch.equal(whole, one_by_one)


def test_attention_in_query_blocks_gives_the_single_block_result(vq, monkeypatch):
    codes = codes_for(vq, (1, 5, 6), seed=6)  # 30 positions at the attention level
    images = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(6))
    whole, encoded = vq.decode_codes(codes), vq.encode_images(images)
    monkeypatch.setattr(movq, "ATTENTION_ROWS", 7)  # 5 blocks, the last one short
    torch.testing.assert_close(vq.decode_codes(codes), whole, rtol=0, atol=1e-6)
    assert torch.equal(vq.encode_images(images), encoded)


def test_the_vq_interface(vq, release_file, sd):
    assert isinstance(vq, VQ)
    assert vq.codebook_size == 64 and vq.downsample == 2
    assert vq.truncates_to_uint8 is False  # Lumina-mGPT 2.0 rounds: ((x + 1) * 127.5).round()
    assert vq.source_path == str(release_file)
    assert vq.device == torch.device("cpu") and vq.dtype == torch.float32
    vectors = vq.code_vectors()
    assert vectors.shape == (64, 4) and torch.equal(vectors, sd["quantize.embedding.weight"])
    assert not any(p.requires_grad for p in vq.parameters()) and not vq.training


def test_device_and_dtype(release_file):
    model = load_vq(release_file, "cpu", torch.bfloat16)
    assert isinstance(model, MoVQGAN) and model.dtype == torch.bfloat16
    pixels = model.decode_codes(codes_for(model, (1, 2, 3)))
    assert pixels.dtype == torch.float32 and pixels.shape == (1, 3, 4, 6)
    with pytest.raises(ZipARError, match="floating-point dtype"):
        load_movqgan(release_file, dtype=torch.int8)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_code_grids_and_images_are_named(vq):
    with pytest.raises(ZipARError, match="token id 64 out of range for the MoVQGAN VQ with 64 codes"):
        vq.decode_codes(torch.full((1, 2, 2), 64))
    with pytest.raises(ZipARError, match="token id -1 out of range"):
        vq.decode_codes(torch.full((1, 2, 2), -1))
    with pytest.raises(ZipARError, match="MoVQGAN VQ decode expects integer token ids; got dtype torch.float32"):
        vq.decode_codes(torch.zeros(1, 2, 2))
    with pytest.raises(ZipARError, match=r"MoVQGAN VQ decode expects codes shaped \[batch, rows, cols\]; got \(2, 2\)"):
        vq.decode_codes(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ZipARError, match="image size 5x4 is not a positive multiple of the MoVQGAN VQ downsampling"):
        vq.encode_images(torch.rand(1, 3, 5, 4))
    with pytest.raises(ZipARError, match=r"encode expects images shaped \[batch, 3, height, width\]"):
        vq.encode_images(torch.rand(3, 4, 4))


# ----------------------------------------------------------------------------- file forms
def test_every_accepted_file_form_loads_the_same_weights(tmp_path, vq, sd):
    codes = codes_for(vq, (1, 3, 3), seed=7)
    expected = vq.decode_codes(codes)
    forms = [
        fx.write_movqgan(tmp_path / "movqgan_270M_lightning.ckpt", sd, wrap=True, training_keys=True),
        fx.write_movqgan(tmp_path / "movqgan_train.ckpt", sd, training_keys=True),  # bare, with loss.* / ema_*
        fx.write_movqgan(tmp_path / "movqgan_legacy.pt", sd, legacy_format=True),
        fx.write_movqgan(tmp_path / "movqgan_270M.safetensors", sd),
        fx.write_movqgan(tmp_path / "movqgan.pth", {f"module.{k}": v for k, v in sd.items()}),  # DDP prefix
    ]
    for path in forms:
        model = load_vq(path)
        assert isinstance(model, MoVQGAN), path
        assert torch.equal(model.decode_codes(codes), expected), path


def test_detection_reads_names_not_tensors(tmp_path, sd):
    # by name alone (whatever the file holds: the loader says what it is)
    named = tmp_path / "MoVQGAN_270M.ckpt"
    named.write_bytes(b"not even a pickle")
    assert is_movqgan_file(named)
    # by content: a zip's data.pkl, a legacy pickle's head, a safetensors header
    for path in (fx.write_movqgan(tmp_path / "tokenizer.ckpt", sd, wrap=True, training_keys=True),
                 fx.write_movqgan(tmp_path / "tokenizer_legacy.pt", sd, legacy_format=True),
                 fx.write_movqgan(tmp_path / "tokenizer.safetensors", sd)):
        assert is_movqgan_file(path), path
        assert find_format(path) is movq.FORMAT
    # Emu3's VisionTokenizer weights share the spatial norms but are not MoVQGAN
    emu3 = dict(sd, **{"encoder.time_res_stack.0.conv1.conv.weight": torch.zeros(1, 1, 1, 1, 1)})
    assert not is_movqgan_file(fx.write_movqgan(tmp_path / "model.safetensors", emu3))
    assert not is_movqgan_file(fx.write_movqgan(tmp_path / "emu3.ckpt", emu3))
    # other suffixes, folders, missing paths
    (tmp_path / "movqgan.yaml").write_text("model: {}\n")
    assert not is_movqgan_file(tmp_path / "movqgan.yaml")
    assert not is_movqgan_file(tmp_path)
    assert not is_movqgan_file(tmp_path / "movqgan_missing.ckpt")


def test_detection_does_not_claim_the_other_formats(tmp_path):
    llamagen = tmp_path / "vq_ds16_c2i.pt"
    save_official_vq(make_tiny_vq(seed=0), llamagen)
    llamagen_st = tmp_path / "vq_ds16_t2i.safetensors"
    save_official_vq(make_tiny_vq(seed=1), llamagen_st)
    chameleon_ckpt, chameleon_yaml = cham_fx.write_chameleon_vqgan(tmp_path / "chameleon")
    for path in (llamagen, llamagen_st, chameleon_ckpt, chameleon_yaml, chameleon_ckpt.parent):
        assert not is_movqgan_file(path), path
    assert find_format(llamagen).catch_all and find_format(llamagen_st).catch_all
    assert find_format(chameleon_ckpt).name.startswith("Meta's Chameleon VQGAN")
    assert find_format(chameleon_ckpt.parent).name.startswith("Meta's Chameleon VQGAN")


def test_load_vq_picks_movqgan_even_beside_a_chameleon_yaml(tmp_path, sd):
    # models/zipar/ holding Meta's vqgan.yaml next to the MoVQGAN file: the yaml does not capture it
    folder = tmp_path / "zipar"
    cham_fx.write_chameleon_vqgan(folder)
    path = fx.write_movqgan(folder / "movqgan_270M.ckpt", sd)
    assert find_format(path) is movq.FORMAT
    assert isinstance(load_vq(path), MoVQGAN)
    assert describe_vq_source(path) == "ai-forever's SBER-MoVQGAN, the image tokenizer of Lumina-mGPT 2.0"
    assert type(load_vq(folder / "vqgan.ckpt")).__name__ == "ChameleonVQ"


# ----------------------------------------------------------------------------- wrong files
def test_other_models_files_get_one_clear_error(tmp_path, sd):
    cases = {
        "llamagen": ({"encoder.conv_blocks.0.res.0.conv1.weight": torch.zeros(1)}, "is a LlamaGen VQ tokenizer"),
        "chameleon": (cham_fx.random_state_dict(cham_fx.vqgan_key_shapes(**cham_fx.DEFAULTS)),
                      "is a taming VQGAN whose decoder has plain GroupNorms .*Chameleon"),
        "emu3": (dict(sd, **{"decoder.time_res_stack.0.norm1.weight": torch.zeros(1)}), "is Emu3's VQ tokenizer"),
        "gpt": ({"tok_embeddings.weight": torch.zeros(4, 4)}, "is a language model"),
        "other": ({"foo.weight": torch.zeros(2)}, r"has no encoder.conv_in.weight, .*first tensor is 'foo.weight'"),
    }
    for name, (weights, what) in cases.items():
        path = fx.write_movqgan(tmp_path / f"movqgan_{name}.ckpt", weights)
        with pytest.raises(ZipARError, match=f"movqgan_{name}.ckpt' {what}.*not a MoVQGAN checkpoint: {FIX}") as info:
            load_vq(path)
        assert "https://huggingface.co/ai-forever/MoVQGAN" in str(info.value), name


def test_damaged_files_name_the_problem(tmp_path, sd):
    no_tensors = tmp_path / "movqgan_empty.ckpt"
    torch.save({"epoch": 3}, no_tensors)
    with pytest.raises(ZipARError, match=f"holds no state dict .*not a MoVQGAN checkpoint: {FIX}"):
        load_vq(no_tensors)
    garbage = tmp_path / "movqgan_html.ckpt"
    garbage.write_bytes(b"<html>404</html>")
    with pytest.raises(ZipARError, match=f"cannot read .*movqgan_html.ckpt' as a torch checkpoint.*{FIX}"):
        load_vq(garbage)
    code = tmp_path / "movqgan_code.ckpt"
    torch.save({"state_dict": sd, "hook": print}, code)  # a pickle that names a function
    with pytest.raises(ZipARError, match="refusing to load .*never unpickles code") as info:
        load_vq(code)
    assert "weights_only" not in str(info.value)
    damaged_st = tmp_path / "movqgan.safetensors"
    damaged_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(ZipARError, match="cannot read .* as safetensors"):
        load_vq(damaged_st)
    with pytest.raises(ZipARError, match="MoVQGAN VQ not found"):
        load_movqgan(tmp_path / "movqgan_missing.ckpt")


def test_mismatched_tensors_are_named(tmp_path, sd):
    short = {k: v for k, v in sd.items() if k != "decoder.up.1.block.1.norm2.conv_b.bias"}
    with pytest.raises(ZipARError, match=r"1 tensors missing, e.g. 'decoder.up.1.block.1.norm2.conv_b.bias'.*"
                                         f"Re-download the file, or {FIX}"):
        load_vq(fx.write_movqgan(tmp_path / "movqgan_short.ckpt", short))
    wrong = dict(sd, **{"decoder.mid.attn_1.norm.conv_y.weight": torch.zeros(64, 5, 1, 1)})
    with pytest.raises(ZipARError, match=r"tensor 'decoder.mid.attn_1.norm.conv_y.weight' is \[64, 5, 1, 1\] where "
                                         r"the rest of the file implies \[64, 4, 1, 1\]"):
        load_vq(fx.write_movqgan(tmp_path / "movqgan_wrong.ckpt", wrong))
    extra = dict(sd, **{"quantize.used": torch.zeros(3)})  # a remap buffer: not the release's quantizer
    with pytest.raises(ZipARError, match="1 tensors a MoVQGAN has no place for, e.g. 'quantize.used'"):
        load_vq(fx.write_movqgan(tmp_path / "movqgan_extra.ckpt", extra))
    gap = dict(sd, **{"encoder.down.0.block.3.conv1.weight": torch.zeros(32, 32, 3, 3)})  # blocks 0 and 3 only
    with pytest.raises(ZipARError, match=r"numbers its 'encoder.down.0.block.N' blocks with gaps \(0..3 expected\)"):
        load_vq(fx.write_movqgan(tmp_path / "movqgan_gap.ckpt", gap))
    narrow = fx.tiny_state_dict(dict(fx.DEFAULTS, ch=16))  # GroupNorm(32) cannot take 16 channels
    with pytest.raises(ZipARError, match="not all multiples of 32"):
        load_vq(fx.write_movqgan(tmp_path / "movqgan_narrow.ckpt", narrow))
