#!/usr/bin/env python3
"""Benchmark of the optimizer step under FSDP2: two processes on this machine (gloo), the
GPT-2-small parameter shapes (148 tensors, 124M parameters) sharded with
``torch.distributed.fsdp.fully_shard`` (one FSDP unit per block, ``Shard(0)``), one thread per
process, all-f32 and all-bf16. Only ``optimizer.step()`` is timed (the gradients are set once on
the sharded parameters): each rank steps its local shards, about 62M elements.

Implementations:

* ``lion_optim``  -- ``lion_optim.torch.Lion`` over the DTensor parameters (this package: each
  local shard stepped in place, with its global element offset)
* ``lion_optim_q8`` -- the same with 8-bit momentum for the matrices (rows of whole 256-element
  blocks: every one of GPT-2's), the vectors (biases, norms) in a param group of float momentum
* ``adamw_fused`` -- ``torch.optim.AdamW(fused=True)`` over the DTensor parameters
* ``compiled``    -- the reference Lion step of one tensor, ``torch.compile``d (dynamic shapes),
  called on every local shard (``torch.compile`` over the DTensor subclass itself is not what a
  CPU user would run; this is the compiled Lion's best case)

Prints a table of the median step time (the slower rank's) and ns per local element, and writes
the numbers as JSON (``--json``). On a shared, loaded machine the numbers are noisy: the load
average before and after is printed with them.

    python bench/bench_fsdp.py --json target/python-bench-fsdp.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import BETAS, LR, WD, CompiledLion, gpt2_shapes, machine  # noqa: E402

WORLD = 2
IMPLS = ["lion_optim", "lion_optim_q8", "adamw_fused", "compiled"]
LABELS = {
    "lion_optim": "lion_optim.torch.Lion",
    "lion_optim_q8": "lion_optim, 8-bit momentum",
    "adamw_fused": "AdamW(fused=True)",
    "compiled": "torch.compile Lion",
}


class Unit(torch.nn.Module):
    """A module holding parameters of the given shapes (one FSDP unit)."""

    def __init__(self, shapes, dtype, gen):
        super().__init__()
        self.ps = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype) * 0.02) for s in shapes
        )


class Gpt2Shapes(torch.nn.Module):
    def __init__(self, shapes, dtype):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = Unit(shapes[:2], dtype, gen)
        self.blocks = torch.nn.ModuleList(Unit(shapes[2 + 12 * i: 14 + 12 * i], dtype, gen) for i in range(12))
        self.final = Unit(shapes[-2:], dtype, gen)


class CompiledLocalLion(CompiledLion):
    """The compiled reference step (bench.py's ``compiled``) on every local shard."""

    @staticmethod
    def local(t):
        return t._local_tensor


def make(impl, params):
    if impl == "lion_optim":
        from lion_optim.torch import Lion

        return Lion(params, lr=LR, betas=BETAS, weight_decay=WD, num_threads=1)
    if impl == "lion_optim_q8":
        from lion_optim.torch import Lion

        def blocks(p):  # a matrix whose rows are whole 256-element blocks
            return p.dim() >= 2 and (p.numel() // p.shape[0]) % 256 == 0

        groups = [
            {"params": [p for p in params if blocks(p)], "momentum_dtype": "q8"},
            {"params": [p for p in params if not blocks(p)]},
        ]
        return Lion(groups, lr=LR, betas=BETAS, weight_decay=WD, num_threads=1)
    if impl == "adamw_fused":
        return torch.optim.AdamW(params, lr=LR, weight_decay=WD, fused=True)
    if impl == "compiled":
        return CompiledLocalLion(params, lr=LR, betas=BETAS, weight_decay=WD)
    raise ValueError(impl)


def worker(rank, store, args, out_path):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=1800))
    mesh = init_device_mesh("cpu", (WORLD,))
    shapes = gpt2_shapes()
    if args.quick:
        shapes = [(s[0] // 16,) + s[1:] for s in shapes]
    rows: List[Dict[str, Any]] = []
    for dtype in (torch.float32, torch.bfloat16):
        for impl in args.impls:
            model = Gpt2Shapes(shapes, dtype)
            for b in model.blocks:
                fully_shard(b, mesh=mesh)
            fully_shard(model, mesh=mesh)
            params = list(model.parameters())
            gen = torch.Generator().manual_seed(1 + rank)
            for p in params:
                g = (torch.randn(p._local_tensor.shape, generator=gen) * 0.01).to(dtype)
                p.grad = DTensor.from_local(g, mesh, p.placements, shape=p.shape, stride=p.stride())
            local = sum(p._local_tensor.numel() for p in params)
            row = dict(impl=impl, dtype=str(dtype).split(".")[1], local_elements=local)
            try:
                opt = make(impl, params)
                t0 = time.perf_counter()
                for _ in range(args.warmup):
                    opt.step()
                row["warmup_s"] = round(time.perf_counter() - t0, 2)
                times = []
                for _ in range(args.reps):
                    dist.barrier()
                    t = time.perf_counter_ns()
                    opt.step()
                    times.append(time.perf_counter_ns() - t)
                row["times_ns"] = times
            except Exception as e:  # an implementation that does not run here
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            # Both ranks agree on success before the next case (no collective left half-run).
            ok = torch.tensor([0 if "error" in row else 1])
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            rows.append(row)
            del model, params, opt
    gathered: List[Any] = [None] * WORLD
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(gathered, f)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="1/16 of the shapes, few repetitions (a smoke test)")
    ap.add_argument("--impls", default=",".join(IMPLS), help="implementations (default: all)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    args.impls = [i for i in args.impls.split(",") if i]
    if args.quick:
        args.reps, args.warmup = 2, 1
    info = machine()
    print(f"# {info['cpu']}, {info['cores']} cores, torch {info['torch']}, lion_optim {info['lion_optim']} "
          f"({info['simd_path']}), load {info['load_before']}; FSDP2 over {WORLD} processes (gloo), "
          f"1 thread each", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        mp.start_processes(worker, args=(os.path.join(tmp, "store"), args, out), nprocs=WORLD, start_method="spawn")
        with open(out) as f:
            per_rank = json.load(f)
    info["load_after"] = os.getloadavg()
    info["seconds"] = round(time.perf_counter() - t0, 1)
    results = []
    for rows in zip(*per_rank):
        r0 = rows[0]
        row = dict(impl=r0["impl"], dtype=r0["dtype"], local_elements=[r["local_elements"] for r in rows])
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            row["error"] = errors[0]
        else:
            # A step takes as long as its slower rank.
            slowest = [max(ts) for ts in zip(*(r["times_ns"] for r in rows))]
            row["ns_per_step"] = statistics.median(slowest)
            row["ns_per_local_element"] = row["ns_per_step"] / max(row["local_elements"])
            row["per_rank_median_ns"] = [statistics.median(r["times_ns"]) for r in rows]
        results.append(row)
    print("\n| dtype | " + " | ".join(LABELS[i] for i in args.impls) + " |")
    print("|---|" + "---:|" * len(args.impls))
    for dtype in ("float32", "bfloat16"):
        rows = {r["impl"]: r for r in results if r["dtype"] == dtype}
        ours = rows.get("lion_optim", {}).get("ns_per_step")
        cells = []
        for i in args.impls:
            r = rows.get(i, {})
            if "ns_per_step" not in r:
                cells.append(f"n/a ({r.get('error', 'not run')[:60]})")
            elif i == "lion_optim" or not ours:
                cells.append(f"**{r['ns_per_step'] / 1e6:.1f} ms** ({r['ns_per_local_element']:.2f} ns/el)")
            else:
                cells.append(f"{r['ns_per_step'] / 1e6:.1f} ms ({r['ns_per_step'] / ours:.2f}x)")
        print(f"| {dtype} | " + " | ".join(cells) + " |")
    print(f"(median of {args.reps} steps, the slower rank's; load average before {info['load_before']}, "
          f"after {info['load_after']}; {info['seconds']} s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, world=WORLD, results=results), f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
