#!/usr/bin/env python3
"""Record what the reference PyTorch Lion computes, for tests/suite/pytorch.rs (needs torch + numpy).

The step below is google/automl's `lion/lion_pytorch.py` `Lion.step`, operation by operation, on
f32 CPU tensors. For each case it records the inputs and the parameters and momentum after one
step into tests/data/pytorch_lion.bin (little-endian):

    b"LIONPT01", u32 case count, u32 torch version length, the version (utf-8), then per case:
    f64 lr, beta1, beta2, weight_decay; u32 n; f32[n] p, g, m, p_after, m_after

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch numpy
    /tmp/tv/bin/python scripts/pytorch_golden.py

The Rust test then checks that `lion_optim::reference::step` gives the same parameters bit for
bit, and the same momentum up to the one rounding PyTorch's fused `add_(x, alpha=...)` saves.
"""

import os
import struct

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "data", "pytorch_lion.bin")


@torch.no_grad()
def lion_pytorch_step(p, grad, exp_avg, lr, betas, weight_decay):
    """`Lion.step` of lion_pytorch.py for one parameter, in its order of operations."""
    # Perform stepweight decay
    p.data.mul_(1 - lr * weight_decay)
    beta1, beta2 = betas
    # Weight update
    update = exp_avg * beta1 + grad * (1 - beta1)
    p.add_(torch.sign(update), alpha=-lr)
    # Decay the momentum running average coefficient
    exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


def special_values():
    f = np.float32
    v = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, 3.4e38, -3.4e38, 1e-4]
    return np.array(v, dtype=f)


def case(rng, n, specials):
    scale = np.float32(10.0) ** rng.integers(-4, 2, size=n).astype(np.float32)
    p = (rng.standard_normal(n).astype(np.float32) * scale).astype(np.float32)
    g = (rng.standard_normal(n).astype(np.float32) * np.float32(0.01)).astype(np.float32)
    m = (rng.standard_normal(n).astype(np.float32) * np.float32(0.01)).astype(np.float32)
    if specials:
        s = special_values()
        for arr in (p, g, m):
            idx = rng.integers(0, n, size=n // 16)
            arr[idx] = rng.choice(s, size=idx.size)
    # Some exact cancellations of `update` (beta1 = 0.5 makes m = -g cancel exactly).
    return p, g, m


def main():
    rng = np.random.default_rng(2023)
    cases = [
        dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
        dict(lr=3e-4, betas=(0.9, 0.99), weight_decay=0.1),
        dict(lr=1e-2, betas=(0.95, 0.98), weight_decay=1.0),
        dict(lr=0.5, betas=(0.5, 0.5), weight_decay=0.25),
        dict(lr=1e-3, betas=(0.0, 0.0), weight_decay=0.0),
        dict(lr=7e-3, betas=(0.99, 0.999), weight_decay=0.01),
    ]
    out = bytearray(b"LIONPT01")
    version = torch.__version__.encode()
    out += struct.pack("<II", len(cases), len(version)) + version
    for i, hp in enumerate(cases):
        n = 1024
        p, g, m = case(rng, n, specials=i % 2 == 1)
        if hp["betas"][0] == 0.5:
            m[: n // 4] = -g[: n // 4]
        tp, tg, tm = torch.from_numpy(p.copy()), torch.from_numpy(g.copy()), torch.from_numpy(m.copy())
        lion_pytorch_step(tp, tg, tm, hp["lr"], hp["betas"], hp["weight_decay"])
        out += struct.pack("<ddddI", hp["lr"], hp["betas"][0], hp["betas"][1], hp["weight_decay"], n)
        for arr in (p, g, m, tp.numpy(), tm.numpy()):
            out += arr.astype("<f4").tobytes()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(out)
    print(f"wrote {OUT}: {len(cases)} cases, torch {torch.__version__}, {len(out)} bytes")
    s = torch.sign(torch.tensor([float("nan"), -0.0, 0.0, 2.0, -3.0]))
    print("torch.sign(nan, -0, 0, 2, -3) =", s.tolist(), "bits of sign(-0):", hex(struct.unpack("<I", struct.pack("<f", s[1].item()))[0]))


if __name__ == "__main__":
    main()
