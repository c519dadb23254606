"""8-bit momentum in the functional API (``lion_optim.step`` / ``cautious_count`` with
``lion_optim.Q8Momentum``): numpy arrays and torch tensors against the core's specification
(``reference::step_q8_with`` through the ``_reference_step_q8`` test hook), shards, and bad
input that writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lion_optim
from lion_optim import Q8Momentum, _lion_optim

from conftest import needs_hooks

K = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
DTYPES = list(NAMES)
NAMES[np.dtype(np.float32)] = "float32"
SETTINGS = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1)


def raw(t) -> bytes:
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t).tobytes()
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def reference(p, g, m: Q8Momentum, group, *, step=0, offset=0):
    """The specification's step on copies: (params bytes, codes bytes, absmax bytes)."""
    np_, nc, na, applied = _lion_optim._reference_step_q8(
        raw(p), NAMES[p.dtype], raw(g), NAMES[g.dtype], raw(m.codes), raw(m.absmax), group,
        step=step, offset=offset,
    )
    assert applied
    return np_, nc, na


def state(p, m: Q8Momentum):
    return raw(p), raw(m.codes), raw(m.absmax)


def tensors(n: int, pd, gd, seed: int):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=gen).to(pd)
    g = (torch.randn(n, generator=gen) * 0.1).to(gd)
    return p, g


@needs_hooks
@pytest.mark.parametrize("pd", DTYPES)
@pytest.mark.parametrize("gd", DTYPES)
def test_torch_tensors_match_the_specification(pd, gd):
    """Several tensors (lengths around the 256-element block) in one call, three steps, stochastic
    rounding on: every byte as the specification's, tensor by tensor with its stream's seed."""
    sizes = [1, 255, 256, 1000, 4096 + 7]
    group = dict(SETTINGS, stochastic_rounding=True, seed=5)
    ps, gs, ms = [], [], []
    for i, n in enumerate(sizes):
        p, g = tensors(n, pd, gd, i)
        ps.append(p)
        gs.append(g)
        ms.append(Q8Momentum.zeros_like(p))
    for step in range(3):
        want = []
        for i, (p, g, m) in enumerate(zip(ps, gs, ms)):
            gi = dict(group, seed=group["seed"] ^ ((i * K) & MASK))
            want.append(reference(p, g, m, gi, step=step))
        assert lion_optim.step(ps, gs, ms, step=step, **group)
        for i, (p, m) in enumerate(zip(ps, ms)):
            assert state(p, m) == want[i], f"tensor {i} (len {sizes[i]}) at step {step}"
    assert all(m.codes.dtype == torch.uint8 and bool((m.codes != 127).any()) for m in ms)


@needs_hooks
def test_numpy_arrays_match_the_specification():
    rng = np.random.default_rng(3)
    p = rng.standard_normal(777).astype(np.float32)
    g = (rng.standard_normal(777) * 0.1).astype(np.float32)
    m = Q8Momentum.zeros_like(p)
    assert (m.codes.dtype, m.codes.shape, m.absmax.shape) == (np.uint8, (777,), (4,))
    for step in range(3):
        want = reference(p, g, m, SETTINGS, step=step)
        assert lion_optim.step(p, g, m, step=step, **SETTINGS)
        assert state(p, m) == want


def test_the_same_as_the_optimizer():
    """``lion_optim.torch.Lion(momentum_dtype="q8")`` and the functional step: the same bytes."""
    from lion_optim.torch import Lion

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 700))
    p = w.detach().clone()
    opt = Lion([w], momentum_dtype="q8", **SETTINGS)
    m = Q8Momentum.zeros_like(p)
    for step in range(4):
        g = torch.randn(3, 700) * 0.1
        w.grad = g.clone()
        opt.step()
        lion_optim.step(p, g, m, step=step, **SETTINGS)
    s = opt.state[w]
    assert torch.equal(p, w.detach())
    assert torch.equal(m.codes.reshape(-1), s["exp_avg_codes"].reshape(-1))
    assert torch.equal(m.absmax, s["exp_avg_absmax"])


