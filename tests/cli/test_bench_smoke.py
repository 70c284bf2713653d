"""The benchmark harness runs and reports what the tables in docs/benchmarks.md need (no timing asserted)."""
import json
import sys

from bench.decode import main, published_config


def test_published_sizes_match_llamagen():
    # LlamaGen-L: 24 layers, width 1024, 16 heads, SwiGLU width 2816, ~343M parameters
    cfg = published_config("L")
    assert (cfg.n_layer, cfg.dim, cfg.n_head, cfg.ffn_hidden) == (24, 1024, 16, 2816)
    per_layer = 4 * cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_hidden + 2 * cfg.dim
    params = cfg.n_layer * per_layer + 2 * cfg.vocab_size * cfg.dim + 1001 * cfg.dim + cfg.dim
    assert 340e6 < params < 346e6


def test_harness_reports_passes_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--model", "tiny", "--grid", "16", "--windows", "8,4", "--repeats", "1", "--no-vq",
                 "--device", "cpu", "--precision", "fp32", "--json", str(out), "--markdown", str(tmp_path / "t.md")]) == 0
    report = json.loads(out.read_text())
    rows = {r["window"]: r for r in report["results"]}
    assert [rows[w]["forward_passes"] for w in (16, 8, 4)] == [256, 144, 88]
    assert rows[16]["mode"] == "NTP" and rows[8]["mode"] == "ZipAR"
    assert abs(rows[8]["pass_ratio"] - 144 / 256) < 1e-9
    assert rows[8]["latency_over_pass_ratio"] == rows[8]["latency_ratio"] / rows[8]["pass_ratio"]
    assert report["plain_kv_loop_ntp"]["median_s"] > 0 and {"device", "torch", "date"} <= set(report)
    assert "| ZipAR | off | 8 | 144 |" in (tmp_path / "t.md").read_text()


def test_harness_times_speculative_rows_beside_the_plain_ones(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--model", "tiny", "--grid", "16", "--windows", "8", "--repeats", "2", "--no-vq", "--speculative",
                 "--draft-length", "4", "--device", "cpu", "--precision", "fp32", "--json", str(out)]) == 0
    rows = {(r["window"], r["mode"]): r for r in json.loads(out.read_text())["results"]}
    assert sorted(rows) == [(8, "ZipAR"), (8, "ZipAR+spec"), (16, "NTP"), (16, "NTP+spec")]
    for (window, mode), r in rows.items():
        if mode.endswith("+spec"):
            assert r["speculative"] and r["draft_length"] == 4 and r["planned_passes"] == rows[(window, mode[:-5])][
                "forward_passes"]
            assert 1 <= r["forward_passes"] <= r["planned_passes"] and r["accepted_per_pass"] >= 0
            assert r["pass_ratio"] == r["forward_passes"] / rows[(16, "NTP")]["forward_passes"]


# -- Janus-Pro and Emu3-Gen (bench/chat_models.py) -------------------------------------------------

import pytest  # noqa: E402
import torch  # noqa: E402

from bench import chat_models  # noqa: E402
from zipar.core.loop import expected_passes  # noqa: E402


@pytest.mark.parametrize("name, size, grid, vq", [("janus-tiny", 64, (4, 4), "--no-vq"), ("emu3-tiny", 48, (6, 6), None),
                                                  ("lumina-tiny", 64, (4, 4), None),
                                                  ("lumina2-tiny", 64, (8, 8), "--no-vq"),
                                                  ("simplear-tiny", 64, (4, 4), "--no-vq")])
