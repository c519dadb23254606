#!/usr/bin/env python3
"""Benchmark of `lion_optim.torch.Lion` against the other CPU optimizer steps a PyTorch user has.

Cases: one tensor of 16M elements and the GPT-2-small parameter list (148 tensors, 124M
parameters), all-f32 and all-bf16 (parameters, gradients, optimizer state), on 1 and 2 threads
(``--cases 1M`` adds one tensor of 1M elements).
Implementations:

* ``lion_optim``  -- ``lion_optim.torch.Lion`` (this package)
* ``reference``   -- the reference class (google/automl ``lion_pytorch.py``): one ATen op per pass
* ``foreach``     -- a ``torch._foreach_*`` Lion (lucidrains' ``lion-pytorch`` foreach style)
* ``compiled``    -- the reference step of one tensor, ``torch.compile``d (dynamic shapes), looped
* ``adamw_fused`` -- ``torch.optim.AdamW(fused=True)`` (28 bytes per element; Lion moves 20)
* ``deepspeed``   -- ``deepspeed.ops.lion.DeepSpeedCPULion`` (ZeRO-Offload's; JIT-built with ninja,
  skipped if it cannot be built)
* ``lion_optim_q8`` -- ``lion_optim.torch.Lion(momentum_dtype="q8")``: 8-bit blockwise momentum
* ``bnb_lion8bit`` -- ``bitsandbytes.optim.Lion8bit`` (its CPU backend: the same 8-bit format;
  skipped if bitsandbytes is not installed)

Prints a table of medians (ns per element) and the ratios the issue targets, the per-step
Python-side overhead of ``lion_optim`` for 148 tensors, and per-call times at 4K elements;
writes all numbers as JSON (``--json``) and a plot (``--svg``, see ``plot.py``).

    python bench/bench.py --json target/python-bench.json --svg docs/python-bench.svg

The step's hyperparameters: lr 1e-4, betas (0.9, 0.99), weight decay 0.1 (AdamW: its defaults
with weight decay 0.1). Gradients are fixed random values; every implementation steps the same
tensors for a few warm-up steps (compilation, state allocation), then a median of timed steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.optim.optimizer import Optimizer

import lion_optim
from lion_optim import _lion_optim
from lion_optim.torch import Lion

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from plot import LABELS, write_svg  # noqa: E402 (every implementation's label)
from reference_lion import ReferenceLion  # noqa: E402 (google/automl lion_pytorch.py, as the tests use it)

LR, BETAS, WD = 1e-4, (0.9, 0.99), 0.1
N16M = 1 << 24


def gpt2_shapes() -> List[Tuple[int, ...]]:
    """GPT-2 small (124M): wte, wpe, 12 blocks of 12 tensors, ln_f: 148 tensors."""
    shapes: List[Tuple[int, ...]] = [(50257, 768), (1024, 768)]
    for _ in range(12):
        shapes += [
            (768,), (768,),  # ln_1
            (768, 2304), (2304,),  # attn.c_attn
            (768, 768), (768,),  # attn.c_proj
            (768,), (768,),  # ln_2
            (768, 3072), (3072,),  # mlp.c_fc
            (3072, 768), (768,),  # mlp.c_proj
        ]
    return shapes + [(768,), (768,)]  # ln_f


# ------------------------------------------------------------------------------------------
# The competitors


class ForeachLion(Optimizer):
    """The `torch._foreach_*` Lion of lucidrains' lion-pytorch (`foreach.py`)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            exp_avgs = []
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avgs.append(state["exp_avg"])
            torch._foreach_mul_(params, 1.0 - lr * wd)
            updates = [t.clone() for t in exp_avgs]
            torch._foreach_lerp_(updates, grads, 1.0 - beta1)
            torch._foreach_sign_(updates)
            torch._foreach_add_(params, updates, alpha=-lr)
            torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)


def _lion_step(p, g, m, lr: float, beta1: float, beta2: float, wd: float):
    p.mul_(1 - lr * wd)
    update = m * beta1 + g * (1 - beta1)
    p.add_(update.sign(), alpha=-lr)
    m.mul_(beta2).add_(g, alpha=1 - beta2)


