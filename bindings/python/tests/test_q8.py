"""8-bit blockwise momentum (``momentum_dtype="q8"``): ``lion_optim.torch.Lion`` against the
core's specification (``lion_optim::reference::step_q8_with``, through the ``_reference_step_q8``
test hook), state dicts, bad input, and a short training run."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import lion_optim
from lion_optim import _lion_optim
from lion_optim.torch import Lion

from conftest import needs_hooks

K = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
SETTINGS = {
    "plain": dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1),
    "stochastic": dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.01, stochastic_rounding=True, seed=99),
    "cautious": dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0, cautious=True, maximize=True),
}


def raw(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def from_raw(b: bytes, dtype: torch.dtype, shape) -> torch.Tensor:
    if not b:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(bytearray(b), dtype=dtype).reshape(shape).clone()


def reference_step(p, g, codes, absmax, settings, step, stream):
    """One step of the specification on copies; returns (params, codes, absmax)."""
    group = dict(settings)
    if group.get("stochastic_rounding"):
        # The hook uses the seed as it is: mix in the stream as step_many does.
        group["seed"] = group["seed"] ^ ((stream * K) & MASK)
    np_, nc, na, applied = _lion_optim._reference_step_q8(
        raw(p), NAMES[p.dtype], raw(g), NAMES[g.dtype], raw(codes), raw(absmax), group, step=step
    )
    assert applied
    return (
        from_raw(np_, p.dtype, p.shape),
        from_raw(nc, torch.uint8, codes.shape),
        from_raw(na, torch.float32, absmax.shape),
    )


def bits(t: torch.Tensor) -> torch.Tensor:
    view = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.uint8: torch.uint8}
    return t.detach().contiguous().view(view[t.dtype])


def assert_bits(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(bits(a), bits(b))


def grads_for(ps, step, dtype=None):
    gen = torch.Generator().manual_seed(1000 + step)
    return [(torch.randn(p.shape, generator=gen) * 0.1).to(dtype or p.dtype) for p in ps]


@needs_hooks
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_bit_identical_to_the_specification(dtype, name):
    settings = SETTINGS[name]
    gen = torch.Generator().manual_seed(7)
    # Partial last blocks (1000, 4097), a single partial block (3), exact blocks (512), and a
    # 2-D parameter.
    shapes = [(1000,), (4097,), (3,), (512,), (33, 70)]
    ps = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    ref = [p.clone() for p in ps]
    ref_codes = [torch.full(p.shape, 127, dtype=torch.uint8) for p in ps]
    ref_absmax = [torch.zeros((-(-p.numel() // 256),), dtype=torch.float32) for p in ps]
    opt = Lion(ps, momentum_dtype="q8", **settings)
    for step in range(1, 5):
        gs = grads_for(ps, step)
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        for k, (p, g) in enumerate(zip(ps, gs)):
            ref[k], ref_codes[k], ref_absmax[k] = reference_step(
                ref[k], g, ref_codes[k], ref_absmax[k], settings, step, k
            )
    for k, p in enumerate(ps):
        st = opt.state[p]
        assert "exp_avg" not in st
        assert st["exp_avg_codes"].dtype == torch.uint8 and st["exp_avg_codes"].shape == p.shape
        assert st["exp_avg_absmax"].dtype == torch.float32
        assert st["exp_avg_absmax"].shape == (-(-p.numel() // 256),)
        assert int(st["step"]) == 4
        assert_bits(p, ref[k])
        assert_bits(st["exp_avg_codes"], ref_codes[k])
        assert_bits(st["exp_avg_absmax"], ref_absmax[k])
        # The momentum moved (not all zero codes).
        assert (st["exp_avg_codes"] != 127).any()


@needs_hooks
def test_mixed_groups_and_gradient_dtypes():
    """q8 in one param group, bf16 momentum in another; float16 gradients of float32 params."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1300, generator=gen)
    b = torch.randn(300, generator=gen)
    opt = Lion([{"params": [a], "momentum_dtype": "q8"}, {"params": [b], "momentum_dtype": torch.bfloat16}], lr=1e-2)
    for t in (a, b):
        if hasattr(t, "grad_dtype"):
            t.grad_dtype = None  # torch >= 2.10 allows gradients of other dtypes then
    ra = a.clone()
    rc = torch.full((1300,), 127, dtype=torch.uint8)
    rm = torch.zeros((6,), dtype=torch.float32)
    for step in range(1, 4):
        ga, gb = grads_for([a, b], step, torch.float16)
        a.grad, b.grad = ga, gb
        opt.step()
        ra, rc, rm = reference_step(ra, ga, rc, rm, dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0), step, 0)
    assert_bits(a, ra)
    assert_bits(opt.state[a]["exp_avg_codes"], rc)
    assert_bits(opt.state[a]["exp_avg_absmax"], rm)
    assert opt.state[b]["exp_avg"].dtype == torch.bfloat16


