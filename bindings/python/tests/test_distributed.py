"""Under torch.distributed (two processes on this machine, gloo, a FileStore):

* `ZeroRedundancyOptimizer(..., optimizer_class=lion_optim.torch.Lion)` gives exactly the
  parameters of one process (f32; bf16 with stochastic rounding, the parameters' streams fixed by
  `assign_streams`; with `parameters_as_bucket_view`), and its consolidated state dict is the
  single process's and resumes exactly;
* a flat bf16 tensor sharded across the ranks at offsets that are not multiples of any vector
  width, stepped with stochastic rounding through the functional API with its global offsets,
  is exactly the bytes of the unsharded step -- also with the cautious variant, its counts
  all-reduced.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist

import lion_optim
from lion_optim.torch import Lion, assign_streams
from ranks import WORLD, run_ranks


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(37, 53), torch.nn.ReLU(), torch.nn.Linear(53, 11), torch.nn.LayerNorm(11)
    ).to(dtype)


def _batches(steps, dtype):
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(16, 37, generator=gen).to(dtype) for _ in range(steps)]


def _backward(model, x):
    model.zero_grad(set_to_none=True)
    model(x).float().pow(2).mean().backward()


def _check_zero(rank, tmp, dtype, sr, bucket_view):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = _model(dtype)
    single = copy.deepcopy(model)
    if sr:
        assign_streams(model.parameters())
        assign_streams(single.parameters())
    kw = dict(lr=3e-3, weight_decay=0.1, stochastic_rounding=sr, seed=11, num_threads=1)
    if dtype == torch.bfloat16:
        kw["momentum_dtype"] = torch.float32
    zero = ZeroRedundancyOptimizer(
        model.parameters(), optimizer_class=Lion, parameters_as_bucket_view=bucket_view, **kw
    )
    ref = Lion(single.parameters(), **kw)
    # Each rank's local optimizer holds only some of the parameters.
    local = sum(len(g["params"]) for g in zero.optim.param_groups)
    assert 0 < local < len(list(model.parameters()))
    what = f"{dtype} sr={sr} bucket_view={bucket_view}"
    batches = _batches(5, dtype)
    for step, x in enumerate(batches[:4]):
        _backward(model, x)  # the same batch on every rank: the same gradients, no all-reduce
        _backward(single, x)
        zero.step()
        ref.step()
        for i, (p, q) in enumerate(zip(model.parameters(), single.parameters())):
            assert torch.equal(p, q), f"{what}: step {step}, parameter {i} differs from one process"
    zero.consolidate_state_dict(to=0)
    path = os.path.join(tmp, f"zero-{dtype}-{sr}-{bucket_view}.pt")
    if rank == 0:
        sd = zero.state_dict()
        mine = ref.state_dict()
        assert sorted(sd["state"]) == sorted(mine["state"])
        for k, v in mine["state"].items():
            assert torch.equal(sd["state"][k]["exp_avg"], v["exp_avg"]), f"{what}: state {k}"
            assert sd["state"][k]["exp_avg"].dtype == v["exp_avg"].dtype
            assert int(sd["state"][k]["step"]) == int(v["step"]) == 4
        torch.save(sd, path)
    dist.barrier()
    # Resume: a fresh ZeRO optimizer loads the consolidated state and continues exactly.
    zero2 = ZeroRedundancyOptimizer(
        model.parameters(), optimizer_class=Lion, parameters_as_bucket_view=bucket_view, **dict(kw, lr=1.0)
    )
    zero2.load_state_dict(torch.load(path, weights_only=False))
    _backward(model, batches[4])
    _backward(single, batches[4])
    zero2.step()
    ref.step()
    for i, (p, q) in enumerate(zip(model.parameters(), single.parameters())):
        assert torch.equal(p, q), f"{what}: after resuming, parameter {i} differs"
    dist.barrier()


def _gather(t, rank):
    """All shards of a 1-D 16-bit tensor, in rank order (as int32: what gloo gathers)."""
    wide = t.view(torch.int16).to(torch.int32)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(WORLD)]
    dist.all_gather(sizes, torch.tensor([wide.numel()]))
    top = int(max(s.item() for s in sizes))
    padded = torch.zeros(top, dtype=torch.int32)
    padded[: wide.numel()] = wide
    parts = [torch.zeros(top, dtype=torch.int32) for _ in range(WORLD)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).to(torch.int16)


def _check_flat_shards(rank, cautious):
    n, cut = 100_003, 49_999  # odd lengths and offsets: no vector width divides them
    gen = torch.Generator().manual_seed(5)
    whole_p = torch.randn(n, generator=gen).bfloat16()
    whole_m = (torch.randn(n, generator=gen) * 0.01).bfloat16()
    lo, hi = (0, cut) if rank == 0 else (cut, n)
    shard_p, shard_m = whole_p[lo:hi].clone(), whole_m[lo:hi].clone()
    kw = dict(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99), stochastic_rounding=True, seed=99, cautious=cautious)
    for step in range(1, 4):
        g = (torch.randn(n, generator=gen) * 0.01).bfloat16()  # the same on every rank
        lion_optim.step(whole_p, g, whole_m, step=step, streams=7, num_threads=1, **kw)
        extra = {}
        if cautious:
            count = lion_optim.cautious_count(g[lo:hi], shard_m, betas=kw["betas"])
            total = torch.tensor([count], dtype=torch.int64)
            dist.all_reduce(total)
            extra["cautious_totals"] = (int(total.item()), n)
        lion_optim.step(shard_p, g[lo:hi], shard_m, step=step, offsets=lo, streams=7, num_threads=1, **kw, **extra)
    assert torch.equal(shard_p.view(torch.int16), whole_p[lo:hi].view(torch.int16))
    gathered_p, gathered_m = _gather(shard_p, rank), _gather(shard_m, rank)
    assert torch.equal(gathered_p, whole_p.view(torch.int16)), f"cautious={cautious}: parameters differ"
    assert torch.equal(gathered_m, whole_m.view(torch.int16)), f"cautious={cautious}: momentum differs"


def _checks(rank, tmp):
    _check_zero(rank, tmp, torch.float32, sr=False, bucket_view=False)
    _check_zero(rank, tmp, torch.float32, sr=False, bucket_view=True)
    _check_zero(rank, tmp, torch.bfloat16, sr=True, bucket_view=False)
    _check_flat_shards(rank, cautious=False)
    _check_flat_shards(rank, cautious=True)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_two_processes(tmp_path):
    run_ranks(_checks, tmp_path, timeout_s=150)
