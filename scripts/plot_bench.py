#!/usr/bin/env python3
"""Plot and tabulate the results of `cargo bench --bench step` (Python 3 standard library only).

Reads criterion's output, <criterion dir>/<group>/<function>/<size>/new/{benchmark,estimates}.json,
takes the median time of every benchmark, and

* writes an SVG (default docs/bench.svg): effective bandwidth (GB/s, log scale) against the
  number of elements (log scale), one panel per dtype group, one line per function (every path,
  `rayon` if measured, the `roofline` probe, the `naive` port, the `fused-loop`);
* prints markdown tables for the README, one per group: ns/element, GB/s, the roofline probe's
  time as a percentage of this function's (100% = as fast as the probe; `rayon` is compared with
  `roofline-rayon`), and the speedup over the naive port.

    cargo bench --bench step
    python3 scripts/plot_bench.py                      # all groups and sizes
    cargo bench --bench options
    python3 scripts/plot_bench.py --options            # the cost of each per-call option
    cargo bench --bench model --features rayon
    python3 scripts/plot_bench.py --model              # whole-model steps (GPT-2 small, 1000x1K)
    python3 scripts/plot_bench.py --sizes 64K,16M      # fewer table rows (the SVG keeps all)
    python3 scripts/plot_bench.py --criterion-dir /tmp/t/criterion --svg /tmp/bench.svg

The criterion directory defaults to $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion, else
target/criterion of this repository (where `cargo bench` writes it).
"""

import argparse
import json
import math
import os
import re
import sys
from xml.sax.saxutils import escape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Functions in display order; anything else (a new path) goes after the known paths.
PATH_ORDER = ["scalar", "portable", "avx2", "avx512", "neon", "simd128", "rayon"]
BASELINES = ["roofline", "roofline-rayon", "fused-loop", "naive"]
# The ceiling each function is compared with (default: the single-threaded probe).
ROOFLINE_OF = {"rayon": "roofline-rayon", "roofline-rayon": "roofline-rayon"}
STYLE = {
    "scalar": ("#8c564b", ""),
    "portable": ("#1f77b4", ""),
    "avx2": ("#2ca02c", ""),
    "avx512": ("#9467bd", ""),
    "rayon": ("#ff7f0e", ""),
    "roofline": ("#000000", "6,4"),
    "roofline-rayon": ("#000000", "8,3,2,3"),
    "fused-loop": ("#7f7f7f", "2,3"),
    "naive": ("#d62728", "6,4"),
}
SPARE_COLORS = ["#17becf", "#bcbd22", "#e377c2", "#aec7e8", "#98df8a", "#ffbb78"]
GROUP_ORDER = [
    "p=f32 g=f32 m=f32",
    "p=bf16 g=bf16 m=bf16",
    "p=f16 g=f16 m=f16",
    "p=bf16 g=bf16 m=f32",
    "p=f32 g=f32 m=bf16",
]


