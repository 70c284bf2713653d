"""Values the UI allows must not take the host down: sizes capped, lengths and batches checked
before anything is allocated, the plan linear in the grid, out-of-memory errors said plainly."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

import nodes
from nodes import cache, host
from helpers.tiny import make_tiny_vq, save_official_vq
from helpers.tiny_gpt import make_tiny_gpt, save_official_gpt
from zipar import api
from zipar.cli import main
from zipar.core.plan import build_plan
from zipar.core.loop import generate
from zipar.errors import ZipARError, memory_guard
from zipar.families.base import Condition
from zipar.nets.llama_lm import LlamaLM
from zipar.families.llamagen import LlamaGenModel
from zipar.core.sampling import SamplingOptions

N = nodes.NODE_CLASS_MAPPINGS
GREEDY = SamplingOptions(cfg=1.0, greedy=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    vq = make_tiny_vq(seed=0)
    save_official_vq(vq, d / "vq_ds16_c2i.pt")
    save_official_gpt(make_tiny_gpt("c2i", seed=0, vocab_size=vq.codebook_size), d / "c2i_T_64.pt")
    save_official_gpt(make_tiny_gpt("c2i", seed=0, vocab_size=vq.codebook_size), d / "renamed.pt")
    return d


@pytest.fixture(scope="module")
def chat_folders(tmp_path_factory):
    pytest.importorskip("transformers")
    from helpers.chat_fixtures import write_emu3_hf, write_janus_hf
    from helpers.lumina_fixtures import write_lumina

    root = tmp_path_factory.mktemp("chat")
    return {"janus": write_janus_hf(root / "Janus-Pro-1B"), "emu3": write_emu3_hf(root / "Emu3-Gen-hf"),
            "lumina": write_lumina(root / "Lumina-mGPT-7B-768")[0]}


# ----------------------------------------------------------------------------- image size caps

def test_llamagen_size_is_capped_at_twice_the_trained_side(files, capsys):
    model = api.load_ar_model(files / "c2i_T_64.pt", "cpu")
    assert model.max_image_size == 128
    with pytest.raises(ZipARError, match="image size 2048 is too large for this model: it was trained at 64 px "
                                         r"\(c2i_T_64.pt\), and ZipAR accepts up to 128 px; lower the image size"):
        model.grid_for(None, 2048, 16)
    assert model.grid_for(None, 128, 16) == (8, 8)
    renamed = api.load_ar_model(files / "renamed.pt", "cpu")
    assert renamed.max_image_size == 1024
    with pytest.raises(ZipARError, match="does not say its trained size in its file name"):
        renamed.grid_for(None, 1040, 16)
    code = main(["generate", "--ar-model", str(files / "c2i_T_64.pt"), "--vq-model", str(files / "vq_ds16_c2i.pt"),
                 "--class-id", "1", "--image-size", "2048", "--stats-json", str(files / "never.json")])
    assert code == 2 and "too large" in capsys.readouterr().err and not (files / "never.json").exists()


def test_load_ar_model_node_refuses_2048_on_the_demo_model(tmp_path):
    host.set_models_dir(tmp_path)
    host.forget_modules()
    try:
        load = N["ZipARLoadARModel"]()
        (ok,) = load.load("zipar-demo/demo_c2i_64.safetensors", 128, "fp32", "cpu")
        assert ok.image_size == 128
        with pytest.raises(ZipARError, match="image size 2048 is too large .* trained at 64 px .* up to 128 px"):
            load.load("zipar-demo/demo_c2i_64.safetensors", 2048, "fp32", "cpu")
    finally:
        host.set_models_dir(None)
        cache.clear_all()


# ----------------------------------------------------------------------------- the plan is linear in the grid

def plan_numel(plan) -> int:
    return sum(t.numel() for t in (plan.sources, plan.cells, plan.queries, plan.emits, plan.fill_step, plan.slot_cells,
                                   plan.emit_step))


@pytest.mark.parametrize("side,window", [(16, 4), (32, 4), (64, 8), (64, 64)])
def test_plan_memory_grows_linearly_with_the_cells(side, window):
    plan = build_plan(side, side, window, "cpu")
    cells = side * side
    assert plan_numel(plan) <= 7 * cells + 2 * side  # feeds (cells + stand-ins), emits, queries, three per-cell tables
    # the per-pass masks it no longer stores would have been sum(n * grid_len) booleans: far more at 64x64
    stored = sum(len(p.feeds) * (max(f.cell for f in p.feeds) + 1) for p in plan.schedule.passes[1:])
    assert side < 64 or stored > 100 * plan_numel(plan)


def test_row_end_layout_is_linear_too():
    from zipar.core.row_ends import RowEndColumns, RowEndLayout

    plan = build_plan(48, 48, 8, "cpu", False)
    layout = RowEndLayout.from_plan(plan, "cpu")
    columns = RowEndColumns.build(48, 48, "cpu")
    total = layout.offsets.numel() + layout.eol_rows.numel() + layout.queries.numel() + columns.columns.numel()
    assert total <= 5 * 48 * 49


def test_a_large_grid_plans_in_little_memory_and_time():
    start = time.perf_counter()
    plan = build_plan(128, 128, 8, "cpu")
    assert time.perf_counter() - start < 20
    assert plan_numel(plan) * 8 < 8 * 2**20  # under 8 MB (the per-pass masks took 2.4 GB at 256x256)
    build_plan.cache_clear()


# ----------------------------------------------------------------------------- lengths and configs checked first

@pytest.mark.parametrize("family", ["janus", "emu3", "lumina"])
def test_a_100k_character_prompt_is_refused_before_any_cache(chat_folders, family, monkeypatch):
    model = api.load_ar_model(chat_folders[family], "cpu", "fp32")
    if family != "janus":
        model.image_size = 64
    monkeypatch.setattr(LlamaLM, "new_cache", lambda *a, **k: (_ for _ in ()).throw(AssertionError("allocated")))
    cond = Condition(prompts=["a red fox " * 10_000])
    grid = model.grid_for(cond) if family == "janus" else model.grid_for(cond, 64)
    with pytest.raises(ZipARError, match=r"the prompt \(\d+ tokens\) and a .* image.* make \d+ positions, more than "
                                         r"the \d+ this model was trained on \(max_position_embeddings in its "
                                         r"config.json\); shorten the prompt or lower the image size"):
        generate(model, cond, grid, 2, GREEDY)


def test_an_image_longer_than_the_trained_sequence_is_refused_when_sized(chat_folders):
    model = api.load_ar_model(chat_folders["lumina"], "cpu", "fp32")
    with pytest.raises(ZipARError, match=r"and a 96x96 image with its row ends \(9312 positions\).*more than the 4096"):
        model.grid_for(Condition(prompts=["a"]), 1536)


@pytest.mark.parametrize("family", ["janus", "lumina"])
def test_a_config_claiming_a_million_layers_fails_fast(chat_folders, family, tmp_path):
    folder = tmp_path / chat_folders[family].name
    shutil.copytree(chat_folders[family], folder)
    config = json.loads((folder / "config.json").read_text())
    (config.get("language_config") or config.get("text_config") or config)["num_hidden_layers"] = 1_000_000
    (folder / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(ZipARError, match=r"the config describes 1000000 blocks 'layers.N' but the weights hold 2; "
                                         "config.json and the weights do not belong together"):
        api.load_ar_model(folder, "cpu")
    assert time.perf_counter() - start < 10


# ----------------------------------------------------------------------------- batches and out-of-memory errors

def test_a_huge_batch_is_refused_with_the_largest_that_fits(files):
    model = api.load_ar_model(files / "c2i_T_64.pt", "cpu")
    start = time.perf_counter()
    with pytest.raises(ZipARError) as err:
        generate(model, api.class_condition([1, 2]), (4, 4), 2, SamplingOptions(cfg=4.0), batch=10**12)
    message = str(err.value)
    assert "2000000000000 image(s) of 4x4 tokens need about" in message and "GB is free on cpu" in message
    fit = int(message.split("lower the batch size to at most ")[1].rstrip("."))
    assert fit >= 1 and time.perf_counter() - start < 2  # nothing was allocated
    assert generate(model, api.class_condition([1]), (4, 4), 2, GREEDY, batch=3).tokens.shape == (3, 4, 4)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 99999999999 bytes.")])
def test_allocator_errors_become_one_clear_line(files, monkeypatch, error):
    model = api.load_ar_model(files / "c2i_T_64.pt", "cpu")

    def out_of_memory(*a, **k):
        raise error

    monkeypatch.setattr(LlamaGenModel, "start", out_of_memory)
    with pytest.raises(ZipARError, match=r"out of memory while generating 2 image\(s\) of 4x4 tokens .*; lower the "
                                         "batch size or the image size"):
        generate(model, api.class_condition([1]), (4, 4), 2, GREEDY, batch=2)
    vq = api.load_vq(files / "vq_ds16_c2i.pt", "cpu")
    monkeypatch.setattr(type(vq), "decode_codes", out_of_memory)
    with pytest.raises(ZipARError, match="out of memory while decoding the token grids .*; decode fewer images"):
        api.decode_tokens(vq, torch.zeros(1, 4, 4, dtype=torch.long))


def test_memory_guard_leaves_other_errors_alone():
    with pytest.raises(KeyError):
        with memory_guard("x", "y"):
            raise KeyError("not memory")
    with pytest.raises(RuntimeError, match="size mismatch"):
        with memory_guard("x", "y"):
            raise RuntimeError("size mismatch")
