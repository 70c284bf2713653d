"""One VQ interface, one loader: every published VQ format satisfies ``zipar.vq.base.VQ`` and
``zipar.vq.load_vq`` picks the right format for each kind of path, or says in one line what
the path is and where the VQ is instead."""
from __future__ import annotations

import json

import pytest
import torch

from helpers import chameleon_vq_fixtures as cham_fx
from helpers.tiny import make_tiny_vq, save_official_vq
from zipar.errors import ZipARError
from zipar.vq import FORMATS, LUMINA_VQ_HINT, describe_vq_source, find_format, load_vq
from zipar.vq.base import VQ
from zipar.vq.chameleon import ChameleonVQ
from zipar.vq.llamagen import VQModel


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("vq_formats")


@pytest.fixture(scope="module")
def llamagen_file(root):
    path = root / "vq_ds16_c2i.pt"
    save_official_vq(make_tiny_vq(seed=0), path)
    return path


@pytest.fixture(scope="module")
def chameleon_release(root):
    """Meta's layout: <release>/tokenizer/vqgan.{ckpt,yaml}."""
    ckpt, _ = cham_fx.write_chameleon_vqgan(root / "chameleon" / "tokenizer")
    return ckpt


@pytest.fixture(scope="module")
def janus_folders(root):
    pytest.importorskip("transformers")
    from helpers.chat_fixtures import write_janus_hf, write_janus_original

    hf = write_janus_hf(root / "Janus-Pro-tiny-hf")
    return hf, write_janus_original(root / "Janus-Pro-tiny", hf)


@pytest.fixture(scope="module")
def emu3_folders(root):
    pytest.importorskip("transformers.models.emu3.modeling_emu3")
    from helpers import emu3_vq_fixtures as emu3_fx

    model = emu3_fx.make_tiny_emu3(seed=0)
    hf = emu3_fx.write_hf_folder(root / "Emu3-Gen-hf", model)
    return hf, emu3_fx.write_original_folder(root / "Emu3-VisionTokenizer", emu3_fx.vq_state_dict(model))


def config_folder(path, **config):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


# ----------------------------------------------------------------------------- the interface
def check_interface(vq, truncates: bool):
    """The declared members, with the promised types, shapes, dtypes and ranges."""
    assert isinstance(vq, VQ)
    assert isinstance(vq.codebook_size, int) and vq.codebook_size > 1
    assert isinstance(vq.downsample, int) and vq.downsample >= 1
    assert vq.truncates_to_uint8 is truncates
    assert isinstance(vq.source_path, str)
    assert vq.device == torch.device("cpu") and vq.dtype == torch.float32
    ds = vq.downsample
    codes = torch.randint(0, vq.codebook_size, (2, 2, 3), generator=torch.Generator().manual_seed(0))
    pixels = vq.decode_codes(codes)
    assert pixels.shape == (2, 3, 2 * ds, 3 * ds) and pixels.dtype == torch.float32
    assert 0 <= pixels.min() and pixels.max() <= 1
    recoded = vq.encode_images(pixels)
    assert recoded.shape == (2, 2, 3) and recoded.dtype == torch.long
    assert 0 <= recoded.min() and recoded.max() < vq.codebook_size


def test_llamagen_vq_satisfies_the_interface(llamagen_file):
    vq = load_vq(llamagen_file)
    assert type(vq) is VQModel and vq.source_path == str(llamagen_file)
    check_interface(vq, truncates=False)


def test_chameleon_vq_satisfies_the_interface(chameleon_release):
    vq = load_vq(chameleon_release)
    assert type(vq) is ChameleonVQ and vq.source_path == str(chameleon_release)
    check_interface(vq, truncates=True)


def test_janus_vq_satisfies_the_interface(janus_folders):
    for folder in janus_folders:
        vq = load_vq(folder)
        assert type(vq) is VQModel and vq.source_path == str(folder)  # LlamaGen's network, Janus-Pro's rounding
        check_interface(vq, truncates=True)


def test_emu3_vq_satisfies_the_interface(emu3_folders):
    from zipar.vq.emu3 import Emu3VQ

    for folder in emu3_folders:
        vq = load_vq(folder)
        assert type(vq) is Emu3VQ and vq.source_path == str(folder)
        check_interface(vq, truncates=True)


def test_something_else_does_not_satisfy_the_interface():
    class DecodeOnly:
        codebook_size, downsample, truncates_to_uint8, source_path = 4, 1, False, None
        device, dtype = torch.device("cpu"), torch.float32

        def decode_codes(self, codes):
            return codes

    assert not isinstance(DecodeOnly(), VQ)