def test_chat_families_run_through_the_harness(tmp_path, name, size, grid, vq):
    out, md = tmp_path / "bench.json", tmp_path / "t.md"
    argv = ["--model", name, "--size", str(size), "--windows", "2", "--repeats", "1", "--device", "cpu",
            "--precision", "fp32", "--json", str(out), "--markdown", str(md)]
    assert main(argv + ([vq] if vq else [])) == 0
    report = json.loads(out.read_text())
    spec = chat_models.SPECS[name]
    assert report["grid"] == list(grid) and report["image_size"] == size
    assert (report["cfg"], report["top_k"]) == (spec.cfg, spec.top_k)  # the official recipe by default
    rows = {r["window"]: r for r in report["results"]}
    assert sorted(rows) == [2, grid[1]]
    assert report["row0_first"] == (spec.family not in ("lumina-mgpt", "lumina-mgpt-2"))  # each family's own rule
    for w, r in rows.items():
        assert r["forward_passes"] == expected_passes(grid, w, report["row0_first"])
        assert r["mode"] == ("NTP" if w == grid[1] else "ZipAR")
        assert r["ms_per_pass_over_floor"] == pytest.approx(r["ms_per_pass"] / report["floor_ms_per_pass"])
    assert rows[2]["forward_passes"] < rows[grid[1]]["forward_passes"]
    # fp32: 4 bytes per parameter; per pass = all but the embedding tables (text, and Janus's code embedding)
    counts = chat_models.param_counts(spec)
    tables = spec.lm.vocab * spec.lm.hidden + (spec.codes * spec.code_dim if spec.family == "janus-pro" else 0)
    assert report["weight_bytes"] == 4 * counts["built"]
    assert report["weight_bytes_per_pass"] == 4 * (counts["built"] - tables)
    assert report["floor_ms_per_pass"] == pytest.approx(1000 * report["weight_bytes_per_pass"] / 3.0e12)
    assert report["plain_kv_loop_ntp_skipped"] and "plain_kv_loop_ntp" not in report
    cond_len, uncond_len = report["prompt_tokens"]
    expected_uncond = {"janus-pro": cond_len, "lumina-mgpt": 3, "lumina-mgpt-2": 3}  # Lumina: begin-of-image + 2 sizes
    assert cond_len >= 25 and uncond_len == expected_uncond.get(spec.family, uncond_len)
    if spec.family == "emu3":
        assert uncond_len > cond_len and "vq_decode_skipped" in report  # Emu3's own VQ is not built here
    if spec.family == "lumina-mgpt":
        assert report["vq_decode"]["network"] == "Chameleon VQGAN" and report["vq_decode"]["median_s"] > 0
    table = md.read_text()
    assert f"| ZipAR | off | 2 | {rows[2]['forward_passes']} |" in table and "floor at 3.0 TB/s" in table


def test_chat_arguments_are_checked():
    with pytest.raises(SystemExit):
        main(["--model", "janus-tiny", "--grid", "16"])
    with pytest.raises(SystemExit):
        main(["--model", "janus-tiny", "--size", "72"])  # Janus: a multiple of 16 pixels
    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--size", "256"])


def layer_params(hidden, heads, kv_heads, intermediate):
    head = hidden // heads
    return 2 * hidden * hidden + 2 * hidden * kv_heads * head + 3 * hidden * intermediate + 2 * hidden