def test_state_is_stepped_in_place():
    p = torch.randn(700)
    opt = Lion([p], momentum_dtype="q8", lr=1e-3)
    p.grad = torch.randn(700)
    opt.step()
    codes, absmax = opt.state[p]["exp_avg_codes"], opt.state[p]["exp_avg_absmax"]
    ptrs = (codes.data_ptr(), absmax.data_ptr())
    before = codes.clone(), absmax.clone()
    p.grad = torch.randn(700)
    opt.step()
    assert opt.state[p]["exp_avg_codes"] is codes and opt.state[p]["exp_avg_absmax"] is absmax
    assert (codes.data_ptr(), absmax.data_ptr()) == ptrs
    assert not torch.equal(codes, before[0]) or not torch.equal(absmax, before[1])


def test_zero_gradient_keeps_zero_momentum_and_empty_params():
    p = torch.randn(300)
    e = torch.randn(0)
    opt = Lion([p, e], momentum_dtype="q8")
    p.grad = torch.zeros(300)
    e.grad = torch.zeros(0)
    opt.step()
    assert torch.all(opt.state[p]["exp_avg_codes"] == 127)
    assert torch.all(opt.state[p]["exp_avg_absmax"] == 0)
    assert opt.state[e]["exp_avg_codes"].shape == (0,)
    assert opt.state[e]["exp_avg_absmax"].shape == (0,)


def make(seed=0, dtype=torch.bfloat16, **kw):
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=gen).to(dtype) for s in [(1000,), (17, 300), (5,)]]
    opt = Lion(ps, lr=1e-2, weight_decay=0.1, momentum_dtype="q8", stochastic_rounding=True, seed=4, **kw)
    return ps, opt


def run(ps, opt, steps):
    for s in steps:
        for p, g in zip(ps, grads_for(ps, s)):
            p.grad = g
        opt.step()


def test_state_dict_round_trip_and_resume():
    ps, opt = make()
    run(ps, opt, range(1, 4))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved_params = [p.clone() for p in ps]
    # Uninterrupted.
    run(ps, opt, range(4, 7))
    # Resumed from the file, in a new optimizer.
    qs = [p.clone() for p in saved_params]
    opt2 = Lion(qs, lr=1e-2, weight_decay=0.1, momentum_dtype="q8", stochastic_rounding=True, seed=4)
    buf.seek(0)
    sd = torch.load(buf)
    sd_copy = copy.deepcopy(sd)
    opt2.load_state_dict(sd)
    # Loaded bit for bit (and the loaded dict itself is not stepped).
    for i, q in enumerate(qs):
        assert_bits(opt2.state[q]["exp_avg_codes"], sd["state"][i]["exp_avg_codes"])
        assert_bits(opt2.state[q]["exp_avg_absmax"], sd["state"][i]["exp_avg_absmax"])
    assert opt2.state_dict()["param_groups"][0]["momentum_dtype"] == "q8"
    run(qs, opt2, range(4, 7))
    for p, q in zip(ps, qs):
        assert_bits(p, q)
        for key in ("exp_avg_codes", "exp_avg_absmax"):
            assert_bits(opt.state[p][key], opt2.state[q][key])
        assert int(opt.state[p]["step"]) == int(opt2.state[q]["step"]) == 6
    for i in range(len(qs)):
        for key in ("exp_avg_codes", "exp_avg_absmax"):
            assert_bits(sd["state"][i][key], sd_copy["state"][i][key])


