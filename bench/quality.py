"""Quality benchmark: what each ZipAR window costs in image quality, on the shipped demo model.

    python -m bench.quality --json quality.json --plot quality.png [--samples-per-class 100] \
        [--windows 16,12,8,6,4,2,1] [--cfg 2.0] [--device cpu] [--threads 2] \
        [--weight-dtypes default,fp8_e4m3fn] [--kv-dtypes default,int8]

For every window (16 = the grid width = next-token prediction), the same number of samples
per class is generated with the same seeds, decoded by the VQ, and scored by three
measures that know nothing of the GPT or the VQ except (c):

(a) accuracy: an MLP classifier (scikit-learn) trained on the real training digits, rendered
    exactly as for training the demo model and pooled to 16x16, says which digit it sees;
(b) FD: Frechet distance between that classifier's hidden features of the samples and of
    the held-out real digits (3 augmented renders each), as FID does with Inception features;
(c) NLL per token of the sampled tokens under the full-context model: one uncached causal
    forward of the GPT over [class] + tokens, conditional, no guidance. A token chosen
    without its full context (small windows) looks less likely to the model that sees it all.

Reference rows: real digits (the judge's accuracy on held-out digits, the FD of training
digits against held-out ones, the NLL of held-out digits' tokens), VQ reconstructions of the
held-out digits (what the tokenizer keeps), and NTP with a second set of seeds (sampling noise). Every row carries standard errors (binomial for accuracy,
bootstrap for FD, per-image spread for NLL). A window is "within noise" of NTP when each
measure differs from NTP's by at most twice the combined standard error.

Needs scikit-learn (benchmark only; the engine does not). Writes JSON and a PNG
drawn with PIL (accuracy, FD and NLL against forward passes).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zipar import api
from zipar.io import outputs
from zipar.core.loop import expected_passes
from zipar.demo import DEFAULT_CFG, demo_files, ink_of, load_digit_split, render_digits
from zipar.core.sampling import SamplingOptions

FEATURE_SIZE = 16  # classifier input: ink pooled to 16x16


# -- the independent judge ------------------------------------------------------------------------

def features(images: torch.Tensor) -> np.ndarray:
    """RGB images [N, 3, 64, 64] -> ink pooled to 16x16, flattened [N, 256]."""
    ink = ink_of(images)[:, None]
    return F.adaptive_avg_pool2d(ink, FEATURE_SIZE).flatten(1).numpy().astype(np.float64)


class Judge:
    """MLP on real training digits; hidden-layer activations are the FD features."""

    def __init__(self, train_digits, train_labels, seed: int = 0, copies: int = 5):
        from sklearn.neural_network import MLPClassifier

        gen = torch.Generator().manual_seed(seed + 1000)
        x = np.concatenate([features(render_digits(train_digits, generator=gen)) for _ in range(copies)])
        y = np.tile(train_labels, copies)
        self.mlp = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=200, random_state=seed,
                                 early_stopping=False).fit(x, y)
        self.train_accuracy = float(self.mlp.score(x, y))

    def predict(self, feats: np.ndarray) -> np.ndarray:
        return self.mlp.predict(feats)

    def hidden(self, feats: np.ndarray) -> np.ndarray:
        return np.maximum(feats @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0.0)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(a: np.ndarray, b_stats: tuple[np.ndarray, np.ndarray]) -> float:
    """|mu_a - mu_b|^2 + tr(A + B - 2 (A B)^1/2), with tr (A B)^1/2 from the PSD matrix A^1/2 B A^1/2."""
    mu_b, cov_b, sqrt_b = b_stats
    mu_a, cov_a = a.mean(0), np.cov(a, rowvar=False)
    cross = np.linalg.eigvalsh(sqrt_b @ cov_a @ sqrt_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def stats_of(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cov = np.cov(x, rowvar=False)
    return x.mean(0), cov, _sqrt_psd(cov)


def score(judge: Judge, images: torch.Tensor, labels: np.ndarray, ref_stats, boot: int, rng) -> dict:
    feats = features(images)
    correct = judge.predict(feats) == labels
    hid = judge.hidden(feats)
    fd = frechet(hid, ref_stats)
    fds = [frechet(hid[rng.integers(0, len(hid), len(hid))], ref_stats) for _ in range(boot)]
    acc = float(correct.mean())
    return {"accuracy": round(acc, 4), "accuracy_se": round(float(np.sqrt(acc * (1 - acc) / len(correct))), 4),
            "fd": round(fd, 3), "fd_se": round(float(np.std(fds)), 3) if boot else None}


# -- the model under test -------------------------------------------------------------------------

@torch.no_grad()
def token_nll(model, tokens: torch.Tensor, classes: torch.Tensor, grid, chunk: int = 100) -> np.ndarray:
    """Per-image mean NLL of [N, H*W] tokens under the full-context model (uncached, causal, no CFG)."""
    gpt, dev = model.gpt, model.device
    n = gpt.config.prefix_len + grid[0] * grid[1] - 1
    rope = gpt.rope_table(*grid)[:n].to(dev)
    mask = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
    out = []
    for i in range(0, len(tokens), chunk):
        t, c = tokens[i:i + chunk].to(dev), classes[i:i + chunk].to(dev)
        h = torch.cat([gpt.class_prefix(c), gpt.tok_embeddings(t[:, :-1])], dim=1)
        logits = gpt.logits(gpt.hidden(h, rope, mask))
        nll = F.cross_entropy(logits.transpose(1, 2), t, reduction="none").mean(1)
        out.append(nll.float().cpu())
    return torch.cat(out).numpy()


def nll_entry(nll: np.ndarray) -> dict:
    return {"nll": round(float(nll.mean()), 4), "nll_se": round(float(nll.std(ddof=1) / np.sqrt(len(nll))), 4)}


@torch.no_grad()
def sample(model, vq, classes: list[int], per_class: int, grid, window: int, options, seed: int, chunk: int,
           draft_length: int = 0, branches: bool = True):
    """per_class images of every class, generated in calls of up to ``chunk`` images (all classes,
    class-major); call c uses seed + c, so every window sees the same seeds.

    ``draft_length`` > 0: speculative decoding, one image per call (a batch advances at its slowest
    image's pace, so single images give each image's own pass count); image i of class k then
    uses seed + i * len(classes) + k. Also returns the forward passes per image and the drafted
    tokens accepted per pass (0 without speculation)."""
    tokens, labels, seconds, passes, accepted = [], [], 0.0, [], []
    if draft_length:
        for i in range(per_class):
            for k in classes:
                r = api.generate(model, api.class_condition([k]), grid, window, options,
                                 seed=seed + i * len(classes) + k, speculative=True, draft_length=draft_length,
                                 draft_branches=branches)
                tokens.append(r.tokens.flatten(1))
                labels.append(k)
                seconds += r.seconds
                passes.append(r.forward_passes)
                accepted.append(r.accepted_per_pass)
        order = np.argsort(np.array(labels), kind="stable")  # class-major, as the batched calls
        tokens = torch.cat(tokens)[torch.as_tensor(order)]
        labels = list(np.array(labels)[order])
    else:
        per_call = max(1, chunk // len(classes))
        for c, start in enumerate(range(0, per_class, per_call)):
            n = min(per_call, per_class - start)
            r = api.generate(model, api.class_condition(classes), grid, window, options, seed=seed + c, batch=n)
            tokens.append(r.tokens.flatten(1))
            labels += [k for k in classes for _ in range(n)]  # class-major, as Condition.repeat orders them
            seconds += r.seconds
            passes.append(r.forward_passes)
        tokens = torch.cat(tokens)
    images = torch.cat([api.decode_tokens(vq, tokens[i:i + 200].view(-1, *grid).to(model.device)).cpu()
                        for i in range(0, len(tokens), 200)])
    return tokens, np.array(labels), images, seconds, float(np.mean(passes)), float(np.mean(accepted or [0.0]))


# -- report ---------------------------------------------------------------------------------------

def within_noise(row: dict, ntp: dict, k: float = 2.0) -> dict:
    out = {}
    for m in ("accuracy", "fd", "nll"):
        se = np.hypot(row[f"{m}_se"] or 0.0, ntp[f"{m}_se"] or 0.0)
        out[m] = bool(abs(row[m] - ntp[m]) <= k * se)
    return out


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    files = demo_files()
    ar_path, vq_path = args.ar_model or files["ar_model"], args.vq_model or files["vq_model"]
    device = api.resolve_device(args.device)
    vq = api.load_vq(vq_path, device)
    model = api.load_ar_model(ar_path, device, args.precision)
    api.check_pair(model, vq)
    grid = api.grid_for(api.default_image_size(ar_path) or 64, vq)
    windows = [int(w) for w in args.windows.split(",")]
    classes = list(range(model.config.num_classes))
    options = SamplingOptions(cfg=args.cfg, temperature=args.temperature, top_k=args.top_k)
    rng = np.random.default_rng(0)

    train_x, train_y, test_x, test_y = load_digit_split()
    judge = Judge(train_x, train_y)
    gen = torch.Generator().manual_seed(2000)
    ref_images = torch.cat([render_digits(test_x, generator=gen) for _ in range(3)])
    ref_labels = np.tile(test_y, 3)
    ref_stats = stats_of(judge.hidden(features(ref_images)))
    print(f"judge: MLP on {len(train_y)} training digits x 5 renders, train accuracy {judge.train_accuracy:.3f}; "
          f"reference: {len(test_y)} held-out digits x 3 renders", file=sys.stderr)

    rows = []
    # Reference: real digits. Accuracy: the judge on the held-out renders (digits it never saw).
    # FD: a sample of training digits (as many as a generated set) against the held-out reference.
    # NLL: the held-out digits' own tokens (one render each) under the GPT.
    n_gen = args.samples_per_class * len(classes)
    pick = rng.choice(len(train_y), size=min(n_gen, len(train_y)), replace=False)
    real_train = render_digits(train_x[pick], generator=torch.Generator().manual_seed(3000))
    real = {"name": "real digits (train vs held-out)", "kind": "reference", "images": len(pick)}
    real |= score(judge, real_train, train_y[pick], ref_stats, args.bootstrap, rng)
    held_acc = score(judge, ref_images, ref_labels, ref_stats, 0, rng)
    real["accuracy"], real["accuracy_se"] = held_acc["accuracy"], held_acc["accuracy_se"]
    held_images = render_digits(test_x, generator=torch.Generator().manual_seed(4000))
    with torch.no_grad():
        held_codes = vq.encode_images(held_images.to(device))
        recon = vq.decode_codes(held_codes).cpu()
    held_nll = token_nll(model, held_codes.flatten(1).cpu(), torch.as_tensor(test_y), grid)
    real |= nll_entry(held_nll)
    rows.append(real)
    # Reference: VQ reconstructions of held-out renders (same digits as the FD reference, so FD ~ 0
    # means the tokenizer keeps what the judge looks at).
    vqrow = {"name": "VQ reconstructions (held-out)", "kind": "reference", "images": len(test_y)}
    vqrow |= score(judge, recon, test_y, ref_stats, args.bootstrap, rng)
    vqrow |= nll_entry(held_nll)
    vqrow["vq_mse"] = round(float((recon - held_images).pow(2).mean()), 6)
    rows.append(vqrow)
    print(json.dumps(real), file=sys.stderr)
    print(json.dumps(vqrow), file=sys.stderr)

    runs = [(w, args.seed, "", model, "default", "default", 0) for w in windows]
    if args.noise_seed is not None:
        runs.insert(1 if windows and windows[0] >= grid[1] else 0,
                    (grid[1], args.noise_seed, " (seed set B)", model, "default", "default", 0))
    for wd in [w for w in args.weight_dtypes.split(",") if w and w != "default"]:
        # the same seeds with the decoder layers' weights kept in ``wd``; NLL is still judged by the default model
        narrow = api.load_ar_model(ar_path, device, args.precision, wd)
        runs += [(w, args.seed, f" [{wd} weights]", narrow, wd, "default", 0) for w in windows]
    for kv in [k for k in args.kv_dtypes.split(",") if k and k != "default"]:
        # the same seeds with the key/value cache kept in ``kv``; NLL is still judged by the default model
        cached = api.load_ar_model(ar_path, device, args.precision, kv_dtype=kv)
        runs += [(w, args.seed, f" [{kv} cache]", cached, "default", kv, 0) for w in windows]
    spec_windows = [int(w) for w in args.speculative.split(",") if w]
    lengths = [int(d) for d in str(args.draft_length).split(",") if d]
    runs += [(w, args.seed, f" + speculative (draft {d})" if len(lengths) > 1 else " + speculative", model, "default",
              "default", d) for w in spec_windows for d in lengths]
    for window, seed, tag, gen_model, wd, kv, draft_length in runs:
        tokens, labels, images, seconds, passes, accepted = sample(
            gen_model, vq, classes, args.samples_per_class, grid, window, options, seed, args.chunk, draft_length,
            not args.no_branches)
        ntp = window >= grid[1]
        row = {"name": ("NTP" if ntp else f"window {window}") + tag, "kind": "generated", "window": window, "seed": seed,
               "weight_dtype": wd, "kv_dtype": kv, "forward_passes": round(passes, 1), "images": len(labels),
               "seconds": round(seconds, 2)}
        if draft_length:
            row |= {"speculative": True, "draft_length": draft_length, "draft_branches": not args.no_branches,
                    "planned_passes": expected_passes(grid, window),
                    "accepted_per_pass": round(accepted, 3), "tokens_per_pass": round(grid[0] * grid[1] / passes, 3),
                    "passes_vs_ntp": round(grid[0] * grid[1] / passes, 3)}
        row |= score(judge, images, labels, ref_stats, args.bootstrap, rng)
        row |= nll_entry(token_nll(model, tokens, torch.as_tensor(labels), grid))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    gen_rows = [r for r in rows if r["kind"] == "generated"]
    ntp_row = next((r for r in gen_rows if r["window"] >= grid[1] and r["seed"] == args.seed
                    and r.get("weight_dtype", "default") == "default" and r.get("kv_dtype", "default") == "default"),
                   None)
    smallest = None
    if ntp_row is not None:
        for r in gen_rows:
            r["within_noise_of_ntp"] = within_noise(r, ntp_row)
        own = [r for r in gen_rows if r["seed"] == args.seed and r.get("weight_dtype", "default") == "default"
               and r.get("kv_dtype", "default") == "default" and not r.get("speculative")]
        ok = sorted(r["window"] for r in own if all(r["within_noise_of_ntp"].values()))
        # smallest window such that it and every larger window tested stay within noise
        tested = sorted({r["window"] for r in own})
        for w in reversed(tested):
            if w in ok:
                smallest = w
            else:
                break
    return {
        "benchmark": "bench.quality",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ar_model": str(ar_path), "vq_model": str(vq_path), "grid": list(grid), "device": str(device),
        "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
        "sampling": {"cfg": args.cfg, "temperature": args.temperature, "top_k": args.top_k, "seed": args.seed,
                     "noise_seed": args.noise_seed, "samples_per_class": args.samples_per_class},
        "judge": {"model": "sklearn MLPClassifier(128,) on 16x16 ink", "train_accuracy": round(judge.train_accuracy, 4),
                  "heldout_accuracy": real["accuracy"], "fd_features": "hidden layer (128, ReLU)",
                  "fd_reference": f"{len(test_y)} held-out digits x 3 augmented renders"},
        "rows": rows,
        "smallest_window_within_noise": smallest,
        "noise_rule": "|metric - NTP| <= 2 * sqrt(se^2 + se_NTP^2) for accuracy, FD and NLL; the window and all larger ones",
        "seconds_total": round(time.perf_counter() - t0, 1),
    }


def plot(report: dict, path: str) -> None:
    """Three panels (accuracy, FD, NLL) against forward passes, drawn with PIL."""
    from PIL import Image, ImageDraw

    gen = sorted((r for r in report["rows"] if r["kind"] == "generated" and r["seed"] == report["sampling"]["seed"]
                  and not r.get("speculative")), key=lambda r: r["forward_passes"])
    spec = [r for r in report["rows"] if r.get("speculative")]
    extra = [r for r in report["rows"] if r["kind"] == "generated" and r["seed"] != report["sampling"]["seed"]]
    refs = [r for r in report["rows"] if r["kind"] == "reference"]
    panels = [("accuracy", "class accuracy (higher is better)"), ("fd", "Frechet distance (lower is better)"),
              ("nll", "NLL per token, full context (lower = more likely)")]
    pw, ph, m = 360, 260, 48
    img = Image.new("RGB", (pw * 3, ph + 60), "white")
    d = ImageDraw.Draw(img)
    colours = {"generated": (30, 90, 200), "seed set B": (120, 120, 120)}
    ref_colours = [(200, 60, 40), (40, 150, 70)]
    title = (f"ZipAR window vs quality, demo digits model, cfg {report['sampling']['cfg']}, "
             f"{report['sampling']['samples_per_class']} samples/class")
    d.text((10, 6), title, fill="black")
    xs = [r["forward_passes"] for r in gen]
    x0, x1 = 0, max(xs) * 1.05 if xs else 1
    for i, (key, label) in enumerate(panels):
        ox = i * pw
        vals = [r[key] for r in gen + extra + refs + spec] + [r[key] + 2 * (r[f"{key}_se"] or 0) for r in gen] + \
               [r[key] - 2 * (r[f"{key}_se"] or 0) for r in gen]
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.1 or 0.05
        lo, hi = lo - pad, hi + pad
        left, top, right, bottom = ox + m, 40, ox + pw - 12, ph + 10

        def P(x, y):
            return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top))

        d.rectangle([left, top, right, bottom], outline=(160, 160, 160))
        d.text((left, top - 14), label, fill="black")
        for t in range(5):
            yv = lo + (hi - lo) * t / 4
            d.text((ox + 4, P(0, yv)[1] - 6), f"{yv:.3g}", fill=(90, 90, 90))
        for xv in sorted(set(xs)):
            px = P(xv, lo)[0]
            d.line([px, bottom, px, bottom + 4], fill=(90, 90, 90))
            d.text((px - 8, bottom + 6), str(xv), fill=(90, 90, 90))
        for j, r in enumerate(refs):
            y = P(0, r[key])[1]
            for xx in range(int(left), int(right), 8):
                d.line([xx, y, xx + 4, y], fill=ref_colours[j % 2])
            d.text((left + 4 + 150 * j, bottom - 14 - 12 * j), r["name"][:24], fill=ref_colours[j % 2])
        pts = [P(r["forward_passes"], r[key]) for r in gen]
        if len(pts) > 1:
            d.line(pts, fill=colours["generated"], width=2)
        for r, (px, py) in zip(gen, pts):
            se = r[f"{key}_se"] or 0
            d.line([px, P(0, r[key] - 2 * se)[1], px, P(0, r[key] + 2 * se)[1]], fill=colours["generated"])
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colours["generated"])
            if key == "accuracy":
                d.text((px + 4, py + 4), "NTP" if r["window"] >= report["grid"][1] else f"w{r['window']}", fill=colours["generated"])
        for r in extra:
            px, py = P(r["forward_passes"], r[key])
            d.rectangle([px - 3, py - 3, px + 3, py + 3], outline=colours["seed set B"])
        for r in spec:
            px, py = P(r["forward_passes"], r[key])
            d.polygon([(px, py - 5), (px - 5, py + 4), (px + 5, py + 4)], fill=(200, 120, 0))
            if key == "accuracy":
                d.text((px + 4, py - 14), ("NTP" if r["window"] >= report["grid"][1] else f"w{r['window']}") + "+spec",
                       fill=(200, 120, 0))
    d.text((10, ph + 40), "x: forward passes per image (16x16 grid: NTP 256; window w: 32 + 14w). Bars: +-2 SE. "
           "Dashed: references. Grey square: NTP, second seed set. Orange triangle: + speculative (mean passes).",
           fill=(60, 60, 60))
    outputs.write_image(path, img)


def table(report: dict) -> str:
    lines = ["| row | passes | drafts kept / pass | accuracy | FD | NLL/token | s | within noise of NTP |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        wn = r.get("within_noise_of_ntp")
        flag = "" if wn is None else ("yes" if all(wn.values()) else "no (" + ", ".join(k for k, v in wn.items() if not v) + ")")
        fd_se = f" ± {r['fd_se']:.2f}" if r.get("fd_se") else ""
        kept = f"{r['accepted_per_pass']:.2f}" if r.get("speculative") else ""
        lines.append(f"| {r['name']} | {r.get('forward_passes', '')} | {kept} | {r['accuracy']:.3f} ± {r['accuracy_se']:.3f} | "
                     f"{r['fd']:.2f}{fd_se} | {r['nll']:.3f} ± {r['nll_se']:.3f} | {r.get('seconds', '')} | {flag} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, help="write the report here")
    p.add_argument("--plot", help="write a PNG plot here")
    p.add_argument("--markdown", help="write a markdown table here")
    p.add_argument("--samples-per-class", type=int, default=100)
    p.add_argument("--windows", default="16,12,8,6,4,2,1")
    p.add_argument("--cfg", type=float, default=DEFAULT_CFG)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-seed", type=int, default=1, help="second seed set for NTP (sampling noise); -1: skip")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples for the FD standard error")
    p.add_argument("--chunk", type=int, default=100, help="images per generate call")
    p.add_argument("--weight-dtypes", default="default",
                   help="also sample every window with the decoder weights kept in these dtypes (e.g. "
                        "default,fp8_e4m3fn,fp8_e5m2); the NLL judge stays the default model")
    p.add_argument("--kv-dtypes", default="default",
                   help="also sample every window with the key/value cache kept in these formats (e.g. default,int8); "
                        "the NLL judge stays the default model")
    p.add_argument("--speculative", default="",
                   help="windows to also run with speculative decoding (e.g. 16,12,8), one image per call")
    p.add_argument("--draft-length", default="16",
                   help="--speculative: cells drafted ahead per row, or a list (16,32,64: one row each)")
    p.add_argument("--no-branches", action="store_true", help="--speculative without draft branches (comparison)")
    p.add_argument("--ar-model", help="default: the shipped demo GPT")
    p.add_argument("--vq-model", help="default: the shipped demo VQ")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.noise_seed is not None and args.noise_seed < 0:
        args.noise_seed = None
    report = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    outputs.write_json(args.json, report)
    md = table(report)
    if args.markdown:
        outputs.write_text(args.markdown, md + "\n")
    if args.plot:
        plot(report, args.plot)
    print(md)
    print(f"smallest window within noise of NTP: {report['smallest_window_within_noise']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
