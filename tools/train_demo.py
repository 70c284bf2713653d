"""Train the shipped demo model: a VQ tokenizer and a class-conditional LlamaGen GPT on digits.

    python tools/train_demo.py --seed 0 --threads 2 --out zipar/assets/demo

Data: the 1797 handwritten digits bundled with scikit-learn (UCI, CC BY 4.0), split per
class 80/20 with a fixed seed (``zipar.demo.load_digit_split``), rendered as 64x64
ink-on-paper images with small random shifts, rotations and scales (``zipar.demo.render_digits``).

1. VQ (LlamaGen VQ layout, downsample 4 -> a 16x16 grid): L1 + L2 reconstruction, codebook
   and commitment losses with a straight-through estimator, codes looked up in the
   L2-normalised codebook as LlamaGen does; unused codes are restarted from encoder outputs.
2. GPT (LlamaGen c2i layout, width/64 heads so the loader infers the same config): teacher
   forcing over [class] + 255 tokens with a causal mask and the model's own 2D RoPE table,
   10% of the labels dropped to the null class (for CFG), on a pool of 8 augmented renders
   per training digit tokenised once by the trained VQ.
3. Both are saved as fp16 safetensors under the official key names, reloaded through
   ``zipar.api`` and evaluated on the held-out split: VQ reconstruction error and GPT
   NLL per token. ``train_log.json`` and ``MODEL_CARD.md`` are written beside them.

Training uses bf16 autocast on the CPU (about 1.7x faster on AVX-512 BF16 machines; pass
``--no-autocast`` for fp32). A seed fixes data order, augmentation and initialisation; the
numbers reproduce exactly on the same machine and thread count.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zipar import api  # noqa: E402
from zipar.io import outputs  # noqa: E402
from zipar.errors import ZipARError  # noqa: E402
from zipar.demo import AR_FILE, AUGMENT, IMAGE_SIZE, VQ_FILE, load_digit_split, render_digits  # noqa: E402
from zipar.nets.llamagen_gpt import GPTConfig, LlamaGenGPT, default_heads  # noqa: E402
from zipar.vq.llamagen import VQConfig, VQModel  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "zipar" / "assets" / "demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-autocast", action="store_true", help="train in fp32 instead of bf16 autocast")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shift", type=float, default=AUGMENT["shift"], help="augmentation: max shift, fraction of the half-width")
    p.add_argument("--rotate", type=float, default=AUGMENT["rotate_deg"], help="augmentation: max rotation in degrees")
    p.add_argument("--scale", type=float, default=AUGMENT["scale"], help="augmentation: max relative scale change")
    # VQ
    p.add_argument("--vq-steps", type=int, default=400)
    p.add_argument("--vq-lr", type=float, default=1e-3)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--codebook-dim", type=int, default=8)
    p.add_argument("--vq-ch-mult", default="1,2,2", help="ch_mult; three levels = downsample 4")
    p.add_argument("--z-channels", type=int, default=32)
    p.add_argument("--vq-init", help="skip VQ training and use this VQ file (e.g. to retrain only the GPT)")
    # GPT
    p.add_argument("--gpt-steps", type=int, default=2400)
    p.add_argument("--gpt-lr", type=float, default=2e-3)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--pool", type=int, default=8, help="augmented renders per training digit, tokenised once for the GPT")
    p.add_argument("--class-dropout", type=float, default=0.1)
    p.add_argument("--token-dropout", type=float, default=0.0, help="dropout on input token embeddings")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="storage precision of the saved files")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--no-card", action="store_true", help="do not write MODEL_CARD.md")
    p.add_argument("--data-limit", type=int, default=0,
                   help="use only the first N training and held-out digits (quick checks; 0 = all)")
    p.add_argument("--overwrite", action="store_true", help="replace demo files already in --out (e.g. the shipped ones)")
    return p.parse_args(argv)


class Clock:
    """Wall and process CPU seconds since creation. The CPU time (all threads) is reported beside
    the wall time because a shared machine may slow down or pause the run."""

    def __init__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0

    def __str__(self) -> str:
        return f"{self.wall():.0f}s (cpu {self.cpu():.0f}s)"


def augment_of(args) -> dict:
    return {"shift": args.shift, "rotate_deg": args.rotate, "scale": args.scale}


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


class Batches:
    """Batches in random order (a new permutation every epoch) of freshly augmented training images."""

    def __init__(self, digits: np.ndarray, labels: np.ndarray, batch: int, seed: int, augment: dict):
        self.digits, self.labels, self.batch, self.augment = digits, torch.as_tensor(labels), batch, augment
        self.gen = torch.Generator().manual_seed(seed)
        self.order, self.pos = torch.empty(0, dtype=torch.long), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch > len(self.order):
            self.order, self.pos = torch.randperm(len(self.labels), generator=self.gen), 0
        idx = self.order[self.pos: self.pos + self.batch]
        self.pos += self.batch
        return render_digits(self.digits[idx.numpy()], generator=self.gen, **self.augment), self.labels[idx]


# -- VQ ----------------------------------------------------------------------------------------

def vq_step(vq: VQModel, images: torch.Tensor, autocast: bool, beta: float = 0.25):
    dev = images.device.type
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
        z = vq.quant_conv(vq.encoder(images * 2 - 1))
    z = F.normalize(z.float(), dim=1)
    codebook = F.normalize(vq.quantize.embedding.weight.float(), dim=1)
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    ids = (flat.detach() @ codebook.t()).argmax(1)
    zq = codebook[ids].view(b, h, w, d).permute(0, 3, 1, 2)
    codebook_loss = F.mse_loss(zq, z.detach())
    commit_loss = F.mse_loss(zq.detach(), z)
    zq = z + (zq - z).detach()  # straight-through
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
        rec = vq.decoder(vq.post_quant_conv(zq))
    target = images * 2 - 1
    rec = rec.float()
    rec_loss = F.l1_loss(rec, target) + F.mse_loss(rec, target)
    loss = rec_loss + codebook_loss + beta * commit_loss
    return loss, rec_loss.detach(), ids.detach(), flat.detach()


def train_vq(args, train_x, train_y, device, log) -> tuple[VQModel, dict]:
    torch.manual_seed(args.seed)
    cfg = VQConfig(codebook_size=args.codebook_size, codebook_embed_dim=args.codebook_dim, ch=32,
                   ch_mult=tuple(int(m) for m in args.vq_ch_mult.split(",")), z_channels=args.z_channels,
                   num_res_blocks=1)
    vq = VQModel(cfg).to(device).train()
    params = [p for n, p in vq.named_parameters()]
    opt = torch.optim.AdamW(params, lr=args.vq_lr, betas=(0.9, 0.95), weight_decay=0.0)
    batches = Batches(train_x, train_y, args.batch, args.seed + 1, augment_of(args))
    usage = torch.zeros(cfg.codebook_size, device=device)
    restarts, clock, hist = 0, Clock(), []
    for step in range(args.vq_steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.vq_steps, args.vq_lr, 100)
        images, _ = batches.next()
        loss, rec, ids, flat = vq_step(vq, images.to(device), not args.no_autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        usage += torch.bincount(ids, minlength=cfg.codebook_size)
        if (step + 1) % 100 == 0 and step + 1 < 0.8 * args.vq_steps:
            dead = (usage == 0).nonzero().flatten()
            if len(dead):  # restart unused codes on random current latents
                pick = torch.randint(0, flat.shape[0], (len(dead),), generator=batches.gen).to(device)
                with torch.no_grad():
                    vq.quantize.embedding.weight[dead] = flat[pick] + 0.01 * torch.randn(len(dead), flat.shape[1], generator=batches.gen).to(device)
                restarts += len(dead)
            usage.zero_()
        hist.append(float(rec))
        if (step + 1) % args.log_every == 0 or step == 0:
            log(f"vq step {step + 1}/{args.vq_steps} rec {np.mean(hist[-args.log_every:]):.4f} "
                f"loss {float(loss.detach()):.4f} lr {opt.param_groups[0]['lr']:.2e} {clock}")
    return vq.eval(), {"seconds": round(clock.wall(), 1), "cpu_seconds": round(clock.cpu(), 1), "steps": args.vq_steps, "final_rec_loss": round(float(np.mean(hist[-100:])), 5),
                       "code_restarts": int(restarts), "config": cfg.__dict__ | {"ch_mult": list(cfg.ch_mult)}}


# -- GPT ---------------------------------------------------------------------------------------

@torch.no_grad()
def encode(vq: VQModel, images: torch.Tensor, autocast: bool) -> torch.Tensor:
    """Code ids of training images: the encoder under autocast, the code look-up in fp32."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
        h = vq.encoder(images * 2 - 1)
    return vq.quantize.nearest(vq.quant_conv(h.float()))