def test_state_dict_keys():
    ps, opt = make()
    run(ps, opt, [1])
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "exp_avg_codes", "exp_avg_absmax", "exp_avg_qmap"}
    # The code map: Q8_MAP, one tensor for every state of the dict.
    assert torch.equal(sd["state"][0]["exp_avg_qmap"], torch.tensor(lion_optim.Q8_MAP, dtype=torch.float32))
    assert sd["state"][1]["exp_avg_qmap"] is sd["state"][0]["exp_avg_qmap"]
    assert sd["state"][1]["exp_avg_codes"].shape == (17, 300)
    assert sd["state"][1]["exp_avg_absmax"].shape == (20,)
    assert sd["state"][2]["exp_avg_absmax"].shape == (1,)


def test_assigned_state_is_adopted():
    """A user's assignment of new codes/scales is copied into the optimizer's own buffers."""
    ps, opt = make()
    run(ps, opt, [1])
    p = ps[0]
    codes = opt.state[p]["exp_avg_codes"].clone()
    absmax = opt.state[p]["exp_avg_absmax"].clone()
    opt.state[p]["exp_avg_codes"] = codes
    opt.state[p]["exp_avg_absmax"] = absmax
    run(ps, opt, [2])
    assert opt.state[p]["exp_avg_codes"] is not codes
    # The assigned tensors were copied, not stepped.
    assert opt.state[p]["exp_avg_codes"].data_ptr() != codes.data_ptr()


BAD = [
    ("exp_avg_absmax", lambda sd: sd["state"][0].__setitem__("exp_avg_absmax", torch.zeros(3)), ValueError, "exp_avg_absmax has shape"),
    ("exp_avg_absmax", lambda sd: sd["state"][0].__setitem__("exp_avg_absmax", torch.zeros(4, dtype=torch.float64)), TypeError, "dtype"),
    ("exp_avg_codes", lambda sd: sd["state"][1].__setitem__("exp_avg_codes", torch.zeros(17, 299, dtype=torch.uint8)), ValueError, "exp_avg_codes has"),
    ("exp_avg_codes", lambda sd: sd["state"][1].__setitem__("exp_avg_codes", torch.zeros(17, 300, dtype=torch.int8)), TypeError, "dtype"),
    ("missing", lambda sd: sd["state"][2].pop("exp_avg_absmax"), ValueError, "no exp_avg_absmax"),
    ("exp_avg_qmap", lambda sd: sd["state"][0].__setitem__("exp_avg_qmap", torch.linspace(-1, 1, 256)), ValueError, "another code map"),
    ("exp_avg_qmap", lambda sd: sd["state"][0].__setitem__("exp_avg_qmap", torch.zeros(255)), ValueError, "256 values"),
]


