"""The package is bit-identical to the crate's scalar reference (the scalar backend,
`Backend::Scalar`, through the `_reference_step` test hook), for all 27 dtype combinations and
every option."""

from __future__ import annotations

import pytest
import torch

import lion_optim
from lion_optim import _lion_optim

from conftest import DTYPE_COMBOS, SIZES, assert_same, needs_hooks, special_values

K = lion_optim.STREAM_MULTIPLIER
MASK = (1 << 64) - 1

OPTIONS = {
    "plain": dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0),
    "decay": dict(lr=0.03, betas=(0.9, 0.99), weight_decay=0.1),
    "maximize_unscale": dict(lr=2e-3, betas=(0.95, 0.98), weight_decay=0.01, maximize=True, grad_unscale=0.125),
    "fully_decoupled": dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.2, max_lr=0.1),
    "stochastic": dict(lr=5e-3, betas=(0.9, 0.99), weight_decay=0.05, stochastic_rounding=True, seed=12345),
    "cautious": dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.0, cautious=True),
    "everything": dict(
        lr=7e-3, betas=(0.9, 0.999), weight_decay=0.1, maximize=True, grad_unscale=0.5,
        max_lr=0.01, stochastic_rounding=True, seed=2**63 + 5, cautious=True,
    ),
}


def reference(p, g, m, opts, step, offset, stream):
    """One reference step on copies; returns (params, momentum)."""
    p, m = p.clone(), m.clone()
    group = dict(opts)
    if opts.get("stochastic_rounding"):
        # The hook uses the seed as it is: mix in the stream as the functional API does.
        group["seed"] = opts["seed"] ^ ((stream * K) & MASK)
    _lion_optim._reference_step(p, g, m, group, step=step, offset=offset)
    return p, m


def inputs(n, dtypes, seed):
    gen = torch.Generator().manual_seed(seed)
    pd, gd, md = dtypes
    p = (torch.randn(n, generator=gen) * 3).to(pd)
    g = special_values(n, gd, gen, scale=0.01)
    m = special_values(n, md, gen, scale=0.01)
    return p, g, m


@needs_hooks
@pytest.mark.parametrize("opt_name", list(OPTIONS))
@pytest.mark.parametrize("dtypes", DTYPE_COMBOS, ids=lambda d: "-".join(str(t).split(".")[1] for t in d))
def test_functional_matches_reference(dtypes, opt_name):
    opts = OPTIONS[opt_name]
    for i, n in enumerate(SIZES):
        p, g, m = inputs(n, dtypes, seed=1000 + i)
        step, offset, stream = 3 + i, 5 * i, 11 + i
        ep, em = reference(p, g, m, opts, step, offset, stream)
        assert lion_optim.step(p, g, m, step=step, offsets=offset, streams=stream, num_threads=1, **opts)
        assert_same(p, ep, f"{opt_name} n={n} params")
        assert_same(m, em, f"{opt_name} n={n} momentum")
@needs_hooks
def test_many_tensors_in_one_call_match_reference():
    """One call over tensors of every dtype combination and size: each tensor gets its own
    random stream (its position), and the result is each tensor's reference step."""
    opts = OPTIONS["everything"]
    ps, gs, ms, expected = [], [], [], []
    for i, dtypes in enumerate(DTYPE_COMBOS):
        n = SIZES[i % len(SIZES)] + i
        p, g, m = inputs(n, dtypes, seed=i)
        expected.append(reference(p, g, m, opts, step=9, offset=0, stream=i))
        ps.append(p), gs.append(g), ms.append(m)
    assert lion_optim.step(ps, gs, ms, step=9, **opts)
    for i, (p, m) in enumerate(zip(ps, ms)):
        assert_same(p, expected[i][0], f"tensor {i} params")
        assert_same(m, expected[i][1], f"tensor {i} momentum")


@needs_hooks
@pytest.mark.parametrize("dtypes", [(torch.float32,) * 3, (torch.bfloat16,) * 3, (torch.bfloat16, torch.bfloat16, torch.float32)])
def test_threads_are_bit_identical(dtypes):
    """Above the parallel threshold the step is spread over threads: 1, 2 and 3 threads give
    the reference's bytes (stochastic rounding and cautious counts included)."""
    n = lion_optim._lion_optim.PAR_THRESHOLD + 12_345
    opts = OPTIONS["everything"]
    base = inputs(n, dtypes, seed=77)
    small = inputs(999, dtypes, seed=78)
    ep, em = reference(*base, opts, step=4, offset=0, stream=0)
    for threads in (1, 2, 3):
        p, g, m = (t.clone() for t in base)
        q, h, k = (t.clone() for t in small)
        lion_optim.step([p, q], [g, h], [m, k], step=4, num_threads=threads, **opts)
        assert_same(p, ep, f"{threads} threads params")
        assert_same(m, em, f"{threads} threads momentum")
