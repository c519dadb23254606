"""FSDP2 and DTensor parameters under torch.distributed (two processes on this machine, gloo, a
FileStore, CPU only):

* `fully_shard` (with and without `CPUOffloadPolicy(pin_memory=False)`) of a small transformer,
  `lion_optim.torch.Lion` over its DTensor parameters: after every step the parameters are
  exactly those of one process stepping the unsharded model with the same optimizer -- f32, and
  bf16 with stochastic rounding, plain and cautious (the counts all-reduced over the mesh), with
  some parameters sharded on dimension 1 (`shard_placement_fn`: the local shard lies in the
  whole tensor in many runs). The optimizer state goes through the distributed checkpoint
  helpers (`get_optimizer_state_dict` / `set_optimizer_state_dict`, sharded and full) into a
  fresh optimizer, which continues exactly;
* 8-bit momentum of FSDP2-sharded matrices (shards of whole 256-element blocks): one process's
  parameters, codes and scales, with stochastic rounding; its state resumes through the
  distributed checkpoint helpers and from one process's state dict; other layouts refused;
* `distribute_tensor` parameters placed `Shard(0)`, `Shard(1)`, `Shard(2)` and `Replicate`, with
  uneven shards, plain and cautious; `skip_non_finite` skipping on every rank when one rank's
  gradient is not finite; refusals (a `Partial` parameter, a gradient placed otherwise than its
  parameter or not a DTensor, a DTensor given to the functional API).

What does not run without a GPU: `CPUOffloadPolicy()` with its default `pin_memory=True` (pinning
needs the CUDA driver: "RuntimeError: Found no NVIDIA driver on your system"); everything else
of FSDP2 runs on the CPU with gloo.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

import lion_optim
from lion_optim.torch import Lion
from ranks import WORLD, run_ranks

STEPS = 3


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(3 * d, d)

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.proj(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class Transformer(torch.nn.Module):
    """A small GPT: odd sizes (67 tokens, 13 positions) so that shards are uneven."""

    def __init__(self, vocab=67, d=24, heads=2, layers=2, ctx=13):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(ctx, d)
        self.blocks = torch.nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def _batches(n, vocab=67, ctx=13):
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(0, vocab, (4, ctx + 1), generator=gen) for _ in range(n)]


def _loss(model, batch):
    logits = model(batch[:, :-1])
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def _full(t):
    """A parameter or state tensor as a whole plain tensor (gathered if a DTensor)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _same(a, b, what):
    a, b = _full(a).detach(), _full(b).detach()
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
    ints = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
    same = torch.equal(a.contiguous().view(ints[a.dtype]), b.contiguous().view(ints[b.dtype]))
    assert same, f"{what}: {int((a != b).sum())} of {a.numel()} elements differ"


