"""The benchmark harness runs and reports what README's table needs (no timing asserted)."""
import json

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
    assert "| ZipAR | 8 | 144 |" in (tmp_path / "t.md").read_text()
