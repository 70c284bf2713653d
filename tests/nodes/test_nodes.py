"""The ComfyUI nodes without ComfyUI: contracts, end-to-end runs on tiny models, caching,
progress/preview/cancel glue (against stand-ins for ComfyUI's modules), and the import scheme."""
from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import nodes
from nodes import cache, conditions, host, preview
from nodes.datatypes import Tokens
from helpers.node_fixtures import write_tiny_models
from zipar.core.loop import Progress
from zipar.errors import ZipARError

REPO = Path(__file__).resolve().parents[2]
N = nodes.NODE_CLASS_MAPPINGS
SIZE = 64  # 4 x 4 token grid with the tiny VQ-16: fast everywhere


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = write_tiny_models(tmp_path_factory.mktemp("comfy-models"))
    host.set_models_dir(root)
    host.forget_modules()
    yield root
    host.set_models_dir(None)
    cache.clear_all()


def run(name, *args, **kwargs):
    node = N[name]()
    return getattr(node, N[name].FUNCTION)(*args, **kwargs)


def c2i(models_dir, image_size=SIZE):
    (model,) = run("ZipARLoadARModel", "c2i_L_384.pt", image_size, "auto", "default")
    (vq,) = run("ZipARLoadVQ", "vq_ds16_c2i.pt", "fp32", "default")
    (cond,) = run("ZipARImageNetClass", "207: golden retriever")
    return model, vq, cond


SAMPLER_DEFAULTS = dict(window=2, seed=0, cfg=4.0, temperature=1.0, top_k=2000, top_p=1.0, batch_size=1, preview=True)


def sample(model, cond, vq=None, **overrides):
    return run("ZipARSampler", model, cond, **{**SAMPLER_DEFAULTS, **overrides}, vq=vq)


# ---------------------------------------------------------------------------- contracts

WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def test_every_node_declares_the_comfyui_contract(models_dir):
    assert set(N) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in N.items():
        assert name.startswith("ZipAR") and nodes.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("ZipAR")
        assert cls.CATEGORY == "ZipAR"
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
        assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
        function = getattr(cls, cls.FUNCTION)
        params = inspect.signature(function).parameters
        for section in ("required", "optional"):
            for input_name, (kind, *rest) in spec.get(section, {}).items():
                opts = rest[0] if rest else {}
                assert opts.get("tooltip"), f"{name}.{input_name} has no tooltip"
                assert input_name in params, f"{name}.{cls.FUNCTION} does not take {input_name}"
                if section == "optional":
                    assert params[input_name].default is not inspect.Parameter.empty
                if kind in ("INT", "FLOAT"):
                    assert opts["min"] <= opts["default"] <= opts["max"], f"{name}.{input_name}"
                if isinstance(kind, list) and "default" in opts:
                    assert opts["default"] in kind
                assert isinstance(kind, list) or kind in WIDGETS or kind.isupper()


def test_types_flow_between_the_nodes():
    outputs = {t for cls in N.values() for t in cls.RETURN_TYPES}
    inputs = {s[0] for cls in N.values() for sec in ("required", "optional")
              for s in cls.INPUT_TYPES().get(sec, {}).values() if not isinstance(s[0], list)}
    custom = {t for t in outputs | inputs if t.startswith("ZIPAR_")}
    assert custom == {"ZIPAR_MODEL", "ZIPAR_VQ", "ZIPAR_CONDITION", "ZIPAR_TOKENS"}
    assert custom <= outputs and custom <= inputs  # every custom type is produced and consumed
    assert N["ZipARSampler"].RETURN_TYPES == ("ZIPAR_TOKENS", "STRING")
    assert N["ZipARVQDecode"].RETURN_TYPES == ("IMAGE",)