def _check_fsdp(rank, dtype, offload, cautious, inner_shards):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import Shard

    what = f"FSDP2 {dtype} offload={offload} cautious={cautious} inner_shards={inner_shards}"
    mesh = init_device_mesh("cpu", (WORLD,))
    torch.manual_seed(0)
    single = Transformer().to(dtype)
    model = copy.deepcopy(single)
    kw = dict(mesh=mesh)
    if offload:
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=False)
    # Gradients reduced in f32: the mean of the two ranks' equal gradients is then exact.
    kw["mp_policy"] = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    if inner_shards:
        # Matrices sharded on dimension 1: the local shard lies in the whole tensor in runs.
        kw["shard_placement_fn"] = lambda p: Shard(1) if p.ndim == 2 and p.shape[1] % 3 == 0 else None

    def shard(m):
        for b in m.blocks:
            fully_shard(b, **kw)
        return fully_shard(m, **kw)

    shard(model)
    params = list(model.parameters())
    assert all(type(p).__name__ == "DTensor" for p in params)
    if inner_shards:
        assert any(p.placements[0].dim == 1 for p in params)
    opts = dict(lr=3e-3, weight_decay=0.1, betas=(0.9, 0.99), cautious=cautious, num_threads=1)
    if dtype == torch.bfloat16:
        opts.update(stochastic_rounding=True, seed=17)
    opt = Lion(params, **opts)
    ref = Lion(single.parameters(), **opts)
    batches = _batches(STEPS + 1)
    for step, batch in enumerate(batches[:STEPS]):
        # The same batch on every rank: the reduced gradient is the single process's.
        for m in (model, single):
            m.zero_grad(set_to_none=True)
            _loss(m, batch).backward()
        for i, (p, q) in enumerate(zip(params, single.parameters())):
            _same(p.grad, q.grad, f"{what}: step {step}: the gradient of parameter {i}")
        opt.step()
        ref.step()
        for i, (p, q) in enumerate(zip(params, single.parameters())):
            _same(p, q, f"{what}: step {step}: parameter {i}")
    # The state through the distributed checkpoint helpers: sharded (DTensors), and full.
    sharded = get_optimizer_state_dict(model, opt)
    some = next(iter(sharded["state"].values()))
    assert type(some["exp_avg"]).__name__ == "DTensor"
    full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    mine = ref.state_dict()["state"]
    names = [n for n, _ in single.named_parameters()]
    for k, name in enumerate(names):
        _same(full["state"][name]["exp_avg"], mine[k]["exp_avg"], f"{what}: exp_avg of {name}")
        assert int(full["state"][name]["step"]) == int(mine[k]["step"]) == STEPS
    sharded = copy.deepcopy(sharded)  # (the live state: stepping would change it)
    for options, sd in ((None, sharded), (StateDictOptions(full_state_dict=True), full)):
        model2 = shard(copy.deepcopy(single))  # (the same parameters as `model`)
        opt2 = Lion(model2.parameters(), **dict(opts, lr=1.0))  # (lr comes from the state)
        set_optimizer_state_dict(model2, opt2, optim_state_dict=sd, options=options)
        single2 = copy.deepcopy(single)
        ref2 = Lion(single2.parameters(), **opts)
        ref2.load_state_dict(copy.deepcopy(ref.state_dict()))
        for m in (model2, single2):
            m.zero_grad(set_to_none=True)
            _loss(m, batches[STEPS]).backward()
        opt2.step()
        ref2.step()
        for i, (p, q) in enumerate(zip(model2.parameters(), single2.parameters())):
            _same(p, q, f"{what}: resumed ({'full' if options else 'sharded'} state dict): parameter {i}")
    dist.barrier()


def _check_dtensors(rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))
    gen = torch.Generator().manual_seed(9)
    shapes = [((7, 5), Shard(0)), ((6, 9), Shard(1)), ((3, 4, 5), Shard(2)), ((11,), Replicate()),
              ((1, 13), Shard(0))]  # one rank has nothing of the last
    wholes = [torch.randn(s, generator=gen).bfloat16() for s, _ in shapes]
    for cautious in (False, True):
        ps = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [pl])) for w, (_, pl) in zip(wholes, shapes)]
        qs = [torch.nn.Parameter(w.clone()) for w in wholes]
        kw = dict(lr=1e-2, weight_decay=0.1, stochastic_rounding=True, seed=5, cautious=cautious,
                  momentum_dtype=torch.bfloat16, num_threads=1)
        opt, ref = Lion(ps, **kw), Lion(qs, **kw)
        for step in range(3):
            for p, q in zip(ps, qs):
                g = torch.randn(q.shape, generator=gen).bfloat16()  # the same on every rank
                q.grad = g
                p.grad = distribute_tensor(g, mesh, p.placements)
            opt.step()
            ref.step()
            for i, (p, q) in enumerate(zip(ps, qs)):
                _same(p, q, f"DTensor cautious={cautious}: step {step}: parameter {i} {p.placements}")
                _same(opt.state[p]["exp_avg"], ref.state[q]["exp_avg"], f"DTensor: step {step}: exp_avg {i}")
    # skip_non_finite: an inf in one rank's shard skips the step on every rank.
    p = torch.nn.Parameter(distribute_tensor(torch.ones(8, 3), mesh, [Shard(0)]))
    opt = Lion([p], lr=0.1, skip_non_finite=True)
    g = torch.ones(8, 3)
    g[7, 2] = float("inf")  # on rank 1 only
    p.grad = distribute_tensor(g, mesh, [Shard(0)])
    opt.step()
    assert opt.last_step_skipped and opt.skipped_steps == 1, f"rank {rank}: not skipped"
    assert torch.equal(p.to_local(), torch.ones(4, 3))
    p.grad = distribute_tensor(torch.ones(8, 3), mesh, [Shard(0)])
    opt.step()
    assert not opt.last_step_skipped and int(opt.state[p]["step"]) == 1
    # What is refused, naming the parameter: placements other than Shard and Replicate (at
    # construction), a gradient placed otherwise than its parameter, a DTensor given to the
    # functional API (it has no memory of its own).
    partial = torch.nn.Parameter(DTensor.from_local(torch.ones(4), mesh, [Partial()]))
    with pytest.raises(ValueError, match=r"^parameter 0: a DTensor with placements \(Partial\(sum\),\); "
                       r"lion_optim.torch.Lion steps DTensor parameters placed with Shard and Replicate$"):
        Lion([partial], lr=0.1)
    p.grad = distribute_tensor(torch.ones(8, 3), mesh, [Replicate()])
    with pytest.raises(ValueError, match=r"^parameter 0: its gradient is a DTensor with placements \(Replicate\(\),\), "
                       r"the parameter \(Shard\(dim=0\),\)"):
        opt.step()
    p.grad = torch.ones(8, 3)
    with pytest.raises(TypeError, match=r"^parameter 0: its gradient is a plain tensor, the parameter a DTensor"):
        opt.step()
    with pytest.raises(TypeError, match=r"^params\[0\] is a DTensor: step its local shard"):
        lion_optim.step(p, torch.ones(8, 3), torch.zeros(8, 3))
    assert int(opt.state[p]["step"]) == 1
    dist.barrier()


