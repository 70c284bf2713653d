"""Emu3-Gen's VQ tokenizer: both published folder layouts, parity with transformers, errors."""
import hashlib
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

pytest.importorskip("transformers.models.emu3.modeling_emu3")

from helpers import emu3_vq_fixtures as fx  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.vq.emu3 import Emu3VQ, load_emu3_vq, original_to_hf_key  # noqa: E402

# Obtained once, offline, by building Emu3VisionVQModel from baaivision/Emu3
# (emu3/tokenizer/modeling_emu3visionvq.py) with fx.ORIGINAL_CONFIG's architecture fields and
# taking len(model.state_dict()) and sha256("\n".join(sorted(model.state_dict()))). The same
# reference model, loaded strictly from the fixture's original-format file, decoded to the
# loader's pixels (max diff 2e-6) and encoded to the loader's codes.
ORIGINAL_TINY_KEYS = (295, "bfcc0f86ce45e8c02c8f01670445111d97d07b4d5d1ccc346da6705cc9d25509")
ORIGINAL_KEY_SAMPLE = {  # name -> shape in the original tiny model
    "encoder.down.0.block.0.norm1.weight": (32,),
    "encoder.down.1.downsample.conv.weight": (32, 32, 3, 3),
    "encoder.down.2.attn.0.q.weight": (64, 64, 1, 1),
    "encoder.down.2.attn.0.norm.weight": (64,),
    "encoder.mid.attn_1.proj_out.weight": (64, 64, 1, 1),
    "encoder.mid.attn_1.norm.bias": (64,),
    "encoder.time_conv.0.conv.conv.weight": (4, 4, 4, 3, 3),
    "encoder.time_res_stack.0.norm1.running_var": (4,),
    "decoder.mid.attn_1.norm.conv_b.bias": (64,),
    "decoder.up.2.attn.1.norm.norm_layer.weight": (64,),
    "decoder.up.2.attn.1.k.weight": (64, 64, 1, 1),
    "decoder.up.1.upsample.conv.weight": (32, 32, 3, 3),
    "decoder.time_conv.0.conv.conv.weight": (4, 4, 3, 3, 3),
    "decoder.norm_out.conv_y.weight": (32, 4, 1, 1),
    "quant_conv.conv.weight": (4, 4, 3, 1, 1),
    "quantize.embedding.weight": (64, 4),
}


@pytest.fixture(scope="module")
def model():
    return fx.make_tiny_emu3(seed=0)


@pytest.fixture(scope="module")
def hf_dir(model, tmp_path_factory):
    return fx.write_hf_folder(tmp_path_factory.mktemp("emu3_hf"), model)


@pytest.fixture(scope="module")
def original_dir(model, tmp_path_factory):
    return fx.write_original_folder(tmp_path_factory.mktemp("emu3_orig"), fx.vq_state_dict(model))


@pytest.fixture(scope="module")
def vq_hf(hf_dir):
    return load_emu3_vq(hf_dir)


@pytest.fixture(scope="module")
def vq_orig(original_dir):
    return load_emu3_vq(original_dir)


@pytest.fixture(scope="module")
def reference(hf_dir):
    """transformers' own loader and module, as a user of Emu3ForConditionalGeneration gets it."""
    from transformers import Emu3ForConditionalGeneration

    return Emu3ForConditionalGeneration.from_pretrained(hf_dir).eval().model.vqmodel


@pytest.fixture(scope="module")
def codes():
    return torch.randint(0, 64, (2, 4, 5), generator=torch.Generator().manual_seed(1))


def _keys(path):
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


# ----------------------------------------------------------------------------- fixtures are the real layouts
def test_save_pretrained_writes_the_vqmodel_prefix(hf_dir):
    keys = _keys(hf_dir / "model.safetensors")
    assert any(k.startswith("vqmodel.encoder.") for k in keys)
    assert not any(k.startswith("model.vqmodel.") for k in keys)  # 5.x maps the in-memory name back
    assert json.loads((hf_dir / "config.json").read_text())["model_type"] == "emu3"


def test_original_fixture_matches_the_original_architecture(original_dir):
    sd = load_file(str(original_dir / "model.safetensors"))
    digest = hashlib.sha256("\n".join(sorted(sd)).encode()).hexdigest()
    assert (len(sd), digest) == ORIGINAL_TINY_KEYS
    for name, shape in ORIGINAL_KEY_SAMPLE.items():
        assert tuple(sd[name].shape) == shape, name


