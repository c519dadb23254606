#!/usr/bin/env python3
"""The plot of `bench.py`'s results as a hand-written SVG (no plotting library needed):
ns per element (log scale, lower is better) per implementation, for each case and dtype, on
1 and 2 threads.

    python bench/plot.py target/python-bench.json docs/python-bench.svg
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Dict, List

ORDER = ["lion_optim", "compiled", "deepspeed", "adamw_fused", "foreach", "reference"]
LABELS = {
    "lion_optim": "lion_optim.torch.Lion",
    "reference": "reference class",
    "foreach": "_foreach Lion",
    "compiled": "torch.compile Lion",
    "adamw_fused": "AdamW(fused=True)",
    "deepspeed": "DeepSpeedCPULion",
    "lion_optim_q8": "lion_optim.torch.Lion, 8-bit momentum",  # (bench.py's, not plotted)
    "bnb_lion8bit": "bitsandbytes Lion8bit",
}
COLORS = {1: "#4e79a7", 2: "#f28e2b"}
PANELS = [("16M", "float32", "16M elements, f32"), ("16M", "bfloat16", "16M elements, bf16"),
          ("gpt2", "float32", "GPT-2 small (148 tensors), f32"), ("gpt2", "bfloat16", "GPT-2 small (148 tensors), bf16")]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(data: Dict[str, Any], path: str) -> None:
    rows: List[Dict[str, Any]] = [r for r in data["results"] if "ns_per_element" in r]
    impls = [i for i in ORDER if any(r["impl"] == i for r in rows)]
    threads = sorted({r["threads"] for r in rows})
    lo, hi = 0.1, 100.0
    vals = [r["ns_per_element"] for r in rows]
    if vals:
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
    label_w, plot_w, bar_h, gap = 170, 330, 7, 6
    group_h = bar_h * len(threads) + gap
    panel_h = 28 + group_h * len(impls) + 26
    panel_w = label_w + plot_w + 70
    cols = 2
    width = panel_w * cols + 20
    height = 56 + panel_h * math.ceil(len(PANELS) / cols) + 10

    def x_of(v: float) -> float:
        return label_w + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    m = data.get("machine", {})
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="18" font-size="14" font-weight="bold">One optimizer step on the CPU: '
           f'ns per element (log scale, lower is better)</text>',
           f'<text x="10" y="36" fill="#555">{_esc(str(m.get("cpu", "")))}, {m.get("cores", "?")} cores; '
           f'torch {_esc(str(m.get("torch", "")))}; lion_optim {_esc(str(m.get("lion_optim", "")))} '
           f'({_esc(str(m.get("simd_path", "")))}); Lion lr 1e-4, weight decay 0.1</text>']
    for t in threads:
        x = width - 190 + (t - 1) * 85
        out.append(f'<rect x="{x}" y="26" width="10" height="10" fill="{COLORS.get(t, "#999")}"/>'
                   f'<text x="{x + 14}" y="35">{t} thread{"s" if t > 1 else ""}</text>')
    for pi, (case, dtype, title) in enumerate(PANELS):
        ox = 10 + (pi % cols) * panel_w
        oy = 50 + (pi // cols) * panel_h
        out.append(f'<text x="{ox}" y="{oy + 14}" font-weight="bold">{_esc(title)}</text>')
        top = oy + 22
        bottom = top + group_h * len(impls)
        # grid: decades
        d = lo
        while d <= hi * 1.0001:
            x = ox + x_of(d)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 12}" text-anchor="middle" fill="#555">{d:g}</text>')
            d *= 10
        for ii, impl in enumerate(impls):
            gy = top + ii * group_h
            weight = ' font-weight="bold"' if impl == "lion_optim" else ""
            out.append(f'<text x="{ox + label_w - 6}" y="{gy + group_h / 2 + 1:.1f}" text-anchor="end"{weight}>'
                       f'{_esc(LABELS[impl])}</text>')
            for ti, t in enumerate(threads):
                r = next((r for r in rows if (r["case"], r["dtype"], r["impl"], r["threads"]) == (case, dtype, impl, t)), None)
                y = gy + ti * bar_h
                if r is None:
                    out.append(f'<text x="{ox + label_w + 4}" y="{y + bar_h - 1}" fill="#999" font-size="8">n/a</text>')
                    continue
                v = max(r["ns_per_element"], lo)
                w = max(1.0, x_of(v) - label_w)
                out.append(f'<rect x="{ox + label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 1}" fill="{COLORS.get(t, "#999")}"/>')
                out.append(f'<text x="{ox + label_w + w + 3:.1f}" y="{y + bar_h - 1}" font-size="8">{r["ns_per_element"]:.3g}</text>')
        out.append(f'<line x1="{ox + label_w}" y1="{top}" x2="{ox + label_w}" y2="{bottom}" stroke="#333"/>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        write_svg(json.load(f), sys.argv[2])