def parse_size(label):
    """'4K' -> 4096, '16M' -> 16777216, '1000' -> 1000 (as the bench labels sizes)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KkMm]?)\s*", label)
    if not m:
        raise ValueError(f"not a size: {label!r}")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20}[m.group(2).lower()]


def size_label(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return str(n)


def default_criterion_dir():
    if os.environ.get("CRITERION_HOME"):
        return os.environ["CRITERION_HOME"]
    if os.environ.get("CARGO_TARGET_DIR"):
        return os.path.join(os.environ["CARGO_TARGET_DIR"], "criterion")
    return os.path.join(REPO, "target", "criterion")


def load(criterion_dir):
    """{group: {function: {n: (median ns per step, bytes per step)}}}"""
    results = {}
    for root, dirs, files in os.walk(criterion_dir):
        if os.path.basename(root) != "new":
            continue
        if "benchmark.json" not in files or "estimates.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(root, "estimates.json")) as f:
            estimates = json.load(f)
        group, function, value = bench.get("group_id"), bench.get("function_id"), bench.get("value_str")
        throughput = bench.get("throughput") or {}
        nbytes = throughput.get("Bytes") or throughput.get("BytesDecimal")
        if not (group and function and value and nbytes):
            continue  # not one of ours
        try:
            n = parse_size(value)
        except ValueError:
            continue
        median_ns = estimates["median"]["point_estimate"]
        results.setdefault(group, {}).setdefault(function, {})[n] = (median_ns, nbytes)
    return results


def ordered_groups(results):
    known = [g for g in GROUP_ORDER if g in results]
    return known + sorted(g for g in results if g not in GROUP_ORDER)


def ordered_functions(functions):
    paths = [f for f in PATH_ORDER if f in functions]
    others = sorted(f for f in functions if f not in PATH_ORDER and f not in BASELINES)
    return paths + others + [f for f in BASELINES if f in functions]


def style(function, spare):
    if function not in STYLE:
        STYLE[function] = (SPARE_COLORS[spare[0] % len(SPARE_COLORS)], "")
        spare[0] += 1
    return STYLE[function]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# ---------------------------------------------------------------------------------------------
# Tables


def tables(results, sizes=None):
    out = []
    for group in ordered_groups(results):
        functions = results[group]
        all_sizes = sorted({n for f in functions.values() for n in f})
        rows = []
        for n in all_sizes:
            if sizes and n not in sizes:
                continue
            naive = functions.get("naive", {}).get(n)
            for function in ordered_functions(functions):
                if n not in functions[function]:
                    continue
                roofline = functions.get(ROOFLINE_OF.get(function, "roofline"), {}).get(n)
                ns, nbytes = functions[function][n]
                of_roofline = f"{100 * roofline[0] / ns:.0f}%" if roofline else "-"
                vs_naive = f"{naive[0] / ns:.1f}x" if naive else "-"
                rows.append(
                    f"| {size_label(n)} | {function} | {ns / n:.3f} | {nbytes / ns:.1f} "
                    f"| {of_roofline} | {vs_naive} |"
                )
        if not rows:
            continue
        out.append(f"**{group}**\n")
        out.append("| elements | function | ns/element | GB/s | roofline | vs naive |")
        out.append("|---:|:---|---:|---:|---:|---:|")
        out.extend(rows)
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# SVG

PANEL_W, PANEL_H = 430, 290
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 58, 14, 30, 40
COLUMNS = 2


def nice_log_ticks(lo, hi):
    ticks = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def fmt_tick(v):
    return f"{v:g}" if v >= 1 else f"{v:.2g}"


def panel(group, functions, x0, y0, x_range, y_range, spare):
    """One panel: axes, grid, a polyline per function, points with tooltips."""
    (xmin, xmax), (ymin, ymax) = x_range, y_range
    pw, ph = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    left, top = x0 + MARGIN_L, y0 + MARGIN_T

    def sx(n):
        span = math.log2(xmax) - math.log2(xmin) or 1.0
        return left + pw * (math.log2(n) - math.log2(xmin)) / span

    def sy(v):
        return top + ph * (1 - (math.log10(v) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin)))

    s = ['<g class="panel">']
    s.append(f'<text x="{left + pw / 2:.1f}" y="{y0 + 18}" text-anchor="middle" class="title">{escape(group)}</text>')
    s.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    for v in nice_log_ticks(ymin, ymax):
        y = sy(v)
        s.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        s.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{fmt_tick(v)}</text>')
    sizes = sorted({n for f in functions.values() for n in f})
    for n in sizes:
        x = sx(n)
        s.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" class="grid"/>')
        s.append(f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{size_label(n)}</text>')
    s.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 32}" text-anchor="middle" class="axis">elements per step</text>')
    s.append(
        f'<text transform="translate({x0 + 14},{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
        f'class="axis">GB/s (effective)</text>'
    )
    for function in ordered_functions(functions):
        color, dash = style(function, spare)
        points = sorted(functions[function].items())
        coords = " ".join(f"{sx(n):.1f},{sy(b / ns):.1f}" for n, (ns, b) in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        s.append(f'<polyline points="{coords}" stroke="{color}"{dash_attr} class="line"/>')
        for n, (ns, b) in points:
            tip = f"{function}, {size_label(n)}: {b / ns:.1f} GB/s, {ns / n:.3f} ns/element"
            s.append(
                f'<circle cx="{sx(n):.1f}" cy="{sy(b / ns):.1f}" r="2.6" fill="{color}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    s.append("</g>")
    return s


def svg(results, note):
    groups = ordered_groups(results)
    spare = [0]
    all_functions = ordered_functions({f for g in groups for f in results[g]})
    values = [b / ns for g in groups for f in results[g].values() for ns, b in f.values()]
    sizes = [n for g in groups for f in results[g].values() for n in f]
    x_range = (min(sizes), max(sizes))
    y_range = (min(values) / 1.3, max(values) * 1.3)
    rows = math.ceil(len(groups) / COLUMNS)
    header = 66 if note else 50
    width = COLUMNS * PANEL_W + 10
    height = header + rows * PANEL_H + 10
    s = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        "<style>"
        ".frame{fill:none;stroke:#444;stroke-width:1}"
        ".grid{stroke:#ddd;stroke-width:1}"
        ".line{fill:none;stroke-width:1.8}"
        ".title{font-size:13px;font-weight:bold}"
        ".axis{fill:#333}"
        "</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
        "lion-optim: one Lion step, effective bandwidth vs size (median of criterion samples)</text>",
    ]
    if note:
        s.append(f'<text x="{width / 2}" y="34" text-anchor="middle" fill="#555">{escape(note)}</text>')
    # Legend.
    x, y = 20, header - 12
    for function in all_functions:
        color, dash = style(function, spare)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        s.append(f'<line x1="{x}" x2="{x + 24}" y1="{y}" y2="{y}" stroke="{color}"{dash_attr} class="line"/>')
        s.append(f'<text x="{x + 29}" y="{y + 4}">{escape(function)}</text>')
        x += 40 + 7 * len(function)
    for i, group in enumerate(groups):
        x0, y0 = 5 + (i % COLUMNS) * PANEL_W, header + (i // COLUMNS) * PANEL_H
        s.extend(panel(group, results[group], x0, y0, x_range, y_range, spare))
    s.append("</svg>")
    return "\n".join(s) + "\n"


def options_table(results):
    """The `options ...` groups of `cargo bench --bench options`: each option's median time as a
    percentage over `plain` at the same size."""
    out = []
    for group in sorted(g for g in results if g.startswith("options ")):
        functions = results[group]
        plain = functions.get("plain", {})
        order = ["stochastic", "unscale", "maximize", "decoupled-wd", "all", "all_finite",
                 "skip_non_finite", "guarded"]
        names = [f for f in order if f in functions] + sorted(
            f for f in functions if f != "plain" and f not in order
        )
        sizes = sorted(plain)
        out.append(f"**{group[len('options '):]}**\n")
        out.append("| elements | plain ns/element | " + " | ".join(names) + " |")
        out.append("|---:|---:|" + "---:|" * len(names))
        for n in sizes:
            base = plain[n][0]
            cells = []
            for f in names:
                t = functions[f].get(n)
                cells.append(f"{100 * (t[0] / base - 1):+.0f}%" if t else "-")
            out.append(f"| {size_label(n)} | {base / n:.3f} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def load_model(criterion_dir):
    """{group: {function: (median ns, tensors, elements)}} of `cargo bench --bench model`, whose
    benchmark values are `{tensors}x{elements}`."""
    results = {}
    for root, dirs, files in os.walk(criterion_dir):
        if os.path.basename(root) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(root, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(root, "estimates.json")) as f:
            estimates = json.load(f)
        m = re.fullmatch(r"(\d+)x(\d+)", bench.get("value_str") or "")
        if not m:
            continue
        function = bench["function_id"]
        results.setdefault(bench["group_id"], {})[function] = (
            estimates["median"]["point_estimate"], int(m.group(1)), int(m.group(2)))
    return results


def model_table(results):
    """One table row per group and function: ms per step, ns per element, the time over the
    roofline probe on the same threads, and (1000x1K) the cost per tensor beyond the probe."""
    out = ["| model | dtypes (p, g, m) | function | ms/step | ns/element | / roofline | / roofline per tensor | over the per-tensor roofline, per tensor |",
           "|:---|:---|:---|---:|---:|---:|---:|---:|"]
    for group in sorted(results, key=lambda g: (not g.startswith("gpt2"), g)):
        model, _, dtypes = group.partition(" ")
        functions = results[group]
        for function in ["lion-step/1-thread", "lion-step/all-threads", "per-tensor/1-thread",
                         "roofline-per-tensor/1-thread", "roofline/1-thread", "roofline/all-threads"]:
            if function not in functions:
                continue
            ns, tensors, elements = functions[function]
            threads = function.split("/")[1]
            roof = functions.get(f"roofline/{threads}")
            per_tensor_roof = functions.get("roofline-per-tensor/1-thread")
            ratio = f"{ns / roof[0]:.2f}x" if roof and not function.startswith("roofline") else "-"
            pt_ratio = (f"{ns / per_tensor_roof[0]:.2f}x"
                        if per_tensor_roof and threads == "1-thread" and not function.startswith("roofline") else "-")
            overhead = (f"{(ns - per_tensor_roof[0]) / tensors:.0f} ns"
                        if per_tensor_roof and threads == "1-thread" and not function.startswith("roofline") else "-")
            out.append(f"| {model} | {dtypes} | {function} | {ns / 1e6:.2f} | {ns / elements:.3f} "
                       f"| {ratio} | {pt_ratio} | {overhead} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion-dir", default=default_criterion_dir(), help="criterion's output directory")
    ap.add_argument("--svg", default=os.path.join(REPO, "docs", "bench.svg"), help="the SVG to write ('' for none)")
    ap.add_argument("--sizes", help="table rows for these sizes only, e.g. 64K,16M")
    ap.add_argument("--note", default=None, help="subtitle of the chart (default: the CPU model)")
    ap.add_argument("--options", action="store_true", help="print the table of `cargo bench --bench options`")
    ap.add_argument("--model", action="store_true", help="print the table of `cargo bench --bench model`")
    args = ap.parse_args()

    if args.model:
        model = load_model(args.criterion_dir)
        if not model:
            sys.exit(f"no results of `cargo bench --bench model` under {args.criterion_dir}")
        print(model_table(model))
        return
    results = load(args.criterion_dir)
    if args.options:
        table = options_table(results)
        if not table:
            sys.exit(f"no results of `cargo bench --bench options` under {args.criterion_dir}")
        print(table)
        return
    results = {g: f for g, f in results.items() if not g.startswith("options ")}
    if not results:
        sys.exit(f"no criterion results of `cargo bench --bench step` under {args.criterion_dir}")
    sizes = {parse_size(s) for s in args.sizes.split(",")} if args.sizes else None
    if args.svg:
        note = cpu_model() if args.note is None else args.note
        os.makedirs(os.path.dirname(os.path.abspath(args.svg)), exist_ok=True)
        with open(args.svg, "w") as f:
            f.write(svg(results, note))
        print(f"wrote {args.svg}", file=sys.stderr)
    print(tables(results, sizes))


if __name__ == "__main__":
    main()