@pytest.mark.parametrize("original, hf", [
    ("encoder.down.2.attn.0.q.weight", "encoder.down_block.down.2.attn.0.q_proj.weight"),
    ("encoder.down.2.attn.1.norm.bias", "encoder.down_block.down.2.attn_norms.1.bias"),
    ("encoder.down.0.downsample.conv.weight", "encoder.down_block.down.0.downsample.conv.weight"),
    ("encoder.mid.attn_1.norm.weight", "encoder.middle_block.attn_norm.weight"),
    ("encoder.mid.attn_1.proj_out.bias", "encoder.middle_block.attn_1.out_proj.bias"),
    ("decoder.mid.attn_1.norm.conv_y.weight", "decoder.middle_block.attn_norm.conv_y.weight"),
    ("decoder.mid.block_2.norm1.norm_layer.bias", "decoder.middle_block.block_2.norm1.norm_layer.bias"),
    ("decoder.up.3.attn.2.norm.norm_layer.weight", "decoder.up_block.up.3.attn_norms.2.norm_layer.weight"),
    ("decoder.up.3.attn.2.v.weight", "decoder.up_block.up.3.attn.2.v_proj.weight"),
    ("decoder.up.1.block.2.nin_shortcut.weight", "decoder.up_block.up.1.block.2.nin_shortcut.weight"),
    ("decoder.time_res_stack.1.norm2.running_mean", "decoder.time_res_stack.1.norm2.running_mean"),
    ("encoder.time_conv.1.conv.conv.bias", "encoder.time_conv.1.conv.conv.bias"),
    ("post_quant_conv.conv.weight", "post_quant_conv.conv.weight"),
    ("quantize.embedding.weight", "quantize.embedding.weight"),
])
def test_original_key_names_map_to_transformers_names(original, hf):
    assert original_to_hf_key(original) == hf
    assert fx.hf_to_original_key(hf) == original


# ----------------------------------------------------------------------------- loading and parity
def test_wrapper_attributes_and_eval_mode(vq_hf):
    assert isinstance(vq_hf, Emu3VQ)
    assert (vq_hf.codebook_size, vq_hf.downsample) == (64, 4)
    assert vq_hf.device == torch.device("cpu") and vq_hf.dtype == torch.float32
    vq_hf.train()  # stays in eval: BatchNorm must keep using the running statistics
    assert not any(m.training for m in vq_hf.modules())
    assert not any(p.requires_grad for p in vq_hf.parameters())


def test_batchnorm_statistics_are_loaded(vq_hf, vq_orig, model):
    ref = model.model.vqmodel.state_dict()
    for vq in (vq_hf, vq_orig):
        got = vq.vq.state_dict()
        stats = [k for k in ref if k.endswith(("running_mean", "running_var"))]
        assert stats and all(torch.equal(got[k], ref[k]) for k in stats)


def test_both_formats_decode_to_identical_pixels(vq_hf, vq_orig, codes):
    a, b = vq_hf.decode_codes(codes), vq_orig.decode_codes(codes)
    assert torch.equal(a, b)


def test_decode_matches_transformers(vq_hf, reference, codes):
    with torch.no_grad():
        expected = ((reference.decode(codes).float() + 1) / 2).clamp(0, 1)
    got = vq_hf.decode_codes(codes)
    assert got.shape == (2, 3, 16, 20) and got.dtype == torch.float32
    assert 0 <= got.min() and got.max() <= 1
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert 0.05 < ((got > 0) & (got < 1)).float().mean()  # not all clamped: the comparison means something


def test_model_vqmodel_prefix_is_accepted(vq_hf, hf_dir, codes, tmp_path):
    sd = load_file(str(hf_dir / "model.safetensors"))
    save_file({"model." + k if k.startswith("vqmodel.") else k: v for k, v in sd.items()},
              str(tmp_path / "model.safetensors"))
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    assert torch.equal(load_emu3_vq(tmp_path).decode_codes(codes), vq_hf.decode_codes(codes))