def test_sampler_ranges_and_seed_widget():
    req = N["ZipARSampler"].INPUT_TYPES()["required"]
    assert req["window"][1]["min"] == 1 and req["window"][1]["max"] >= 32
    assert req["seed"][1]["control_after_generate"] is True and req["seed"][1]["max"] == 2**64 - 1
    assert req["top_p"][1]["min"] > 0 and req["top_p"][1]["max"] == 1.0
    assert req["temperature"][1]["min"] == 0.0 and req["cfg"][1]["min"] == 0.0
    assert "next-token" in req["window"][1]["tooltip"]


def test_imagenet_classes():
    names = conditions.imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[207], names[360], names[999]) == ("tench", "golden retriever", "otter", "toilet tissue")
    choices = N["ZipARImageNetClass"].INPUT_TYPES()["required"]["class_name"]
    assert choices[0][207] == "207: golden retriever" and choices[1]["default"] == "207: golden retriever"
    (cond,) = run("ZipARImageNetClass", "360: otter")
    assert cond.class_ids == [360] and cond.labels == ["otter"]
    with pytest.raises(ZipARError, match="out of range"):
        run("ZipARImageNetClass", "1000: nothing")


def test_model_lists_come_from_the_models_folder(models_dir):
    ar = N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"]
    vq = N["ZipARLoadVQ"].INPUT_TYPES()["required"]["vq_model"]
    # each loader lists what it can read (told apart by the files' key names, no weights loaded)
    assert ar[0] == ["c2i_L_384.pt", "t2i_XL_stage2_512.pt", "zipar-demo/demo_c2i_64.safetensors"]
    assert vq[0] == ["vq_ds16_c2i.pt", "vq_ds16_t2i.pt", "zipar-demo/demo_vq.safetensors"]
    assert ar[1]["default"] == "c2i_L_384.pt" and vq[1]["default"] == "vq_ds16_c2i.pt"  # never "undefined"
    assert host.list_models() == sorted(ar[0][:2] + vq[0][:2]) + ar[0][2:] + vq[0][2:]  # unfiltered: all
    t5 = N["ZipARTextEncodeT5"].INPUT_TYPES()["required"]["text_encoder"]
    assert t5[0] == ["flan-t5-xl"] and t5[1]["default"] == "flan-t5-xl"
    with pytest.raises(ZipARError, match="not found"):
        host.model_path("missing.pt")


def test_demo_files_are_listed_with_an_empty_models_folder(tmp_path, monkeypatch):
    """A fresh install: nothing in models/zipar, the demo workflow still finds its two files."""
    monkeypatch.setattr(host, "_models_dir_override", str(tmp_path))
    assert N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"][0] == ["zipar-demo/demo_c2i_64.safetensors"]
    listed = host.list_models()
    assert listed == ["zipar-demo/demo_c2i_64.safetensors", "zipar-demo/demo_vq.safetensors"]
    assert N["ZipARLoadVQ"].INPUT_TYPES()["required"]["vq_model"][0] == listed[1:]
    # a bare install's text-encoder list says what to put where, and picking it says it again
    (hint,) = N["ZipARTextEncodeT5"].INPUT_TYPES()["required"]["text_encoder"][0]
    assert "google/flan-t5-xl" in hint and "models/text_encoders/flan-t5-xl" in hint
    with pytest.raises(ZipARError, match="download google/flan-t5-xl into ComfyUI/models/text_encoders/flan-t5-xl"):
        host.text_encoder_path(hint)
    assert Path(host.model_path(listed[1])).samefile(REPO / "zipar" / "assets" / "demo" / "demo_vq.safetensors")
    # a user's file of the same relative name wins over the shipped one
    own = tmp_path / "zipar" / "zipar-demo" / "demo_vq.safetensors"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"")
    assert Path(host.model_path("zipar-demo/demo_vq.safetensors")) == own
    assert host.list_models().count("zipar-demo/demo_vq.safetensors") == 1
    # an unreadable file cannot be told apart: both loaders offer it, and the loader says what is wrong
    assert N["ZipARLoadVQ"].INPUT_TYPES()["required"]["vq_model"][0].count("zipar-demo/demo_vq.safetensors") == 1
    assert "zipar-demo/demo_vq.safetensors" in N["ZipARLoadARModel"].INPUT_TYPES()["required"]["ar_model"][0]