_COMPILED: Dict[str, Callable] = {}


class CompiledLion(Optimizer):
    """The reference step of one tensor, `torch.compile`d once (dynamic shapes, flat views),
    called for every tensor (the tensor that `local` gives of a parameter and its gradient)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        if "fn" not in _COMPILED:
            _COMPILED["fn"] = torch.compile(_lion_step, dynamic=True)
        self.fn = _COMPILED["fn"]

    @staticmethod
    def local(t: torch.Tensor) -> torch.Tensor:
        return t

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, (beta1, beta2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                local = self.local(p)
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(local)
                if local.numel():
                    self.fn(local.view(-1), self.local(p.grad).view(-1), state["exp_avg"].view(-1), lr, beta1, beta2, wd)


def make(impl: str, params: List[torch.Tensor], dtype: torch.dtype, threads: int) -> Any:
    if impl == "lion_optim":
        return Lion(params, lr=LR, betas=BETAS, weight_decay=WD, num_threads=threads)
    if impl == "reference":
        return ReferenceLion(params, lr=LR, betas=BETAS, weight_decay=WD)
    if impl == "foreach":
        return ForeachLion(params, lr=LR, betas=BETAS, weight_decay=WD)
    if impl == "compiled":
        return CompiledLion(params, lr=LR, betas=BETAS, weight_decay=WD)
    if impl == "adamw_fused":
        return torch.optim.AdamW(params, lr=LR, weight_decay=WD, fused=True)
    if impl == "deepspeed":
        from deepspeed.ops.lion import DeepSpeedCPULion

        return DeepSpeedCPULion(params, lr=LR, betas=BETAS, weight_decay=WD,
                                fp32_optimizer_states=dtype == torch.float32)
    if impl == "lion_optim_q8":
        return Lion(params, lr=LR, betas=BETAS, weight_decay=WD, num_threads=threads, momentum_dtype="q8")
    if impl == "bnb_lion8bit":
        import bitsandbytes as bnb

        return bnb.optim.Lion8bit(params, lr=LR, betas=BETAS, weight_decay=WD)
    raise ValueError(impl)


IMPLS = ["lion_optim", "reference", "foreach", "compiled", "adamw_fused", "deepspeed", "lion_optim_q8", "bnb_lion8bit"]


# ------------------------------------------------------------------------------------------


def tensors(shapes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype))
        p.grad = (torch.randn(s, generator=gen) * 0.01).to(dtype)
        ps.append(p)
    return ps


def timed_steps(opt, warmup: int, reps: int, core: bool = False) -> Tuple[List[int], List[int]]:
    for _ in range(warmup):
        opt.step()
    times, cores = [], []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        opt.step()
        times.append(time.perf_counter_ns() - t0)
        if core:
            cores.append(_lion_optim._last_core_ns())
    return times, cores


def reps_for(impl: str, numel: int, quick: bool) -> Tuple[int, int]:
    if quick:
        return 1, 2
    slow = impl in ("reference", "foreach", "bnb_lion8bit")
    if numel > 50_000_000:
        return (1, 3) if slow else (2, 7)
    return (1, 5) if slow else (3, 15)


def run_case(name, shapes, dtype, threads, impls, quick, results, log):
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    torch.set_num_threads(threads)
    for impl in impls:
        gc.collect()
        try:
            ps = tensors(shapes, dtype)
            opt = make(impl, ps, dtype, threads)
            warmup, reps = reps_for(impl, numel, quick)
            t_start = time.perf_counter()
            times, cores = timed_steps(opt, warmup, reps, core=impl == "lion_optim")
        except Exception as e:  # e.g. DeepSpeed's JIT build failing
            log(f"  {impl:12s} n/a: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            results.append(dict(case=name, dtype=str(dtype).split(".")[1], threads=threads, impl=impl, error=str(e)[:300]))
            continue
        finally:
            opt = ps = None  # noqa: F841  (free before the next one)
        med = statistics.median(times)
        row = dict(case=name, dtype=str(dtype).split(".")[1], threads=threads, impl=impl, numel=numel,
                   tensors=len(shapes), ns_per_step=med, ns_per_element=med / numel, reps=reps,
                   min_ns=min(times), seconds=round(time.perf_counter() - t_start, 2))
        if cores:
            over = [t - c for t, c in zip(times, cores)]
            row["overhead_ns"] = statistics.median(over)
            row["core_ns"] = statistics.median(cores)
        results.append(row)
        extra = f"   (outside the core: {row['overhead_ns'] / 1e3:.1f} us)" if cores else ""
        log(f"  {impl:12s} {med / numel:7.3f} ns/element  {med / 1e6:9.3f} ms/step{extra}")


def overhead(threads_list, impls, quick, log) -> Dict[str, Any]:
    """Python-side cost of `lion_optim.torch.Lion.step()` for the 148 GPT-2 tensors with 1
    element each (all but the arithmetic), and per-call times at 4K elements."""
    out: Dict[str, Any] = {}
    reps = 200 if quick else 3000
    for threads in threads_list:
        torch.set_num_threads(threads)
        ps = tensors([(1,)] * 148, torch.float32)
        opt = Lion(ps, lr=LR, weight_decay=WD, num_threads=threads)
        times, cores = timed_steps(opt, 50, reps, core=True)
        out[f"148x1_step_us_t{threads}"] = statistics.median(times) / 1e3
        out[f"148x1_outside_core_us_t{threads}"] = statistics.median([t - c for t, c in zip(times, cores)]) / 1e3
        out[f"148x1_core_us_t{threads}"] = statistics.median(cores) / 1e3
        log(f"  148 tensors x 1 element, {threads} thread(s): step {out[f'148x1_step_us_t{threads}']:.1f} us, "
            f"outside the core {out[f'148x1_outside_core_us_t{threads}']:.1f} us, core {out[f'148x1_core_us_t{threads}']:.1f} us")
    torch.set_num_threads(1)
    for impl in [i for i in ["lion_optim", "compiled", "deepspeed", "reference", "adamw_fused"] if i in impls]:
        try:
            ps = tensors([(4096,)], torch.float32)
            opt = make(impl, ps, torch.float32, 1)
            times, _ = timed_steps(opt, 20, 300 if quick else 2000)
        except Exception as e:
            log(f"  4K {impl}: n/a ({type(e).__name__})")
            continue
        med = statistics.median(times)
        out[f"4k_{impl}_us"] = med / 1e3
        log(f"  4K elements, 1 thread, {impl:12s} {med / 1e3:7.2f} us/step  {med / 4096:6.2f} ns/element")
    return out


def machine() -> Dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                lion_optim=lion_optim.__version__, simd_path=lion_optim.simd_path(), load_before=load)


def ratios(results) -> List[Tuple[str, Optional[float], float]]:
    """(what, measured ratio, target) for the issue's targets, 1 thread."""
    def get(case, dtype, impl, threads=1):
        for r in results:
            if (r["case"], r["dtype"], r["impl"], r["threads"]) == (case, dtype, impl, threads) and "ns_per_step" in r:
                return r["ns_per_step"]
        return None

    out = []
    for what, case, dtype, other, target in [
        ("torch.compile Lion / lion_optim, 16M f32", "16M", "float32", "compiled", 1.2),
        ("torch.compile Lion / lion_optim, 16M bf16", "16M", "bfloat16", "compiled", 1.8),
        ("AdamW(fused=True) / lion_optim, 16M f32", "16M", "float32", "adamw_fused", 1.4),
        ("reference class / lion_optim, 16M f32", "16M", "float32", "reference", 10.0),
        ("reference class / lion_optim, GPT-2 f32", "gpt2", "float32", "reference", 10.0),
        ("bitsandbytes Lion8bit / lion_optim q8, 1M f32", "1M", "float32", "bnb_lion8bit", 20.0),
        ("bitsandbytes Lion8bit / lion_optim q8, 16M f32", "16M", "float32", "bnb_lion8bit", 20.0),
    ]:
        ours = "lion_optim_q8" if other == "bnb_lion8bit" else "lion_optim"
        a, b = get(case, dtype, other), get(case, dtype, ours)
        out.append((what, a / b if a and b else None, target))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--svg", default=None, help="write the plot here (see plot.py)")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repetitions (a smoke test)")
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--impls", default=",".join(IMPLS), help="implementations (default: all)")
    ap.add_argument("--cases", default="16M,gpt2", help="cases (default 16M,gpt2)")
    args = ap.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    impls = [i for i in args.impls.split(",") if i]
    if "deepspeed" in impls:
        # DeepSpeed's JIT build and load need ninja, which lives beside this python.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    info = machine()
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"# {info['cpu']}, {info['cores']} cores, torch {info['torch']}, lion_optim {info['lion_optim']} "
        f"({info['simd_path']}), load {info['load_before']}")
    cases = {
        "16M": [(N16M,)] if not args.quick else [(1 << 20,)],
        "1M": [(1 << 20,)] if not args.quick else [(1 << 16,)],
        "gpt2": gpt2_shapes() if not args.quick else [(s[0] // 16,) + s[1:] for s in gpt2_shapes()],
    }
    results: List[Dict[str, Any]] = []
    t0 = time.perf_counter()
    for case in args.cases.split(","):
        for dtype in (torch.float32, torch.bfloat16):
            for threads in threads_list:
                log(f"{case} {str(dtype).split('.')[1]}, {threads} thread(s):")
                run_case(case, cases[case], dtype, threads, impls, args.quick, results, log)
    log("overhead:")
    over = overhead(threads_list, impls, args.quick, log)
    info["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["seconds"] = round(time.perf_counter() - t0, 1)

    # The table: ns/element, and each implementation's time over lion_optim's.
    log("")
    log("| case | dtype | threads | " + " | ".join(LABELS[i] for i in impls) + " |")
    log("|---|---|---:|" + "---:|" * len(impls))
    for case in args.cases.split(","):
        for dtype in ("float32", "bfloat16"):
            for threads in threads_list:
                rows = {r["impl"]: r for r in results
                        if (r["case"], r["dtype"], r["threads"]) == (case, dtype, threads)}
                ours = rows.get("lion_optim", {}).get("ns_per_step")
                cells = []
                for i in impls:
                    r = rows.get(i, {})
                    if "ns_per_element" not in r:
                        cells.append("n/a")
                    elif i == "lion_optim" or not ours:
                        cells.append(f"**{r['ns_per_element']:.3f}**" if i == "lion_optim" else f"{r['ns_per_element']:.3f}")
                    else:
                        cells.append(f"{r['ns_per_element']:.3f} ({r['ns_per_step'] / ours:.2f}x)")
                log(f"| {case} | {dtype} | {threads} | " + " | ".join(cells) + " |")
    log("")
    log("Targets (1 thread, one run):")
    checks = ratios(results)
    for what, got, target in checks:
        verdict = "n/a" if got is None else ("met" if got >= target else "MISSED")
        log(f"  {what}: {got if got is None else round(got, 2)}x (target >= {target}x): {verdict}")
    o = over.get("148x1_outside_core_us_t1")
    gpt = [r for r in results if r.get("case") == "gpt2" and r.get("impl") == "lion_optim" and "overhead_ns" in r]
    for r in gpt:
        log(f"  outside the core, GPT-2 {r['dtype']} {r['threads']} thread(s): {r['overhead_ns'] / 1e3:.1f} us")
    if o is not None:
        log(f"  Python-side overhead, 148 tensors (step - core, 1-element tensors): {o:.1f} us (target <= 30 us): "
            f"{'met' if o <= 30 else 'MISSED'}")
    log(f"(load average before {info['load_before']}, after {info['load_after']}; {info['seconds']} s)")
    data = dict(machine=info, results=results, overhead=over,
                targets=[dict(what=w, ratio=g, target=t) for w, g, t in checks])
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        log(f"wrote {args.json}")
    if args.svg:
        write_svg(data, args.svg)
        log(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