def test_sharded_folder_from_save_pretrained(model, vq_hf, codes, tmp_path):
    folder = fx.write_hf_folder(tmp_path, model, max_shard_size="300KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert torch.equal(load_emu3_vq(folder).decode_codes(codes), vq_hf.decode_codes(codes))


def test_shards_without_vq_tensors_are_never_opened(hf_dir, vq_hf, codes, tmp_path):
    sd = load_file(str(hf_dir / "model.safetensors"))
    text = {k: v for k, v in sd.items() if not k.startswith("vqmodel.")}
    vq = {k: v for k, v in sd.items() if k.startswith("vqmodel.")}
    save_file(vq, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"not a safetensors file")  # the 16 GB LM
    weight_map = {**{k: "model-00001-of-00002.safetensors" for k in text},
                  **{k: "model-00002-of-00002.safetensors" for k in vq}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    assert torch.equal(load_emu3_vq(tmp_path).decode_codes(codes), vq_hf.decode_codes(codes))


def test_original_file_without_batch_counters_loads(model, vq_orig, codes, tmp_path):
    folder = fx.write_original_folder(tmp_path, fx.vq_state_dict(model), drop_batch_counters=True)
    assert torch.equal(load_emu3_vq(folder).decode_codes(codes), vq_orig.decode_codes(codes))


def test_bfloat16_load(original_dir, vq_orig, codes):
    vq = load_emu3_vq(original_dir, dtype=torch.bfloat16)
    assert vq.dtype == torch.bfloat16
    got = vq.decode_codes(codes)
    assert got.dtype == torch.float32 and (got - vq_orig.decode_codes(codes)).abs().mean() < 0.05


# ----------------------------------------------------------------------------- encode
def test_encode_matches_transformers_and_both_formats(vq_hf, vq_orig, reference, codes):
    images = vq_hf.decode_codes(codes)
    got = vq_hf.encode_images(images)
    assert got.shape == codes.shape and got.dtype == torch.long
    assert 0 <= got.min() and got.max() < 64
    with torch.no_grad():
        out = reference.encode(images * 2 - 1, image_sizes=torch.tensor([[16, 20]] * 2))
    assert torch.equal(got, torch.stack(getattr(out, "image_tokens", out)))  # 5.x: an output object; 4.5x: a list
    assert torch.equal(vq_orig.encode_images(images), got)


def test_encode_decode_round_trip_is_a_fixed_point_after_one_step(vq_hf):
    """Random weights are no autoencoder, so codes -> pixels -> codes need not return; but
    encoding is a deterministic function of the pixels, so repeating it is exact."""
    codes = torch.randint(0, 64, (1, 3, 3), generator=torch.Generator().manual_seed(7))
    pixels = vq_hf.decode_codes(codes)
    first = vq_hf.encode_images(pixels)
    assert torch.equal(vq_hf.encode_images(pixels.clone()), first)
    assert torch.equal(vq_hf.decode_codes(first), vq_hf.decode_codes(first.clone()))


# ----------------------------------------------------------------------------- errors
def _message(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_folder_without_weights(hf_dir, tmp_path):
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ZipARError) as e:
        load_emu3_vq(tmp_path)
    assert str(tmp_path) in _message(e) and ".safetensors" in _message(e)


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(ZipARError, match="does not exist"):
        load_emu3_vq(tmp_path / "nope")
    with pytest.raises(ZipARError, match="no config.json"):
        load_emu3_vq(tmp_path)


def test_config_of_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 16}))
    with pytest.raises(ZipARError) as e:
        load_emu3_vq(tmp_path)
    assert "'llama'" in _message(e) and "Emu3-Gen-hf" in _message(e)


def test_emu3_folder_without_vq_tensors(hf_dir, tmp_path):
    sd = load_file(str(hf_dir / "model.safetensors"))
    save_file({k: v for k, v in sd.items() if not k.startswith("vqmodel.")}, str(tmp_path / "model.safetensors"))
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ZipARError, match="no VQ tokenizer weights"):
        load_emu3_vq(tmp_path)


def test_codes_out_of_range_and_bad_codes(vq_hf):
    for bad in (64, -1):
        codes = torch.zeros(1, 2, 2, dtype=torch.long)
        codes[0, 1, 1] = bad
        with pytest.raises(ZipARError, match=f"token id {bad} out of range"):
            vq_hf.decode_codes(codes)
    with pytest.raises(ZipARError, match="shaped"):
        vq_hf.decode_codes(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ZipARError, match="integer"):
        vq_hf.decode_codes(torch.zeros(1, 2, 2))


def test_bad_images(vq_hf):
    with pytest.raises(ZipARError, match="multiple of the Emu3 VQ downsampling factor 4"):
        vq_hf.encode_images(torch.rand(1, 3, 16, 18))
    with pytest.raises(ZipARError, match="shaped"):
        vq_hf.encode_images(torch.rand(3, 16, 16))
    with pytest.raises(ZipARError, match="float"):
        vq_hf.encode_images(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_weight_with_wrong_shape(model, tmp_path):
    sd = fx.vq_state_dict(model)
    sd["decoder.conv_out.weight"] = torch.zeros(3, 16, 3, 3)
    folder = fx.write_original_folder(tmp_path, sd)
    with pytest.raises(ZipARError) as e:
        load_emu3_vq(folder)
    text = _message(e)
    assert str(folder) in text and "'decoder.conv_out.weight' is [3, 16, 3, 3]" in text and "[3, 32, 3, 3]" in text


def test_config_that_does_not_fit_the_weights(model, tmp_path):
    config = dict(fx.ORIGINAL_CONFIG, num_res_blocks=2)
    folder = fx.write_original_folder(tmp_path, fx.vq_state_dict(model), config=config)
    with pytest.raises(ZipARError) as e:
        load_emu3_vq(folder)
    # the blocks are counted before the network is built (a config claiming thousands must not build them first)
    assert "the config describes 2 blocks 'encoder.down_block.down.0.block.N' but the weights hold 1" in _message(e)
    assert "config.json and the weights do not belong together" in _message(e)


def test_unexpected_tensor(model, tmp_path):
    sd = fx.vq_state_dict(model)
    sd["decoder.extra.weight"] = torch.zeros(2)
    folder = fx.write_original_folder(tmp_path, sd)
    with pytest.raises(ZipARError, match="1 unexpected tensors, e.g. 'decoder.extra.weight'"):
        load_emu3_vq(folder)


def test_package_imports_without_transformers():
    import subprocess
    import sys

    code = ("import sys; sys.modules['transformers'] = None; import zipar.vq.emu3 as m; "
            "print(m.original_to_hf_key('encoder.mid.attn_1.q.weight'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "encoder.middle_block.attn_1.q_proj.weight"