def test_demo_workflow_nodes_draw_the_asked_digit(tmp_path, monkeypatch):
    """The demo_zipar chain (shipped files, Class ID, NTP, VQ Decode); the digit is read back by
    matching against the real digit renders (nearest class mean), not by the model itself."""
    from zipar.demo import ink_of, load_digit_split, render_digits

    monkeypatch.setattr(host, "_models_dir_override", str(tmp_path))
    try:
        (model,) = run("ZipARLoadARModel", "zipar-demo/demo_c2i_64.safetensors", 0, "fp32", "default")
        (vq,) = run("ZipARLoadVQ", "zipar-demo/demo_vq.safetensors", "fp32", "default")
        assert model.image_size == 64
        with pytest.raises(ZipARError, match="out of range"):
            sample(model, run("ZipARClassID", 10)[0], vq, window=16)
        train_x, train_y, _, _ = load_digit_split()
        means = torch.stack([ink_of(render_digits(train_x[train_y == d])).mean(0) for d in range(10)])
        hits = 0
        for digit in (0, 1, 6):
            tokens, report = sample(model, run("ZipARClassID", digit)[0], vq, window=16, cfg=2.0, top_k=0,
                                    batch_size=4, preview=False)
            assert report.startswith("window 16: 256 forward passes")
            (image,) = run("ZipARVQDecode", vq, tokens)
            ink = ink_of(image.permute(0, 3, 1, 2))
            guess = ((ink[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)
            hits += int((guess == digit).sum())
        assert hits >= 8, f"only {hits} of 12 samples look like the digit asked for"
    finally:
        cache.clear_all()


# ---------------------------------------------------------------------------- end to end

def test_class_to_image_end_to_end(models_dir):
    model, vq, cond = c2i(models_dir)
    tokens, report = sample(model, cond, vq, batch_size=2)
    assert isinstance(tokens, Tokens) and tokens.tokens.shape == (2, 4, 4) and tokens.grid == (4, 4)
    assert tokens.tokens.dtype == torch.int64 and tokens.vocab_size == 64
    assert report == tokens.report and report.startswith("window 2: 12 forward passes instead of 16 (-25%), ")
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (2, SIZE, SIZE, 3) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0


def test_same_seed_same_image_and_window_is_checked_against_the_grid(models_dir):
    model, vq, cond = c2i(models_dir)
    a, _ = sample(model, cond, vq, seed=7, window=4)
    b, report = sample(model, cond, seed=7, window=4)  # no VQ connected: 16 pixels per token
    assert torch.equal(a.tokens, b.tokens) and "next-token prediction" in report
    with pytest.raises(ZipARError, match="window must be between 1 and 4"):
        sample(model, cond, vq, window=5)
    (greedy, _) = sample(model, cond, vq, temperature=0.0, seed=1)
    (greedy2, _) = sample(model, cond, vq, temperature=0.0, seed=2)
    assert torch.equal(greedy.tokens, greedy2.tokens)  # temperature 0 = greedy: the seed does not matter


def test_speculative_sampler_gives_the_windows_greedy_tokens_and_reports_acceptance(models_dir):
    req = N["ZipARSampler"].INPUT_TYPES()["required"]
    assert req["speculative"][0] == "BOOLEAN" and req["speculative"][1]["default"] is False
    assert req["draft_length"][1]["min"] == 1 and req["draft_length"][1]["default"] == 16
    model, vq, cond = c2i(models_dir)
    for window in (4, 2):
        plain, plain_report = sample(model, cond, vq, temperature=0.0, window=window)
        spec, report = sample(model, cond, vq, temperature=0.0, window=window, speculative=True, draft_length=3)
        assert torch.equal(spec.tokens, plain.tokens)
        assert report.startswith(f"window {window} + speculative: ") and "drafts accepted per pass" in report
    a, _ = sample(model, cond, vq, seed=3, speculative=True)
    b, _ = sample(model, cond, vq, seed=3, speculative=True)
    assert torch.equal(a.tokens, b.tokens)
    with pytest.raises(ZipARError, match="draft length"):
        sample(model, cond, vq, speculative=True, draft_length=0)


def test_image_size_from_the_file_name(models_dir):
    (model,) = run("ZipARLoadARModel", "c2i_L_384.pt", 0, "auto", "default")
    assert model.image_size == 384
    renamed = models_dir / "zipar" / "my_model.pt"
    os.link(models_dir / "zipar" / "c2i_L_384.pt", renamed)
    try:
        with pytest.raises(ZipARError, match="image_size"):
            run("ZipARLoadARModel", "my_model.pt", 0, "auto", "default")
        assert run("ZipARLoadARModel", "my_model.pt", 256, "auto", "default")[0].image_size == 256
    finally:
        renamed.unlink()


def test_text_to_image_end_to_end(models_dir):
    pytest.importorskip("transformers")
    (model,) = run("ZipARLoadARModel", "t2i_XL_stage2_512.pt", SIZE, "auto", "default")
    (vq,) = run("ZipARLoadVQ", "vq_ds16_t2i.pt", "fp32", "default")
    loads = cache.TEXT_ENCODERS.loads
    (cond,) = run("ZipARTextEncodeT5", "a photo of a red fox", "flan-t5-xl", "auto", "default")
    (cond2,) = run("ZipARTextEncodeT5", "the blue car", "flan-t5-xl", "auto", "default")
    assert cache.TEXT_ENCODERS.loads == loads + 1  # the encoder was loaded once for both prompts
    assert cond.caption_features.shape == (1, 120, 24)
    tokens, report = sample(model, cond, vq, cfg=7.5, top_k=1000, window=1)
    (image,) = run("ZipARVQDecode", vq, tokens)
    assert image.shape == (1, SIZE, SIZE, 3) and "forward passes" in report
    with pytest.raises(ZipARError, match="Text Encode"):
        sample(model, run("ZipARImageNetClass", "0: tench")[0], vq)
    c2i_model, _, _ = c2i(models_dir)
    with pytest.raises(ZipARError, match="ImageNet Class"):
        sample(c2i_model, cond2)
    with pytest.raises(ZipARError, match="prompt is empty"):
        run("ZipARTextEncodeT5", "  ", "flan-t5-xl", "auto", "default")


def test_vq_encode_crops_or_resizes_to_the_token_size(models_dir):
    _, vq, _ = c2i(models_dir)
    image = torch.rand(2, 70, 50, 3)
    (cropped,) = run("ZipARVQEncode", vq, image, "center crop")
    assert cropped.tokens.shape == (2, 4, 3) and cropped.vocab_size == 64
    (resized,) = run("ZipARVQEncode", vq, torch.rand(1, 88, 40, 4), "resize")  # RGBA: alpha ignored
    assert resized.tokens.shape == (1, 6, 2)  # 88/16 = 5.5 -> 6 (rounded), 40/16 = 2.5 -> 2
    (back,) = run("ZipARVQDecode", vq, cropped)
    assert back.shape == (2, 64, 48, 3)


# ---------------------------------------------------------------------------- errors the user sees

def test_engine_errors_reach_the_user_as_one_message(models_dir):
    model, vq, cond = c2i(models_dir)
    with pytest.raises(ZipARError, match="VQ image tokenizer, not an AR model"):
        run("ZipARLoadARModel", "vq_ds16_c2i.pt", 256, "auto", "default")
    with pytest.raises(ZipARError, match="not a multiple"):
        sample(ARModelWithSize(model, 72), cond, vq)
    other = Tokens(torch.zeros(1, 4, 4, dtype=torch.long), vocab_size=16384)
    with pytest.raises(ZipARError, match="codebook of 16384 codes but the VQ has 64"):
        run("ZipARVQDecode", vq, other)
    # the mismatch names the VQ of the family that drew the tokens
    demo = run("ZipARLoadARModel", "zipar-demo/demo_c2i_64.safetensors", 0, "fp32", "default")[0]
    demo_tokens = sample(demo, run("ZipARClassID", 3)[0], window=2)[0]
    assert "demo_vq.safetensors" in demo_tokens.vq_hint
    with pytest.raises(ZipARError, match="the AR model predicts .* use the VQ released with the model: the demo's "
                                         "demo_vq.safetensors"):
        sample(demo, run("ZipARClassID", 3)[0], vq)
    with pytest.raises(ZipARError, match="LlamaGen's vq_ds16_c2i.pt for c2i models"):
        run("ZipARVQDecode", run("ZipARLoadVQ", "zipar-demo/demo_vq.safetensors", "fp32", "default")[0],
            sample(model, cond, vq)[0])
    bad = Tokens(torch.full((1, 4, 4), 99), vocab_size=64)  # ids beyond the codebook: the engine's check
    with pytest.raises(ZipARError, match="out of range"):
        run("ZipARVQDecode", vq, bad)
    if not torch.cuda.is_available():
        with pytest.raises(ZipARError, match="CUDA"):
            host.torch_device("cuda")


def ARModelWithSize(handle, size):
    return type(handle)(handle.model, size, handle.name)


# ---------------------------------------------------------------------------- caching

def test_second_load_does_not_read_the_disk(models_dir):
    cache.clear_all()
    first = run("ZipARLoadARModel", "c2i_L_384.pt", SIZE, "auto", "default")[0]
    loads = cache.AR_MODELS.loads
    again = run("ZipARLoadARModel", "c2i_L_384.pt", 384, "auto", "default")[0]
    assert again.model is first.model and cache.AR_MODELS.loads == loads  # image size is not a load key
    path = models_dir / "zipar" / "c2i_L_384.pt"
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    try:
        changed = N["ZipARLoadARModel"].IS_CHANGED(ar_model="c2i_L_384.pt")
        reloaded = run("ZipARLoadARModel", "c2i_L_384.pt", SIZE, "auto", "default")[0]
        assert reloaded.model is not first.model and cache.AR_MODELS.loads == loads + 1
        assert changed == f"{stamp + 10**9}-{path.stat().st_size}"
    finally:
        os.utime(path, ns=(stamp, stamp))
    run("ZipARLoadARModel", "t2i_XL_stage2_512.pt", SIZE, "auto", "default")
    assert cache.AR_MODELS.key[0].endswith("t2i_XL_stage2_512.pt")  # one slot: the c2i model was dropped
    vq = run("ZipARLoadVQ", "vq_ds16_c2i.pt", "fp32", "default")[0]
    assert run("ZipARLoadVQ", "vq_ds16_c2i.pt", "fp32", "default")[0] is vq and vq.patcher is None  # no ComfyUI


def test_kv_dtype_is_a_load_key_and_reaches_the_model(models_dir):
    """Load AR Model's kv_dtype (default "default") is kept by the model; changing it reloads."""
    spec = N["ZipARLoadARModel"].INPUT_TYPES()["required"]["kv_dtype"]
    assert spec[0] == ["default", "int8"] and spec[1]["default"] == "default" and "half" in spec[1]["tooltip"]
    cache.clear_all()
    plain = run("ZipARLoadARModel", "c2i_L_384.pt", SIZE, "auto", "default")[0]
    assert plain.model.kv_dtype == "default"
    loads = cache.AR_MODELS.loads
    eight = run("ZipARLoadARModel", "c2i_L_384.pt", SIZE, "auto", "default", "default", "int8")[0]
    assert eight.model is not plain.model and cache.AR_MODELS.loads == loads + 1
    assert eight.model.kv_dtype == "int8" and eight.model.gpt.kv_dtype == "int8"
    assert run("ZipARLoadARModel", "c2i_L_384.pt", SIZE, "auto", "default", "default", "int8")[0].model is eight.model
    cache.clear_all()


# ---------------------------------------------------------------------------- ComfyUI glue (stand-ins)

class Interrupted(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


@pytest.fixture
def fake_comfy(monkeypatch):
    """Minimal stand-ins for comfy.utils / comfy.model_management, recording what the nodes call."""
    state = types.SimpleNamespace(bars=[], interrupt_after=None, checks=0)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.updates = total, []
            state.bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.updates.append((value, total, preview))

    def throw_exception_if_processing_interrupted():
        state.checks += 1
        if state.interrupt_after is not None and state.checks > state.interrupt_after:
            raise Interrupted()

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda: None
    comfy = types.ModuleType("comfy")
    comfy.utils, comfy.model_management = utils, mm
    for name, module in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, module)
    host.forget_modules()
    state.mm = mm
    yield state
    host.forget_modules()


def test_progress_bar_advances_per_forward_pass_with_previews(models_dir, fake_comfy, monkeypatch):
    model, vq, cond = c2i(models_dir)
    monkeypatch.setattr(preview, "MIN_INTERVAL", 0.0)  # a frame every pass
    sample(model, cond, vq, window=2)
    (bar,) = fake_comfy.bars
    assert bar.total == 12 and [u[0] for u in bar.updates] == list(range(1, 13))
    assert fake_comfy.checks == 12  # the cancel button is checked every pass
    frames = [u[2] for u in bar.updates]
    assert all(f[0] == "JPEG" and f[2] is None for f in frames)
    assert frames[0][1].size == (256, 256)
    first, last = frames[0][1].getpixel((255, 255)), frames[-1][1].getpixel((255, 255))
    assert first == (preview.UNFILLED,) * 3 and last != first  # the grid fills in
    # throttled: only the last pass gets a frame when passes come faster than the interval
    monkeypatch.setattr(preview, "MIN_INTERVAL", 3600.0)
    sample(model, cond, vq, window=2)
    assert [u[2] is not None for u in fake_comfy.bars[-1].updates] == [False] * 11 + [True]
    # previews off: by the node input or the environment
    sample(model, cond, vq, window=2, preview=False)
    monkeypatch.setenv("ZIPAR_PREVIEW", "0")
    sample(model, cond, vq, window=2)
    assert all(u[2] is None for bar in fake_comfy.bars[-2:] for u in bar.updates)
    assert len(fake_comfy.bars[-1].updates) == 12


def test_cancel_stops_within_one_pass(models_dir, fake_comfy):
    model, vq, cond = c2i(models_dir)
    fake_comfy.interrupt_after = 5
    with pytest.raises(Interrupted):  # ComfyUI's own exception, not wrapped
        sample(model, cond, vq, window=2)
    assert [u[0] for u in fake_comfy.bars[-1].updates] == [1, 2, 3, 4, 5]


def test_vq_decode_reports_progress_stage_by_stage(models_dir, fake_comfy):
    from nodes.vq_nodes import CHUNK, decoder_stages

    model, vq, cond = c2i(models_dir)
    tokens = sample(model, cond, vq, batch_size=CHUNK + 1, preview=False)[0]  # two decoder calls
    stages = len(decoder_stages(vq.vq))
    assert stages >= 5  # conv_in, the middle blocks, each level, the output norm and conv
    run("ZipARVQDecode", vq, tokens)
    bar = fake_comfy.bars[-1]
    values = [u[0] for u in bar.updates]
    assert bar.total == 2 * stages and values[-1] == 2 * stages and values == sorted(values)
    assert len([v for v in values if v < stages]) >= stages - 1  # the bar moves within one decoder call
    fake_comfy.interrupt_after, fake_comfy.checks = 3, 0
    with pytest.raises(Interrupted):  # cancel acts within a few stages, not after the whole batch
        run("ZipARVQDecode", vq, tokens)
    assert fake_comfy.bars[-1].updates[-1][0] < stages


def test_default_device_is_comfyuis(models_dir, fake_comfy):
    assert host.torch_device("default") == torch.device("cpu")


def test_model_folder_registration_keeps_user_paths(monkeypatch, tmp_path):
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        paths, _ = fp.folder_names_and_paths.setdefault(name, ([], set()))
        paths.append(path)

    fp.add_model_folder_path = add_model_folder_path
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    host.forget_modules()
    try:
        host.register_model_folders()
        assert fp.folder_names_and_paths["zipar"] == ([str(tmp_path / "models" / "zipar")], {".pt", ".pth", ".safetensors", ".ckpt"})
        # as extra_model_paths.yaml leaves it: the user's path, no extensions (= any file)
        fp.folder_names_and_paths = {"zipar": (["/data/zipar"], set())}
        host.register_model_folders()
        paths, extensions = fp.folder_names_and_paths["zipar"]
        assert paths == ["/data/zipar", str(tmp_path / "models" / "zipar")] and extensions == {".pt", ".pth", ".safetensors", ".ckpt"}
    finally:
        host.forget_modules()


def test_preview_throttle_counts_frames_not_seconds():
    """A benchmark-like check of the preview cost model, on a fake clock: 1000 passes of 1/64 s
    get one frame per 0.25 s plus the last one, and the palette is computed once per model."""

    class Model:  # a family without code embeddings: hashed colours
        vocab_size = 64

        def code_embeddings(self):
            return None

    model = Model()
    now = [0.0]
    frames = preview.TokenPreview(model, min_interval=0.25, clock=lambda: now[0])
    tokens, filled = torch.zeros(1, 8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.bool)
    shown = 0
    for step in range(1, 1001):
        now[0] += 1 / 64
        shown += frames(Progress(step, 1000, tokens, filled)) is not None
    assert shown == frames.frames == 62 + 1  # every 16th pass (15.6 s / 0.25 s), and the last one
    assert preview.palette_for(model) is frames.palette


def test_embedding_palette_is_fixed_per_model(models_dir):
    model, _, _ = c2i(models_dir)
    palette = preview.palette_for(model.model)
    assert palette.shape == (64, 3) and palette.dtype.name == "uint8" and len({tuple(c) for c in palette}) > 32
    assert (preview.embedding_palette(model.model.gpt.tok_embeddings.weight) == palette).all()


# ---------------------------------------------------------------------------- the import scheme

def test_pack_loads_the_way_comfyui_loads_it(tmp_path, monkeypatch):
    """ComfyUI imports <custom_nodes>/<folder>/__init__.py under a module name made from its path
    while its own top-level ``nodes`` module is loaded; the pack must not touch that name."""
    link = tmp_path / "custom_nodes" / "Some-Folder.Name"
    link.parent.mkdir()
    link.symlink_to(REPO, target_is_directory=True)
    comfy_nodes = types.ModuleType("nodes")  # ComfyUI's nodes.py
    monkeypatch.setitem(sys.modules, "nodes", comfy_nodes)
    module_name = str(link).replace(".", "_x_")  # what ComfyUI's load_custom_node does
    spec = importlib.util.spec_from_file_location(module_name, link / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    path_before = list(sys.path)
    try:
        spec.loader.exec_module(module)
        assert set(module.NODE_CLASS_MAPPINGS) == set(N)
        assert module.NODE_DISPLAY_NAME_MAPPINGS == nodes.NODE_DISPLAY_NAME_MAPPINGS
        assert sys.modules["nodes"] is comfy_nodes and sys.path == path_before
        engine = sys.modules[f"{module_name}.nodes.engine"]
        assert engine.api.__name__ == f"{module_name}.zipar.api"  # the engine beside nodes/, found relatively
    finally:
        for name in [m for m in sys.modules if m.startswith(module_name)]:
            monkeypatch.delitem(sys.modules, name, raising=False)