def test_published_chat_configs_have_the_published_sizes():
    # computed on the meta device: nothing is allocated
    j1, j7, emu = (chat_models.SPECS[n] for n in ("janus-pro-1b", "janus-pro-7b", "emu3-gen"))
    assert (j1.lm.hidden, j1.lm.layers, j1.lm.heads, j1.lm.kv_heads, j1.lm.intermediate, j1.lm.vocab) == (2048, 24, 16, 16, 5632, 102400)
    assert (j7.lm.hidden, j7.lm.layers, j7.lm.heads, j7.lm.kv_heads, j7.lm.intermediate, j7.lm.vocab) == (4096, 30, 32, 32, 11008, 102400)
    assert (emu.lm.hidden, emu.lm.layers, emu.lm.heads, emu.lm.kv_heads, emu.lm.intermediate, emu.lm.vocab) == (4096, 32, 32, 8, 14336, 184622)
    assert (j1.lm.rms_eps, j1.lm.rope_theta, emu.lm.rms_eps, emu.lm.rope_theta) == (1e-6, 1e4, 1e-5, 1e6)
    assert (j1.codes, j1.head_dim, j7.head_dim, emu.codes, emu.cfg, emu.top_k, j1.cfg) == (16384, 2048, 4096, 32768, 3.0, 2048, 5.0)

    # Janus-Pro-1B language model with input and output embeddings (DeepSeek-LLM 1.5B layout):
    # 2 * 102400 * 2048 + 24 * (4 * 2048^2 + 3 * 2048 * 5632 + 2 * 2048) + 2048 = 1,652,656,128
    c = chat_models.param_counts(j1)
    assert c["lm_with_text_head"] == 2 * 102400 * 2048 + 24 * layer_params(2048, 16, 16, 5632) + 2048 == 1_652_656_128
    assert abs(c["lm_with_text_head"] - 1.65e9) / 1.65e9 < 0.02
    # generation pieces: code embedding 16384x8, aligner 8->2048->2048, head 2048->2048->16384 (with biases)
    assert c["generation"] == 16384 * 8 + (8 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 16384 + 16384)

    c = chat_models.param_counts(j7)  # DeepSeek-LLM 7B: ~6.9e9
    assert c["lm_with_text_head"] == 2 * 102400 * 4096 + 30 * layer_params(4096, 32, 32, 11008) + 4096 == 6_910_365_696
    assert abs(c["lm_with_text_head"] - 6.91e9) / 6.91e9 < 0.02

    c = chat_models.param_counts(emu)  # Emu3 "8B" with grouped-query attention (8 kv heads)
    assert c["lm_with_text_head"] == 2 * 184622 * 4096 + 32 * layer_params(4096, 32, 8, 14336) + 4096 == 8_492_011_520
    assert abs(c["lm_with_text_head"] - 8.49e9) / 8.49e9 < 0.02
    assert c["generation"] == 32768 * 4096  # only the visual rows of the output matrix are built

    # bf16 weights read per pass (no embedding tables) and the floor at 3.0 TB/s
    total, per_pass = chat_models.weight_bytes(chat_models.meta_net(emu, torch.bfloat16))
    assert per_pass == 2 * (32 * layer_params(4096, 32, 8, 14336) + 4096 + 32768 * 4096) == 14_227_611_648
    assert total == per_pass + 2 * 184622 * 4096  # ~15.7 GB materialised, fits a 24 GB GPU with its KV cache
    assert 1000 * per_pass / chat_models.BANDWIDTH == pytest.approx(4.74, abs=0.01)
    _, per_pass = chat_models.weight_bytes(chat_models.meta_net(j1, torch.bfloat16))
    assert 1000 * per_pass / chat_models.BANDWIDTH == pytest.approx(0.850, abs=0.001)


def test_published_lumina_config_has_the_chameleon_7b_size():
    lum = chat_models.SPECS["lumina-mgpt-7b"]
    c = lum.lm
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.intermediate, c.vocab, c.qk_norm) == (4096, 32, 32, 32, 11008, 65536, True)
    assert (lum.codes, lum.image_size, lum.cfg, lum.top_k) == (8192, 768, 4.0, 2000)
    layer = layer_params(4096, 32, 32, 11008) + 4 * 4096  # + per-head query/key norm gains and biases
    counts = chat_models.param_counts(lum)  # Chameleon-7B: ~7.0e9 with both embedding tables
    assert counts["lm_with_text_head"] == 2 * 65536 * 4096 + 32 * layer + 4096 == 7_013_666_816
    assert counts["generation"] == 8192 * 4096  # only the image rows of lm_head
    total, per_pass = chat_models.weight_bytes(chat_models.meta_net(lum, torch.bfloat16))
    assert per_pass == 2 * (32 * layer + 4096 + 8192 * 4096) == 13_020_700_672  # the "14 GB" less the tables
    assert 1000 * per_pass / chat_models.BANDWIDTH == pytest.approx(4.34, abs=0.01)


def test_published_simplear_configs_match_the_release_sizes():
    """SimpleAR-1.5B: hidden 1536, 28 layers, 2 key/value heads of 128, vocabulary 215,672 (the issue's
    figures); 0.5B follows Qwen2.5-0.5B. Tied heads: one embedding table, the image rows scored."""
    big, small = chat_models.SPECS["simplear-1.5b"], chat_models.SPECS["simplear-0.5b"]
    assert (big.lm.hidden, big.lm.layers, big.lm.kv_heads, big.lm.dim_per_head, big.lm.vocab) == (1536, 28, 2, 128, 215672)
    assert (small.lm.hidden, small.lm.layers, small.lm.heads, small.lm.kv_heads) == (896, 24, 14, 2)
    assert big.code_base + big.codes == big.lm.vocab and big.lm.qkv_bias and (big.cfg, big.top_k) == (6.0, 64000)
    counts = chat_models.param_counts(big)
    assert 1.5e9 < counts["lm"] < 2.0e9 and counts["generation"] == 64000 * 1536