@pytest.mark.parametrize("what,damage,exc,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_state_dict_refused_with_nothing_changed(what, damage, exc, message):
    ps, opt = make()
    run(ps, opt, [1, 2])
    sd = copy.deepcopy(opt.state_dict())
    damage(sd)
    before = copy.deepcopy(opt.state_dict())
    ps2, opt2 = make(seed=1)
    run(ps2, opt2, [1])
    before2 = copy.deepcopy(opt2.state_dict())
    with pytest.raises(exc, match=message):
        opt2.load_state_dict(sd)
    after2 = opt2.state_dict()
    for i in before2["state"]:
        for key, v in before2["state"][i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(after2["state"][i][key]))
    # The optimizer still steps.
    run(ps2, opt2, [2])
    del before


def test_bad_assigned_state_refused_at_step():
    ps, opt = make()
    run(ps, opt, [1])
    p = ps[0]
    params_before = [q.clone() for q in ps]
    opt.state[p]["exp_avg_absmax"] = torch.zeros(2)
    for q, g in zip(ps, grads_for(ps, 2)):
        q.grad = g
    with pytest.raises(ValueError, match="exp_avg_absmax has shape"):
        opt.step()
    for q, b in zip(ps, params_before):
        assert_bits(q, b)


def test_bad_momentum_dtype_strings():
    with pytest.raises(TypeError, match="'q8'"):
        Lion([torch.zeros(3)], momentum_dtype="q4")
    with pytest.raises(TypeError, match="momentum_dtype"):
        Lion([torch.zeros(3)], momentum_dtype="float32")
    opt = Lion([torch.zeros(3)])
    with pytest.raises(TypeError, match="momentum_dtype"):
        opt.add_param_group({"params": [torch.zeros(2)], "momentum_dtype": "Q8"})
    opt.add_param_group({"params": [torch.zeros(2)], "momentum_dtype": "q8"})


def test_channels_last_parameter():
    gen = torch.Generator().manual_seed(11)
    w = torch.randn(4, 3, 8, 9, generator=gen).contiguous(memory_format=torch.channels_last)
    opt = Lion([w], lr=1e-2, momentum_dtype="q8")
    for s in range(1, 3):
        w.grad = torch.randn(w.shape, generator=gen).contiguous(memory_format=torch.channels_last)
        opt.step()
    codes = opt.state[w]["exp_avg_codes"]
    assert codes.stride() == w.stride()
    # Round trip into a channels_last parameter.
    w2 = w.detach().clone().contiguous(memory_format=torch.channels_last)
    opt2 = Lion([w2], lr=1e-2, momentum_dtype="q8")
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert_bits(opt2.state[w2]["exp_avg_codes"], codes)
    # Codes laid out otherwise than a channels_last parameter are refused.
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["exp_avg_codes"] = sd["state"][0]["exp_avg_codes"].contiguous()
    with pytest.raises(ValueError, match="laid out as the parameter"):
        opt2.load_state_dict(sd)


def test_dtensor_one_process(tmp_path):
    """A replicated DTensor steps as its plain tensor; placements whose shards could split
    blocks (an inner Shard) are refused -- at construction, add_param_group, and the first step
    of a group switched to q8 later, nothing written. (Two processes: tests/test_fsdp.py.)"""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs gloo and no process group yet")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        whole = torch.randn(1000)
        w = torch.nn.Parameter(distribute_tensor(whole.clone(), mesh, [Replicate()]))
        v = torch.nn.Parameter(whole.clone())
        opt, ref = Lion([w], lr=1e-2, momentum_dtype="q8"), Lion([v], lr=1e-2, momentum_dtype="q8")
        for _ in range(3):
            g = torch.randn(1000)
            w.grad, v.grad = distribute_tensor(g, mesh, [Replicate()]), g
            opt.step()
            ref.step()
        assert_bits(w.detach().to_local(), v.detach())
        for key in ("exp_avg_codes", "exp_avg_absmax"):
            assert type(opt.state[w][key]).__name__ == "DTensor"
            assert_bits(opt.state[w][key].to_local(), ref.state[v][key])
        inner = torch.nn.Parameter(distribute_tensor(torch.randn(4, 300), mesh, [Shard(1)]))
        with pytest.raises(ValueError, match=r"^parameter 0: 8-bit momentum .*Shard\(0\) and Replicate"):
            Lion([inner], momentum_dtype="q8")
        opt = Lion([inner])
        with pytest.raises(ValueError, match=r"^parameter 1 \(group 1\): 8-bit momentum"):
            opt.add_param_group({"params": [torch.nn.Parameter(distribute_tensor(torch.randn(3, 5), mesh, [Shard(1)]))], "momentum_dtype": "q8"})
        # A group switched to q8 later: refused at the first step, nothing written.
        opt.param_groups[0]["momentum_dtype"] = "q8"
        inner.grad = distribute_tensor(torch.randn(4, 300), mesh, [Shard(1)])
        before = inner.detach().to_local().clone()
        with pytest.raises(ValueError, match="8-bit momentum.*DTensor"):
            opt.step()
        assert torch.equal(inner.detach().to_local(), before)
        assert len(opt.state) == 0
    finally:
        dist.destroy_process_group()


def test_training_reaches_f32_loss():
    def train(md):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(512, 16, generator=gen)
        y = (x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3])).detach()
        opt = Lion(model.parameters(), lr=3e-3, weight_decay=0.01, momentum_dtype=md)
        first = None
        for _ in range(300):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            first = first if first is not None else loss.item()
        with torch.no_grad():
            return first, torch.nn.functional.mse_loss(model(x), y).item()

    first, f32 = train(None)
    _, q8 = train("q8")
    assert f32 < 0.5 * first
    assert q8 < 0.5 * first
    assert abs(q8 - f32) < 0.25 * f32 + 0.02, (f32, q8)