# ----------------------------------------------------------------------------- dispatch
def test_each_kind_of_path_goes_to_its_format(tmp_path, llamagen_file, chameleon_release):
    safetensors = tmp_path / "vq_ds16_t2i.safetensors"
    save_official_vq(make_tiny_vq(seed=1), safetensors)
    codes = torch.randint(0, 64, (1, 2, 2), generator=torch.Generator().manual_seed(3))
    for path in (llamagen_file, str(llamagen_file), safetensors):
        assert find_format(path).name == "a LlamaGen VQ image tokenizer"
        assert isinstance(load_vq(path), VQModel)
    expected = load_vq(chameleon_release).decode_codes(codes)
    release = chameleon_release.parent.parent
    for path in (chameleon_release, chameleon_release.parent, release):
        vq = load_vq(path)
        assert isinstance(vq, ChameleonVQ) and torch.equal(vq.decode_codes(codes), expected)
    # the VQGAN dropped into the Lumina-mGPT folder it belongs to is found before the folder's config
    lumina = config_folder(tmp_path / "Lumina-mGPT", model_type="chameleon")
    cham_fx.write_chameleon_vqgan(lumina)
    assert isinstance(load_vq(lumina), ChameleonVQ)


def test_janus_layouts_load_the_same_vq(janus_folders):
    hf, original = janus_folders
    codes = torch.randint(0, 50, (1, 2, 2), generator=torch.Generator().manual_seed(4))
    assert torch.equal(load_vq(hf).decode_codes(codes), load_vq(original).decode_codes(codes))


def test_device_and_dtype_reach_the_format(llamagen_file, chameleon_release):
    for path in (llamagen_file, chameleon_release):
        vq = load_vq(path, "cpu", torch.bfloat16)
        assert vq.dtype == torch.bfloat16 and vq.device == torch.device("cpu")


def test_describe_names_only_specific_formats(tmp_path, llamagen_file, chameleon_release):
    assert describe_vq_source(chameleon_release) == "Meta's Chameleon VQGAN, the image decoder of Lumina-mGPT"
    assert describe_vq_source(config_folder(tmp_path / "tok", model_type="Emu3VisionVQ")) == "Emu3's VQ image tokenizer"
    assert describe_vq_source(config_folder(tmp_path / "janus", model_type="janus")) == "a Janus-Pro folder"
    assert describe_vq_source(llamagen_file) is None  # any file is LlamaGen's to read; it names nothing
    assert describe_vq_source(tmp_path / "missing") is None
    assert sum(f.catch_all for f in FORMATS) == 1


@pytest.mark.parametrize("model_type, needles", [
    ("chameleon", ["is a Lumina-mGPT language model", LUMINA_VQ_HINT]),
    ("Emu3", ["original BAAI/Emu3-Gen language model, which has no VQ", "pick the BAAI/Emu3-VisionTokenizer folder"]),
    ("bert", ["holds a model of type 'bert', which ZipAR does not know", "vq_ds16_c2i.pt", "Janus-Pro",
              "BAAI/Emu3-VisionTokenizer", "vqgan.ckpt"]),
], ids=["lumina_lm", "emu3_original_lm", "unknown"])
def test_folders_without_a_vq_say_where_it_is(tmp_path, model_type, needles):
    folder = config_folder(tmp_path / "folder", model_type=model_type)
    with pytest.raises(ZipARError) as info:
        load_vq(folder)
    assert str(folder) in str(info.value)
    for needle in needles:
        assert needle in str(info.value)


def test_wrong_paths_give_one_clear_error(tmp_path):
    gpt = {"tok_embeddings.weight": torch.zeros(64, 16), "layers.0.attention.wqkv.weight": torch.zeros(48, 16)}
    torch.save({"model": gpt}, tmp_path / "c2i_L_384.pt")
    with pytest.raises(ZipARError, match="looks like a LlamaGen GPT .*AR model.* pick a VQ file"):
        load_vq(tmp_path / "c2i_L_384.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZipARError, match="no config.json in .*empty.*ZipAR reads these VQs: .*LlamaGen VQ files"):
        load_vq(tmp_path / "empty")
    with pytest.raises(ZipARError, match="VQ not found: .*missing.pt"):
        load_vq(tmp_path / "missing.pt")
    weights_only = config_folder(tmp_path / "Janus-Pro-broken", model_type="multi_modality")
    torch.save({"language_model.model.embed_tokens.weight": torch.zeros(4, 4)}, weights_only / "pytorch_model.bin")
    with pytest.raises(ZipARError, match="has no VQ weights .*gen_vision_model.*Janus-Pro-1B"):
        load_vq(weights_only)
