#!/usr/bin/env python3
"""Does 8-bit momentum train as well? A small transformer language model, trained from one start
with ``lion_optim.torch.Lion`` and its momentum in float32, bfloat16 and 8 bits, each with
round-to-nearest and stochastic rounding. A benchmark script, not a test.

The model: a character-level GPT (4 layers, width 192, 6 heads, context 128; about 1.8M
parameters) on the Python standard library's own source text (on every machine with Python,
no download; the first 4 MB of its ``.py`` files in sorted order, the last 10% held out).
Every run starts from the same weights and sees the same batches: only the optimizer's momentum
differs. Lion: lr 1e-3 with 30 steps of warm-up and cosine decay, betas (0.9, 0.99), weight
decay 0.1 on the matrices (a second param group without decay for biases, norms and
embeddings' positions).

Reported per run: the training loss (mean of the last 20 steps), the held-out loss, and the
fraction of update signs that differ from what float32 momentum would give: each run keeps a
float32 "shadow" momentum updated with its own gradients, and at every step compares
``sign(m*beta1 + g*(1 - beta1))`` of the shadow with the sign the run's optimizer applied (read
from the parameter's change). That isolates the momentum's precision from the runs' drift apart.

    python bench/train_lm.py                  # five runs of 400 steps (about 10 minutes on 2 cores)
    python bench/train_lm.py --steps 50       # a quick look
    python bench/train_lm.py --json target/train-lm.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sysconfig
import time
from typing import Any, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

import lion_optim
from lion_optim.torch import Lion

RUNS = [
    # (name, momentum dtype, stochastic rounding)
    ("f32", torch.float32, False),
    ("bf16", torch.bfloat16, False),
    ("bf16 + SR", torch.bfloat16, True),
    ("8-bit", "q8", False),
    ("8-bit + SR", "q8", True),
]
LR, BETAS, WD = 1e-3, (0.9, 0.99), 0.1


def corpus(limit: int = 4 << 20) -> bytes:
    """The first ``limit`` bytes of the standard library's ``.py`` files, in sorted order."""
    root = sysconfig.get_paths()["stdlib"]
    out = bytearray()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__", "test", "tests"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    out += f.read()
                if len(out) >= limit:
                    return bytes(out[:limit])
    return bytes(out)


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 256, d: int = 192, layers: int = 4, heads: int = 6, ctx: int = 128):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(ctx, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def batches(data: torch.Tensor, steps: int, batch: int, ctx: int, seed: int) -> List[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, data.numel() - ctx - 1, (steps, batch), generator=gen)
    return [torch.stack([data[s : s + ctx + 1] for s in row.tolist()]) for row in starts]


def lr_at(step: int, steps: int, warmup: int = 30) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@torch.no_grad()
def held_out_loss(model: nn.Module, val: List[torch.Tensor]) -> float:
    return sum(F.cross_entropy(model(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten()).item() for b in val) / len(val)


def train(name: str, momentum: Any, sr: bool, start: Dict[str, torch.Tensor], train_b, val_b, steps: int, log) -> Dict[str, Any]:
    model = GPT()
    model.load_state_dict(start)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "pos"]
    plain = [p for n, p in model.named_parameters() if not (p.dim() == 2 and n != "pos")]
    opt = Lion(
        [{"params": decay, "weight_decay": WD}, {"params": plain, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, momentum_dtype=momentum, stochastic_rounding=sr, seed=1,
    )
    params = decay + plain
    wds = [WD] * len(decay) + [0.0] * len(plain)
    shadow = [torch.zeros_like(p) for p in params]  # float32 momentum, the run's own gradients
    losses, differ, counted = [], 0, 0
    t0 = time.perf_counter()
    for step, b in enumerate(train_b):
        scale = lr_at(step, steps)
        for g in opt.param_groups:
            g["lr"] = LR * scale
        loss = F.cross_entropy(model(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        before = [p.detach().clone() for p in params]
        opt.step()
        lr = LR * scale
        with torch.no_grad():
            for p, p0, m, wd in zip(params, before, shadow, wds):
                g = p.grad
                want = torch.sign(m * BETAS[0] + g * (1 - BETAS[0]))
                decayed = p0 * torch.tensor(1 - lr * wd, dtype=torch.float64).float()
                got = torch.sign(decayed - p)
                differ += int((want != got).sum())
                counted += p.numel()
                m.mul_(BETAS[1]).add_(g * (1 - BETAS[1]))
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"  {name:11s} step {step:4d}  loss {loss.item():.4f}")
    state_bytes = 0
    for st in opt.state.values():
        for k in ("exp_avg", "exp_avg_codes", "exp_avg_absmax"):
            if k in st:
                state_bytes += st[k].numel() * st[k].element_size()
    return dict(
        run=name,
        train_loss=sum(losses[-20:]) / len(losses[-20:]),
        held_out_loss=held_out_loss(model, val_b),
        sign_differ=differ / counted,
        state_bytes=state_bytes,
        params=sum(p.numel() for p in params),
        seconds=round(time.perf_counter() - t0, 1),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    torch.manual_seed(0)
    text = torch.frombuffer(bytearray(corpus()), dtype=torch.uint8).long()
    cut = int(text.numel() * 0.9)
    train_b = batches(text[:cut], args.steps, args.batch, 128, seed=1)
    val_b = batches(text[cut:], 20, 32, 128, seed=2)
    start = {k: v.clone() for k, v in GPT().state_dict().items()}
    log(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, lion_optim "
        f"{lion_optim.__version__} ({lion_optim.simd_path()}), {torch.get_num_threads()} threads; "
        f"{text.numel()} bytes of text, {args.steps} steps of {args.batch} x 128")
    results = [train(name, md, sr, start, train_b, val_b, args.steps, log) for name, md, sr in RUNS]
    log("")
    log("| momentum | rounding | state bytes / parameter | training loss (last 20 steps) | held-out loss | update signs unlike f32 momentum's |")
    log("|---|---|---:|---:|---:|---:|")
    for r, (_, _, sr) in zip(results, RUNS):
        log(f"| {r['run'].split(' ')[0]} | {'stochastic' if sr else 'nearest'} | {r['state_bytes'] / r['params']:.3f} | "
            f"{r['train_loss']:.4f} | {r['held_out_loss']:.4f} | {r['sign_differ']:.3%} |")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(steps=args.steps, batch=args.batch, results=results), f, indent=1)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