def _check_fsdp_q8(rank):
    """8-bit momentum of FSDP2-sharded matrices whose rows hold multiples of 256 elements (every
    shard is whole blocks of the whole tensor): the parameters, codes and scales of one process,
    with stochastic rounding; its state through the distributed checkpoint helpers (sharded and
    full) resumes exactly; layouts whose shards split blocks are refused on every rank."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))
    torch.manual_seed(1)
    # The second weight has 3 rows of 2 blocks: its scales, a row per row, split as its rows (2
    # and 1), which one scale per block (3 and 3) would not.
    single = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 3))
    model = fully_shard(copy.deepcopy(single), mesh=mesh)

    def groups(m):
        ps = list(m.parameters())  # weights 8-bit (one or two blocks per row), biases f32
        return [{"params": [ps[0], ps[2]], "momentum_dtype": "q8"}, {"params": [ps[1], ps[3]]}]

    opts = dict(lr=3e-3, weight_decay=0.1, stochastic_rounding=True, seed=23, num_threads=1)
    opt, ref = Lion(groups(model), **opts), Lion(groups(single), **opts)
    gen = torch.Generator().manual_seed(4)
    xs = [torch.randn(8, 256, generator=gen) for _ in range(STEPS + 1)]
    flat = lambda t: _full(t).reshape(-1)  # noqa: E731  (scales: a row per row, or one per block)

    def step(m, o, x):
        m.zero_grad(set_to_none=True)
        m(x).pow(2).mean().backward()
        o.step()

    for k, x in enumerate(xs[:STEPS]):
        step(model, opt, x)
        step(single, ref, x)
        for i, (p, q) in enumerate(zip(model.parameters(), single.parameters())):
            _same(p, q, f"FSDP2 q8: step {k}: parameter {i}")
    for i, (p, q) in enumerate(zip(model.parameters(), single.parameters())):
        if i in (0, 2):
            s, r = opt.state[p], ref.state[q]
            assert type(s["exp_avg_codes"]).__name__ == "DTensor"
            assert torch.equal(_full(s["exp_avg_codes"]), r["exp_avg_codes"]), f"codes of parameter {i}"
            assert torch.equal(flat(s["exp_avg_absmax"]), r["exp_avg_absmax"]), f"scales of parameter {i}"
            assert tuple(s["exp_avg_absmax"].shape) == (q.shape[0], q.shape[1] // 256)
            assert (r["exp_avg_codes"] != 127).any()
    sharded = copy.deepcopy(get_optimizer_state_dict(model, opt))
    full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    mine = ref.state_dict()["state"]
    names = [n for n, _ in single.named_parameters()]
    for k, sid in ((0, 0), (2, 1)):  # (the state dict's ids follow the groups: weights first)
        for key in ("exp_avg_codes", "exp_avg_absmax"):
            assert torch.equal(flat(full["state"][names[k]][key]), flat(mine[sid][key])), key
    for options, sd in ((None, sharded), (StateDictOptions(full_state_dict=True), full)):
        model2 = fully_shard(copy.deepcopy(single), mesh=mesh)
        model2.load_state_dict(model.state_dict())
        opt2 = Lion(groups(model2), **dict(opts, lr=1.0))  # (lr comes from the state)
        set_optimizer_state_dict(model2, opt2, optim_state_dict=sd, options=options)
        single2 = copy.deepcopy(single)
        ref2 = Lion(groups(single2), **opts)
        ref2.load_state_dict(copy.deepcopy(ref.state_dict()))
        step(model2, opt2, xs[STEPS])
        step(single2, ref2, xs[STEPS])
        for i, (p, q) in enumerate(zip(model2.parameters(), single2.parameters())):
            _same(p, q, f"FSDP2 q8: resumed ({'full' if options else 'sharded'} state dict): parameter {i}")
    # The whole tensors of one process's state dict load into the sharded optimizer (each rank
    # takes its part).
    opt4 = Lion(groups(model), **opts)
    opt4.load_state_dict(copy.deepcopy(ref.state_dict()))
    for i, (p, q) in enumerate(zip(model.parameters(), single.parameters())):
        for key in ("exp_avg_codes", "exp_avg_absmax") if i in (0, 2) else ("exp_avg",):
            got = opt4.state[p][key]
            assert type(got).__name__ == "DTensor" and torch.equal(flat(got), flat(ref.state[q][key])), f"{key} of {i}"
    # The gathered state dict loads into one process's optimizer (scales a row per row).
    single5 = copy.deepcopy(single)
    opt5 = Lion(groups(single5), **opts)
    opt5.load_state_dict(copy.deepcopy(full))
    for k in (0, 2):
        p5, q = list(single5.parameters())[k], list(single.parameters())[k]
        for key in ("exp_avg_codes", "exp_avg_absmax"):
            assert torch.equal(opt5.state[p5][key], ref.state[q][key]), f"{key} of parameter {k}"
    # Refused on every rank, naming the parameter: shards that split blocks, inner shards.
    for shape, pl, why in (((256,), Shard(0), r"elements \[128, 256\) of 256"),
                           ((6, 512), Shard(1), r"needs Shard\(0\) and Replicate placements")):
        p = torch.nn.Parameter(distribute_tensor(torch.zeros(shape), mesh, [pl]))
        with pytest.raises(ValueError, match=r"^parameter 0: 8-bit momentum .*" + why):
            Lion([p], momentum_dtype="q8")
        opt3 = Lion([p])
        with pytest.raises(ValueError, match=r"^parameter 1 \(group 1\): 8-bit momentum"):
            opt3.add_param_group({"params": [torch.nn.Parameter(distribute_tensor(torch.zeros(shape), mesh, [pl]))],
                                  "momentum_dtype": "q8"})
    dist.barrier()


def _checks(rank, tmp):
    _check_dtensors(rank)
    _check_fsdp_q8(rank)
    _check_fsdp(rank, torch.float32, offload=False, cautious=False, inner_shards=False)
    _check_fsdp(rank, torch.float32, offload=True, cautious=True, inner_shards=True)
    _check_fsdp(rank, torch.bfloat16, offload=True, cautious=False, inner_shards=False)
    _check_fsdp(rank, torch.bfloat16, offload=False, cautious=True, inner_shards=True)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_fsdp2_and_dtensor_two_processes(tmp_path):
    run_ranks(_checks, tmp_path, timeout_s=300, collective_timeout_s=120)