def gpt_loss(gpt: LlamaGenGPT, tokens: torch.Tensor, classes: torch.Tensor, rope, mask, token_dropout: float = 0.0,
             reduction: str = "mean"):
    """Teacher forcing: [class] + tokens[:-1] -> tokens, causal, with the model's own pieces."""
    inputs = gpt.tok_embeddings(tokens[:, :-1])
    if token_dropout:
        inputs = F.dropout(inputs, token_dropout, training=True)
    h = torch.cat([gpt.class_prefix(classes).to(inputs.dtype), inputs], dim=1)
    logits = gpt.logits(gpt.hidden(h, rope, mask))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction=reduction)


def causal_inputs(gpt: LlamaGenGPT, grid: tuple[int, int], device):
    n = gpt.config.prefix_len + grid[0] * grid[1] - 1
    rope = gpt.rope_table(*grid)[:n].to(device)
    mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    return rope, mask


def train_gpt(args, vq: VQModel, train_x, train_y, device, log) -> tuple[LlamaGenGPT, dict]:
    torch.manual_seed(args.seed + 2)
    heads = default_heads(args.dim)  # what the loader will infer for this width
    cfg = GPTConfig(dim=args.dim, n_layer=args.layers, n_head=heads, n_kv_head=heads, ffn_hidden=args.ffn,
                    vocab_size=vq.codebook_size, model_type="c2i", num_classes=10, prefix_len=1)
    gpt = LlamaGenGPT(cfg).to(device)
    with torch.no_grad():  # small init as in LlamaGen (std 0.02), output layer zero
        for name, p in gpt.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 0.02)
        gpt.output.weight.zero_()
    gpt.train()
    decay = [p for n, p in gpt.named_parameters() if p.ndim > 1 and "embedding" not in n]
    rest = [p for n, p in gpt.named_parameters() if not (p.ndim > 1 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.gpt_lr, betas=(0.9, 0.95))
    grid = (IMAGE_SIZE // vq.downsample,) * 2
    rope, mask = causal_inputs(gpt, grid, device)
    # A pool of augmented renders, tokenised once (encoding every batch afresh costs ~20% of a step).
    clock = Clock()
    gen = torch.Generator().manual_seed(args.seed + 3)
    pool, pool_labels = [], []
    for _ in range(args.pool):
        for i in range(0, len(train_y), 128):
            images = render_digits(train_x[i:i + 128], generator=gen, **augment_of(args))
            pool.append(encode(vq, images.to(device), not args.no_autocast).flatten(1).cpu())
        pool_labels.append(torch.as_tensor(train_y))
    pool, pool_labels = torch.cat(pool), torch.cat(pool_labels)
    pool_seconds = clock.wall()
    log(f"gpt data: {len(pool)} token grids ({args.pool} renders of each training digit) in {clock}")
    order, pos = torch.empty(0, dtype=torch.long), 0
    hist = []
    autocast = not args.no_autocast
    for step in range(args.gpt_steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.gpt_steps, args.gpt_lr, 200)
        if pos + args.batch > len(order):
            order, pos = torch.randperm(len(pool), generator=gen), 0
        idx = order[pos: pos + args.batch]
        pos += args.batch
        tokens, labels = pool[idx].to(device), pool_labels[idx]
        drop = torch.rand(len(labels), generator=gen) < args.class_dropout
        classes = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = gpt_loss(gpt, tokens, classes, rope, mask, args.token_dropout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
        opt.step()
        hist.append(loss.item())
        if (step + 1) % args.log_every == 0 or step == 0:
            log(f"gpt step {step + 1}/{args.gpt_steps} loss {np.mean(hist[-args.log_every:]):.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {clock}")
    return gpt.eval(), {"seconds": round(clock.wall(), 1), "cpu_seconds": round(clock.cpu(), 1), "pool_seconds": round(pool_seconds, 1), "steps": args.gpt_steps, "final_train_loss": round(float(np.mean(hist[-100:])), 4),
                        "config": cfg.__dict__}


# -- evaluation on the shipped files -------------------------------------------------------------

@torch.no_grad()
def evaluate(ar_path: Path, vq_path: Path, splits: dict, device) -> dict:
    """Reload the saved files through zipar.api and measure them on unaugmented renders."""
    vq = api.load_vq(vq_path, device)
    model = api.load_ar_model(ar_path, device, "fp32")
    api.check_pair(model, vq)
    gpt = model.gpt
    grid = api.grid_for(api.default_image_size(ar_path), vq)
    rope, mask = causal_inputs(gpt, grid, device)
    out = {}
    for name, (digits, labels) in splits.items():
        l1, mse, nll, nll_null, used = [], [], [], [], torch.zeros(vq.codebook_size)
        for i in range(0, len(labels), 64):
            images = render_digits(digits[i:i + 64]).to(device)
            codes = vq.encode_images(images)
            rec = vq.decode_codes(codes)
            l1.append((rec - images).abs().mean((1, 2, 3)).cpu())
            mse.append((rec - images).pow(2).mean((1, 2, 3)).cpu())
            used += torch.bincount(codes.flatten().cpu(), minlength=vq.codebook_size)
            cls = torch.as_tensor(labels[i:i + 64], device=device)
            nll.append(gpt_loss(gpt, codes.flatten(1), cls, rope, mask, reduction="none").view(len(cls), -1).mean(1).cpu())
            null = torch.full_like(cls, gpt.config.num_classes)
            nll_null.append(gpt_loss(gpt, codes.flatten(1), null, rope, mask, reduction="none").view(len(cls), -1).mean(1).cpu())
        mse_all = torch.cat(mse)
        out[name] = {
            "images": int(len(labels)),
            "vq_l1": round(float(torch.cat(l1).mean()), 5),
            "vq_mse": round(float(mse_all.mean()), 6),
            "vq_psnr_db": round(float((10 * torch.log10(1 / mse_all)).mean()), 2),
            "codes_used": int((used > 0).sum()),
            "gpt_nll_per_token": round(float(torch.cat(nll).mean()), 4),
            "gpt_nll_per_token_null_class": round(float(torch.cat(nll_null).mean()), 4),
        }
    return out


def save_safetensors(module: torch.nn.Module, path: Path, precision: str, metadata: dict) -> None:
    """Written whole or not at all (``zipar.io.outputs``): an interrupted run never leaves a half file."""
    from safetensors.torch import save

    dtype = torch.float16 if precision == "fp16" else torch.float32
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in module.state_dict().items()}
    outputs.write_bytes(path, save(sd, metadata={k: str(v) for k, v in metadata.items()}))


def model_card(record: dict) -> str:
    """MODEL_CARD.md from the training record (numbers measured by this run)."""
    vq, gpt, m, sec = record["vq"]["config"], record["gpt"]["config"], record["metrics"], record["seconds"]
    cpu = record["cpu_seconds"]
    held, train = m["heldout"], m["train_subset"]
    sizes = record["files"]
    vq_line = (f"trained {record['vq']['steps']} steps" if record["vq"]["steps"]
               else f"taken from {record['vq'].get('init')}")
    return f"""# Demo model: handwritten digits (class-conditional LlamaGen GPT + VQ)

Small enough to ship in the repository (about {sum(sizes.values()) / 2**20:.1f} MB), trained on real images, and
stored in the official LlamaGen layouts so that `zipar.api.load_ar_model` / `load_vq`, the CLI
and the ComfyUI loaders read it exactly as they read `c2i_L_384.pt` / `vq_ds16_c2i.pt`.
It exists to show ZipAR working out of the box (`python -m zipar demo --out demo.png`) and to
measure what each window costs in quality (`python -m bench.quality`). It is not a useful
image generator beyond that.

| file | what | bytes |
|---|---|---|
| `{AR_FILE}` | LlamaGen GPT, class-to-image, {gpt['n_layer']} layers, width {gpt['dim']} ({gpt['n_head']} heads of 64), SwiGLU {gpt['ffn_hidden']}, vocabulary {gpt['vocab_size']}, 10 classes + null class; 64x64 images (the `_64` suffix sets the default size) | {sizes[AR_FILE]:,} |
| `{VQ_FILE}` | LlamaGen VQ, ch {vq['ch']}, ch_mult {tuple(vq['ch_mult'])} (downsample {2 ** (len(vq['ch_mult']) - 1)}: a 16x16 token grid), z {vq['z_channels']}, {vq['num_res_blocks']} res block(s), codebook {vq['codebook_size']} x {vq['codebook_embed_dim']} (L2-normalised look-up) | {sizes[VQ_FILE]:,} |

Both are `.safetensors` in {record['args']['precision']} under the official key names (the loaders cast to the
compute precision). Class ids are the digits 0..9; id 10 is the null class used by CFG.

## Data

The 1797 8x8 handwritten digits bundled with scikit-learn (`sklearn.datasets.load_digits`), a
copy of the UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak,
1998), licensed **CC BY 4.0** (https://archive.ics.uci.edu/dataset/80). Split per class with
a fixed seed (`zipar.demo.load_digit_split`): {record['data']['train']} training and {held['images']} held-out digits; the held-out
digits were never seen in training. Each 8x8 ink map is resampled bicubically to 64x64 and
coloured as ink on paper (`zipar.demo.render_digits`); each training render gets a random
shift (up to {record['args']['shift']} of the half-width), rotation (up to {record['args']['rotate']} degrees) and scale
(up to {record['args']['scale']:.0%}): fresh ones every VQ step; for the GPT, a pool of {record['args']['pool']} renders per
training digit, tokenised once by the trained VQ.

## Training

```
{record['command']}
```

Seed {record['args']['seed']}; {record['threads']} CPU threads, torch {record['torch']}, bf16 autocast{' off' if record['args']['no_autocast'] else ''}.
Measured wall time: VQ {sec['vq']:.0f} s, GPT {sec['gpt']:.0f} s (tokenising the pool included), total {sec['total']:.0f} s
(with data, saving and evaluation), on a 2-core machine shared with other jobs ({record['date']}).
Process CPU time (all {record['threads']} threads): VQ {cpu['vq']:.0f} s, GPT {cpu['gpt']:.0f} s, total {cpu['total']:.0f} s; divided by
the thread count it is about the wall time the run needs on otherwise idle cores.

- VQ: {vq_line}; batch {record['args']['batch']}, AdamW lr {record['args']['vq_lr']} cosine; L1 + L2 reconstruction,
  codebook + 0.25 x commitment loss, straight-through; unused codes restarted from encoder
  outputs. Final training reconstruction loss (L1 + L2 on [-1, 1]): {record['vq'].get('final_rec_loss', 'n/a')}.
- GPT: {record['gpt']['steps']} steps, batch {record['args']['batch']}, AdamW lr {record['args']['gpt_lr']} cosine (200 warm-up steps),
  weight decay {record['args']['weight_decay']}; teacher forcing over [class] + 255 tokens with a causal
  mask and the model's 2D RoPE table; {record['args']['class_dropout']:.0%} of labels replaced by the null class;
  dropout {record['args']['token_dropout']} on input token embeddings. Final training loss: {record['gpt']['final_train_loss']} nats/token.

## Metrics (measured on the shipped files, reloaded through `zipar.api`)

| split | images | VQ L1 | VQ MSE | VQ PSNR (dB) | codes used | GPT NLL/token (true class) | GPT NLL/token (null class) |
|---|---|---|---|---|---|---|---|
| held-out | {held['images']} | {held['vq_l1']} | {held['vq_mse']} | {held['vq_psnr_db']} | {held['codes_used']} | {held['gpt_nll_per_token']} | {held['gpt_nll_per_token_null_class']} |
| training (subset) | {train['images']} | {train['vq_l1']} | {train['vq_mse']} | {train['vq_psnr_db']} | {train['codes_used']} | {train['gpt_nll_per_token']} | {train['gpt_nll_per_token_null_class']} |

Images in [0, 1]; unaugmented (centred) renders. NLL in nats per image token, uncached causal
forward. Sample quality per ZipAR window (class accuracy by an independent classifier,
Frechet distance, NLL of samples): `python -m bench.quality`, results in docs/benchmarks.md.

## Licence

Weights: MIT, like the rest of this repository. Training data: CC BY 4.0 (attribution above).
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    files = [(out / AR_FILE, "the GPT"), (out / VQ_FILE, "the VQ"), (out / "train_log.json", "the training log")]
    files += [] if args.no_card else [(out / "MODEL_CARD.md", "the model card")]
    try:  # every file checked before hours of training, not after
        outputs.plan_outputs([outputs.plain_output(p, label) for p, label in files], args.overwrite, "pass --overwrite")
    except ZipARError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    lines = []

    def log(msg: str) -> None:
        lines.append(msg)
        print(msg, flush=True)

    total = Clock()
    train_x, train_y, test_x, test_y = load_digit_split()
    if args.data_limit:
        n = args.data_limit
        train_x, train_y, test_x, test_y = train_x[:n], train_y[:n], test_x[:n], test_y[:n]
    log(f"data: {len(train_y)} training / {len(test_y)} held-out digits; seed {args.seed}; "
        f"{args.threads} threads on {platform.processor() or platform.machine()}")
    if args.vq_init:
        vq = api.load_vq(args.vq_init, device)
        vq_info = {"seconds": 0.0, "cpu_seconds": 0.0, "steps": 0, "init": str(args.vq_init), "config": vq.config.__dict__ | {"ch_mult": list(vq.config.ch_mult)}}
        log(f"VQ loaded from {args.vq_init}")
    else:
        vq, vq_info = train_vq(args, train_x, train_y, device, log)
        log(f"VQ done in {vq_info['seconds']:.0f} s (cpu {vq_info['cpu_seconds']:.0f} s)")
    gpt, gpt_info = train_gpt(args, vq, train_x, train_y, device, log)
    log(f"GPT done in {gpt_info['seconds']:.0f} s (cpu {gpt_info['cpu_seconds']:.0f} s)")

    command = "python tools/train_demo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"source": "ComfyUI-ZipAR tools/train_demo.py", "data": "scikit-learn digits (UCI), CC BY 4.0",
            "seed": args.seed, "command": command.strip()}
    ar_path, vq_path = out / AR_FILE, out / VQ_FILE
    save_safetensors(vq, vq_path, args.precision, meta | {"model": "LlamaGen VQ (downsample 4)"})
    save_safetensors(gpt, ar_path, args.precision, meta | {"model": "LlamaGen GPT c2i, 10 classes, 64x64"})
    t_eval = Clock()
    # the held-out split, and as many training digits (a fixed subset) to show the generalisation gap
    sub = np.random.default_rng(0).choice(len(train_y), size=len(test_y), replace=False)
    metrics = evaluate(ar_path, vq_path, {"train_subset": (train_x[sub], train_y[sub]), "heldout": (test_x, test_y)}, device)
    log(f"eval {t_eval}: {json.dumps(metrics)}")
    log(f"total {total}")
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command.strip(), "args": vars(args), "torch": torch.__version__, "threads": args.threads,
        "machine": platform.machine(), "seconds": {"vq": vq_info["seconds"], "gpt": gpt_info["seconds"], "total": round(total.wall(), 1)},
        "cpu_seconds": {"vq": vq_info["cpu_seconds"], "gpt": gpt_info["cpu_seconds"], "total": round(total.cpu(), 1)},
        "data": {"train": int(len(train_y)), "heldout": int(len(test_y))},
        "vq": vq_info, "gpt": gpt_info, "metrics": metrics,
        "files": {p.name: p.stat().st_size for p in (ar_path, vq_path)},
    }
    outputs.write_json(out / "train_log.json", record)
    if not args.no_card:
        outputs.write_text(out / "MODEL_CARD.md", model_card(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