def test_published_lumina2_config_is_15_8_gb_in_bf16():
    """Lumina-mGPT 2.0: the same 7B Chameleon layers, a vocabulary holding the image ids 155000..171383
    and the 10240 trained positions; with both embedding tables 7.9e9 parameters (15.8 GB in bf16)."""
    spec = chat_models.SPECS["lumina-mgpt-2"]
    c = spec.lm
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.intermediate, c.qk_norm, c.max_positions) == \
        (4096, 32, 32, 32, 11008, True, 10240)
    assert c.vocab >= 155000 + 16384 and (spec.codes, spec.code_base, spec.image_size, spec.cfg, spec.top_k) == \
        (16384, 155000, 768, 4.0, 4096)
    layer = layer_params(4096, 32, 32, 11008) + 4 * 4096
    full = chat_models.param_counts(spec)["lm_with_text_head"]
    assert full == 2 * c.vocab * 4096 + 32 * layer + 4096 and 2 * full / 1e9 == pytest.approx(15.8, abs=0.1)


# -- the compiled step in the harness, and the GPU suite on tiny sizes ------------------------------

@pytest.fixture
def traced_not_built(monkeypatch):
    """torch.compile with dynamo's eager backend: the compiled path end to end without inductor's C++ build."""
    from zipar.core import static_step

    monkeypatch.setattr(static_step, "_compiler", lambda backend, device: (
        lambda fn: torch.compile(fn, fullgraph=True, dynamic=False, backend="eager")))


def test_decode_compile_both_reports_first_call_and_graphs(tmp_path, traced_not_built):
    out = tmp_path / "c.json"
    assert main(["--model", "tiny", "--grid", "16", "--windows", "8", "--repeats", "1", "--no-vq", "--compile", "both",
                 "--device", "cpu", "--precision", "fp32", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["compile"], r["window"]): r for r in report["results"]}
    assert set(rows) == {("off", 16), ("off", 8), ("on", 16), ("on", 8)}
    assert rows[("on", 16)]["graphs_built"] >= 1 and rows[("off", 16)]["graphs_built"] == 0
    assert all(r["graphs_built_after_first_call"] == 0 for r in report["results"])  # kept for the process
    assert rows[("on", 8)]["pass_ratio"] == rows[("off", 8)]["pass_ratio"] == 144 / 256
    assert rows[("on", 8)]["speedup_over_eager"] > 0 and rows[("on", 8)]["ms_per_pass_over_floor"] > 0
    assert report["floor_ms_per_pass"] > 0 and report["compile"] == "both"


@pytest.fixture(scope="module")
def fake_comfyui(tmp_path_factory):
    from helpers.fake_comfyui_tree import write_fake_comfyui

    return write_fake_comfyui(tmp_path_factory.mktemp("ComfyUI"))