def test_zeros_like_keeps_a_layout_and_shards_give_the_whole():
    """A channels_last parameter steps with codes laid out alike; two shards of one tensor with
    their offsets (on a block boundary) give exactly the whole tensor's bytes."""
    p = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    g = torch.randn_like(p) * 0.1
    m = Q8Momentum.zeros_like(p)
    assert m.codes.stride() == p.stride()
    assert lion_optim.step(p, g, m, **SETTINGS)

    n = 1000
    whole_p, whole_g = tensors(n, torch.float32, torch.bfloat16, 9)
    whole_m = Q8Momentum.zeros_like(whole_p)
    parts_p = whole_p.clone()
    parts_m = Q8Momentum.zeros_like(parts_p)
    group = dict(SETTINGS, stochastic_rounding=True, seed=1)
    for step in range(2):
        lion_optim.step(whole_p, whole_g, whole_m, step=step, **group)
        shards = [(0, 512), (512, n)]
        lion_optim.step(
            [parts_p[a:b] for a, b in shards],
            [whole_g[a:b] for a, b in shards],
            [Q8Momentum(parts_m.codes[a:b], parts_m.absmax[a // 256 : -(-b // 256)]) for a, b in shards],
            offsets=[a for a, _ in shards],
            streams=[0, 0],
            step=step,
            **group,
        )
    assert state(parts_p, parts_m) == state(whole_p, whole_m)


def test_cautious_count_reads_the_decoded_momentum():
    p, g = tensors(1500, torch.float32, torch.float32, 4)
    m = Q8Momentum.zeros_like(p)
    for step in range(2):
        lion_optim.step(p, g.roll(step), m, step=step, **SETTINGS)
    qmap = torch.tensor(lion_optim.Q8_MAP, dtype=torch.float32)
    decoded = qmap[m.codes.long()] * m.absmax.repeat_interleave(256)[: p.numel()]
    g2 = torch.randn(1500) * 0.1
    n = lion_optim.cautious_count(g2, m)
    assert n == lion_optim.cautious_count(g2, decoded)
    assert 0 < n < 1500


def bad_cases():
    """(description, exp_avg maker from (p), exception, message fragment)."""
    n = 600

    def q(codes=None, absmax=None):
        return lambda: Q8Momentum(
            torch.full((n,), 127, dtype=torch.uint8) if codes is None else codes,
            torch.zeros(3) if absmax is None else absmax,
        )

    return [
        ("int8 codes", q(codes=torch.zeros(n, dtype=torch.int8)), TypeError, "uint8"),
        ("float codes", q(codes=torch.zeros(n)), TypeError, "uint8"),
        ("short codes", q(codes=torch.full((n - 1,), 127, dtype=torch.uint8)), ValueError, "elements"),
        ("too few scales", q(absmax=torch.zeros(2)), ValueError, "3 block scales"),
        ("too many scales", q(absmax=torch.zeros(4)), ValueError, "3 block scales"),
        ("float64 scales", q(absmax=torch.zeros(3, dtype=torch.float64)), TypeError, "float64"),
        ("bf16 scales", q(absmax=torch.zeros(3, dtype=torch.bfloat16)), ValueError, "float32"),
        ("strided codes", q(codes=torch.full((2 * n,), 127, dtype=torch.uint8)[::2]), RuntimeError, "dense"),
        ("2-d codes for a 1-d parameter, transposed", q(codes=torch.full((30, 20), 127, dtype=torch.uint8).t()),
         ValueError, "layout"),
        ("read-only numpy codes", lambda: Q8Momentum(_readonly(np.full(n, 127, np.uint8)), np.zeros(3, np.float32)),
         ValueError, "read-only"),
        ("codes on the meta device", q(codes=torch.zeros(n, dtype=torch.uint8, device="meta")), RuntimeError,
         "codes is a meta tensor"),
        ("codes and scales sharing memory", lambda: _sharing(n), RuntimeError, "overlap"),
    ]


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _sharing(n: int) -> Q8Momentum:
    buf = torch.full((n + 64,), 127, dtype=torch.uint8)
    return Q8Momentum(buf[:n], buf[n - 12 : n].view(torch.float32))


@pytest.mark.parametrize("case", bad_cases(), ids=lambda c: c[0])
def test_bad_momentum_is_refused_and_nothing_written(case):
    _, make, exc, fragment = case
    p, g = tensors(600, torch.float32, torch.float32, 2)
    m = make()
    before = (raw(p), raw(g))
    on_cpu = not isinstance(m.codes, torch.Tensor) or m.codes.device.type == "cpu"
    codes = raw(m.codes) if on_cpu else None
    with pytest.raises(exc, match=fragment):
        lion_optim.step(p, g, m, **SETTINGS)
    assert (raw(p), raw(g)) == before
    if on_cpu:
        assert raw(m.codes) == codes


def test_a_shard_off_a_block_boundary_is_refused():
    p, g = tensors(300, torch.float32, torch.float32, 1)
    m = Q8Momentum.zeros_like(p)
    before = state(p, m)
    with pytest.raises(ValueError, match="256"):
        lion_optim.step(p, g, m, offsets=100, **SETTINGS)
    assert state(p, m) == before