def test_sharded_offsets_give_the_whole_tensor():
    """A tensor stepped in pieces at odd offsets (one call, the same stream) is the whole
    tensor's step, with stochastic rounding and the cautious variant."""
    n = 10_007
    opts = dict(OPTIONS["stochastic"], cautious=True)
    p, g, m = inputs(n, (torch.bfloat16,) * 3, seed=5)
    ep, em = p.clone(), m.clone()
    lion_optim.step(ep, g, em, step=2, streams=3, **opts)
    cuts = [0, 1, 333, 4097, 9999, n]
    pieces = [(a, b) for a, b in zip(cuts, cuts[1:])]
    total = sum(
        lion_optim.cautious_count(g[a:b], m[a:b], betas=opts["betas"]) for a, b in pieces
    )
    assert total == lion_optim.cautious_count(g, m, betas=opts["betas"])
    lion_optim.step(
        [p[a:b] for a, b in pieces], [g[a:b] for a, b in pieces], [m[a:b] for a, b in pieces],
        step=2, offsets=[a for a, _ in pieces], streams=[3] * len(pieces),
        cautious_totals=[(total, n)] * len(pieces), **opts,
    )
    assert_same(p, ep, "params")
    assert_same(m, em, "momentum")


def test_skip_non_finite_writes_nothing():
    p, g, m = inputs(100, (torch.float32,) * 3, seed=1)
    g[50] = float("inf")
    before = (p.clone(), m.clone())
    assert lion_optim.step(p, g, m, lr=0.1, skip_non_finite=True) is False
    assert_same(p, before[0]), assert_same(m, before[1])
    # Unscaling happens first: 3e38 * 16 overflows.
    g2 = torch.full((10,), 3e38)
    p2, m2 = torch.ones(10), torch.zeros(10)
    assert lion_optim.step(p2, g2, m2, grad_unscale=16.0, skip_non_finite=True) is False
    assert lion_optim.step(p2, g2, m2, grad_unscale=0.5, skip_non_finite=True) is True
@needs_hooks
def test_numpy_arrays():
    np = pytest.importorskip("numpy")
    gen = np.random.default_rng(0)
    for dt in (np.float32, np.float16):
        p = gen.standard_normal(1001).astype(dt)
        g = gen.standard_normal(1001).astype(dt)
        m = np.zeros(1001, dt)
        tp, tg, tm = torch.from_numpy(p.copy()), torch.from_numpy(g.copy()), torch.from_numpy(m.copy())
        lion_optim.step(p, g, m, lr=0.01, weight_decay=0.1)
        ep, em = reference(tp, tg, tm, OPTIONS["decay"] | {"lr": 0.01}, 0, 0, 0)
        assert_same(torch.from_numpy(p), ep)
        assert_same(torch.from_numpy(m), em)
    # 2-D arrays, a gradient of the same shape, a flat momentum buffer of the same size.
    p = np.ones((3, 5), np.float32)
    lion_optim.step(p, np.ones((3, 5), np.float32), np.zeros(15, np.float32), lr=0.5)
    assert (p == 0.5).all()
@needs_hooks
def test_ml_dtypes_bfloat16():
    np = pytest.importorskip("numpy")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    gen = np.random.default_rng(1)
    p = gen.standard_normal(777).astype(bf16)
    g = gen.standard_normal(777).astype(np.float32)
    m = np.zeros(777, bf16)
    tp = torch.from_numpy(p.view(np.int16).copy()).view(torch.bfloat16)
    tg = torch.from_numpy(g.copy())
    tm = torch.zeros(777, dtype=torch.bfloat16)
    lion_optim.step(p, g, m, lr=0.01, stochastic_rounding=True, seed=3)
    ep, em = reference(tp, tg, tm, OPTIONS["stochastic"] | {"lr": 0.01, "seed": 3, "weight_decay": 0.0}, 0, 0, 0)
    assert_same(torch.from_numpy(p.view(np.int16).copy()).view(torch.bfloat16), ep)
    assert_same(torch.from_numpy(m.view(np.int16).copy()).view(torch.bfloat16), em)
@needs_hooks
def test_fallback_without_exchange_api():
    """torch versions without the DLPack C exchange API go through `torch._C._to_dlpack`:
    the same bytes."""
    opts = OPTIONS["everything"]
    p, g, m = inputs(1003, (torch.bfloat16, torch.float32, torch.float16), seed=9)
    ep, em = reference(p, g, m, opts, step=1, offset=0, stream=0)
    _lion_optim._set_exchange_api(False)
    lion_optim.step(p, g, m, step=1, **opts)
    assert_same(p, ep)
    assert_same(m, em)


def test_simd_path_and_version():
    assert lion_optim.simd_path() in {"avx512", "avx2", "portable", "scalar"}
    assert lion_optim.__version__ == "0.1.0"