@pytest.mark.slow
def test_gpu_suite_runs_every_entry_on_tiny_sizes(tmp_path, fake_comfyui):
    """The whole prepared run, each entry in its own process, with dynamo's eager backend standing in
    for inductor (the compiled path end to end without its C++ build)."""
    from bench import gpu_suite

    out, md = tmp_path / "suite.json", tmp_path / "suite.md"
    assert gpu_suite.main(["--smoke", "--device", "cpu", "--precision", "fp32", "--compile-backend", "eager",
                           "--comfyui", str(fake_comfyui), "--json", str(out), "--markdown", str(md)]) == 0
    report = json.loads(out.read_text())
    assert report["smoke"] is True and list(report["entries"]) == [e.name for e in gpu_suite.ENTRIES]
    for name, entry in report["entries"].items():
        assert "error" not in entry and "skipped" not in entry, (name, entry)
        if name == "in-comfyui":
            continue
        assert any(r["compile"] == "on" for r in entry["results"]) and not entry.get("partial")
        assert all(r["peak_memory_mb"] > 0 for r in entry["results"])
    rows = report["entries"]["llamagen-l-24"]["results"]
    assert {r["compile"] for r in rows} == {"off", "on"}  # eager and compiled side by side
    spec = [(r["window"], r["compile"]) for r in rows if r.get("speculative")]
    assert spec == [(16, "on"), (8, "on")]  # speculative NTP and ZipAR-8, compiled only
    assert all(r["over_plain_same_window"] > 0 for r in rows if r.get("speculative"))
    lumina2 = report["entries"]["lumina-mgpt-2-768"]["results"]
    assert {(r["weights"], r["kv_dtype"]) for r in lumina2} == {("default", "default"), ("fp8_e4m3fn", "int8")}
    assert all(r["mode"] == "ZipAR" for r in lumina2)  # the large grids leave NTP out
    assert [r["mode"] for r in report["entries"]["janus-pro-1b-384"]["results"]] == ["NTP", "ZipAR"]
    comfy = report["entries"]["in-comfyui"]
    assert comfy["node_tokens_equal_api"] and comfy["lowvram_streamed"] and comfy["lowvram_tokens_equal_eager_api"]
    assert not comfy["node_streamed"] and comfy["loaded_after_unload"] == 0 and comfy["image_shape"] == [1, 384, 384, 3]
    # compiled, and ComfyUI re-requesting the loaded model on every run does not rebuild the steps
    assert comfy["node_compiled"] and comfy["node_steps_built"][0] > 0 and comfy["node_steps_rebuilt_after_first_call"] == 0
    targets = {(t["entry"], t["target"]): t for t in report["targets"]}
    assert len(targets) == len(gpu_suite.TARGETS)
    llamagen = [t for (entry, _), t in targets.items() if entry == "llamagen-l-24"]
    assert len(llamagen) == 6 and all(t["value"] is not None and t["met"] in (True, False) for t in llamagen)
    assert targets[("in-comfyui", "node tokens equal the API's")]["met"] is True
    assert targets[("in-comfyui", "no compiled step rebuilt after the first Sampler call")]["met"] is True
    # the tiny chat grids have no window 8 or 16, and the CPU has no card memory: not measured
    assert all(t["met"] is None for (entry, _), t in targets.items() if entry not in ("llamagen-l-24", "in-comfyui"))
    assert "| llamagen-l-24 | NTP compiled median s | 0.35 |" in md.read_text()
    profiles = report["entries"]["llamagen-l-24"]["profiles"]
    assert [(p["window"], p["compile"]) for p in profiles] == [(16, "on"), (8, "on")]
    assert all(p["cpu_ops_per_pass"] > 0 and p["forward_passes"] > 0 for p in profiles)


def test_gpu_suite_budget_stops_starting_entries_and_keeps_what_a_stopped_one_measured(tmp_path, monkeypatch):
    from bench import gpu_suite

    out = tmp_path / "suite.json"
    # no time at all: nothing starts, every entry says why, and the report is still written
    assert gpu_suite.main(["--device", "cpu", "--budget", "0", "--json", str(out), "--comfyui", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    assert all("estimate" in e["skipped"] for e in report["entries"].values())
    assert all(t["met"] is None for t in report["targets"])
    # an entry still running when the budget is spent is stopped (its process group killed); its rows so far are kept
    def child(name, args, part):
        return [sys.executable, "-c", f"import json, time; open({str(part)!r}, 'w').write(json.dumps("
                "{'partial': True, 'results': [{'window': 8}]})); time.sleep(120)"]

    monkeypatch.setattr(gpu_suite, "child_command", child)
    assert gpu_suite.main(["--smoke", "--device", "cpu", "--budget", "3", "--only", "llamagen-l-24",
                           "--json", str(out), "--markdown", str(tmp_path / "suite.md")]) == 0
    entry = json.loads(out.read_text())["entries"]["llamagen-l-24"]
    assert entry["error"].startswith("stopped at the suite's budget") and entry["partial"] is True
    assert entry["results"] == [{"window": 8}] and entry["entry_seconds"] < 30
    assert "Error: stopped at the suite's budget" in (tmp_path / "suite.md").read_text()


def test_gpu_suite_dry_run_says_what_travels_and_what_is_missing(tmp_path, fake_comfyui, capsys, monkeypatch):
    from bench import gpu_suite

    assert gpu_suite.main(["--dry-run", "--comfyui", str(tmp_path / "nothing")]) == 1  # not ready: no tree
    assert "NOT READY" in capsys.readouterr().out
    assert gpu_suite.main(["--dry-run", "--comfyui", str(fake_comfyui)]) == 1  # a tree that would not travel
    assert "would not travel" in capsys.readouterr().out
    monkeypatch.setattr(gpu_suite, "REPO", fake_comfyui.parent)  # as if it were the checkout's .gpu/ComfyUI
    assert gpu_suite.main(["--dry-run", "--comfyui", str(fake_comfyui)]) == 0
    text = capsys.readouterr().out
    assert "ready." in text and "carry=['.gpu']" in text and "of 64 MiB" in text
    for entry in gpu_suite.ENTRIES:
        assert entry.name in text
    assert "python -m bench.decode --model L --grid 24 --windows 24,16,8,4 --compile both" in text
    assert "--ar-model zipar/assets/demo/demo_c2i_64.safetensors" in text


def test_gpu_suite_prepare_copies_the_python_parts_and_flags_imports_the_image_lacks(tmp_path, fake_comfyui):
    from bench import gpu_carry

    (fake_comfyui / "comfy" / "big_tokenizer.json").write_text("{}")  # data files do not travel
    target = tmp_path / "ComfyUI"
    assert gpu_carry.prepare(fake_comfyui, target) == 0
    assert (target / "comfy" / "model_management.py").is_file() and (target / "folder_paths.py").is_file()
    assert not (target / "comfy" / "big_tokenizer.json").exists()
    # an unconditional import the GPU image lacks is named; one inside try/except or a function is not
    (target / "comfy" / "ops.py").write_text("import not_on_the_image\ntry:\n    import optional_thing\n"
                                             "except ImportError:\n    pass\n\ndef f():\n    import lazy_thing\n")
    assert gpu_carry.missing_modules(target) == ["not_on_the_image"]
    (target / "comfy" / "ops.py").write_text("from .helpers import x\n")  # followed through the carried files
    (target / "comfy" / "helpers.py").write_text("import also_missing\nx = 1\n")
    assert gpu_carry.missing_modules(target) == ["also_missing"]
    with pytest.raises(SystemExit, match="neither a ComfyUI checkout"):
        gpu_carry.comfyui_source_files(tmp_path / "empty")


def test_decode_variants_narrow_in_place_and_refuse_widening():
    from bench.decode import parse_variants

    assert parse_variants("default,fp8_e4m3fn+int8") == [("default", "default"), ("fp8_e4m3fn", "int8")]
    with pytest.raises(SystemExit, match="widest first"):
        parse_variants("fp8_e4m3fn,default")
    with pytest.raises(SystemExit, match="WEIGHTS"):
        parse_variants("int4")


def test_memory_benchmark_measures_each_format_in_its_own_process(tmp_path):
    from bench import memory

    out = tmp_path / "m.json"
    assert memory.main(["--models", "janus-tiny", "--weights", "bf16,fp8_e4m3fn", "--json", str(out),
                        "--markdown", str(tmp_path / "m.md")]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r.get("error") for r in rows] == [None, None]
    bf16, fp8 = rows
    assert fp8["weight_bytes"] < bf16["weight_bytes"] and fp8["kv_cache_bytes"] == bf16["kv_cache_bytes"] > 0
    for r in rows:
        assert r["rss_peak_bytes"] >= r["rss_after_load_bytes"] > 0 and r["passes"] == 2
        assert r["card_estimate_bytes"] == r["weight_bytes"] + max(r["working_bytes"], r["kv_cache_bytes"])
    assert "| fp8_e4m3fn |" in (tmp_path / "m.md").read_text()


def test_speculative_forwards_benchmark_writes_its_rows(tmp_path):
    from bench import spec_forwards

    out = tmp_path / "f.json"
    assert spec_forwards.main(["8:2:off", "--per-class", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["window"], r["draft_length"], r["branches"], r["images"]) for r in rows] == [(8, 2, False, 10)]
    assert 0 < rows[0]["forwards"] <= 144  # window 8's plan has 144 passes
