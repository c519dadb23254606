"""`lion_optim.torch.Lion` as a `torch.optim.Optimizer`: signature, groups, options, state,
`state_dict` round trips, hooks, schedulers."""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch

import lion_optim
from lion_optim.torch import Lion, assign_streams

from conftest import ReferenceLion, assert_same, needs_hooks


def params(*shapes, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]


def set_grads(ps, seed, scale=0.1):
    gen = torch.Generator().manual_seed(seed)
    for p in ps:
        p.grad = (torch.randn(p.shape, generator=gen) * scale).to(p.dtype)


def test_signature_defaults_and_refusals_match_the_reference():
    sig = inspect.signature(Lion)
    ref = inspect.signature(ReferenceLion)
    for name in ("params", "lr", "betas", "weight_decay"):
        assert sig.parameters[name].default == ref.parameters[name].default, name
    assert list(sig.parameters)[:4] == ["params", "lr", "betas", "weight_decay"]
    p = params(3)
    opt = Lion(p)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.99)
    assert opt.defaults["weight_decay"] == 0.0
    # What the reference refuses, we refuse (ValueError), with the core's message naming the
    # hyperparameter.
    for kw, name in ((dict(lr=-1.0), "lr"), (dict(betas=(1.0, 0.99)), "beta1"),
                     (dict(betas=(0.9, -0.1)), "beta2"), (dict(betas=(0.9, 1.0)), "beta2")):
        with pytest.raises(ValueError, match=rf"^lion_optim.torch.Lion: invalid hyperparameter {name} = "):
            Lion(p, **kw)
        with pytest.raises(ValueError):
            ReferenceLion(p, **kw)
    with pytest.raises(ValueError, match="invalid hyperparameter lr = NaN: must be finite and >= 0"):
        Lion(p, lr=float("nan"))
    with pytest.raises(ValueError, match="invalid hyperparameter weight_decay = -0.1: must be finite and >= 0"):
        Lion(p, weight_decay=-0.1)
    with pytest.raises(TypeError, match="lion_optim.torch.Lion: 'lr' must be a float, got str"):
        Lion(p, lr="fast")
    with pytest.raises(TypeError, match="momentum_dtype"):
        Lion(p, momentum_dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'seed' must be an int in \[0, 2\*\*64\), got -1"):
        Lion(p, seed=-1)
    with pytest.raises(TypeError, match=r"'seed' must be an int in \[0, 2\*\*64\), got float"):
        Lion(p, seed=1.5)
    with pytest.raises(ValueError, match="invalid hyperparameter max_lr = 0: must be finite and > 0"):
        Lion(p, max_lr=0.0)
    with pytest.raises(ValueError, match="num_threads"):
        Lion(p, num_threads=0)
    with pytest.raises(ValueError, match="param group 1: invalid hyperparameter lr = -3: must be finite and >= 0"):
        Lion([{"params": p}, {"params": params(2), "lr": -3.0}])
    with pytest.raises(ValueError, match="empty parameter list"):
        Lion([])
    assert isinstance(opt, torch.optim.Optimizer)


def test_param_groups_each_with_its_own_settings():
    """Two groups with different hyperparameters and options are exactly the functional API on
    each group (stochastic streams: the parameter's position across groups)."""
    a = params((5, 7), (13,), seed=1)
    b = params((33,), (2, 3, 4), dtype=torch.bfloat16, seed=2)
    g0 = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    g1 = dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.0, momentum_dtype=torch.float32,
              stochastic_rounding=True, seed=9, cautious=True, maximize=True)
    opt = Lion([{"params": a, **g0}, {"params": b, **g1}])
    ea = [p.detach().clone() for p in a]
    eb = [p.detach().clone() for p in b]
    ma = [torch.zeros_like(p) for p in a]
    mb = [torch.zeros(p.shape, dtype=torch.float32) for p in b]
    for step in range(1, 4):
        set_grads(a + b, seed=step)
        opt.step()
        lion_optim.step(ea, [p.grad for p in a], ma, step=step, streams=[0, 1], **g0)
        fb = {k: v for k, v in g1.items() if k != "momentum_dtype"}
        lion_optim.step(eb, [p.grad for p in b], mb, step=step, streams=[2, 3], **fb)
    for p, e, m in zip(a + b, ea + eb, ma + mb):
        assert_same(p.data, e)
        assert_same(opt.state[p]["exp_avg"], m)
        assert int(opt.state[p]["step"]) == 3
    assert opt.state[b[0]]["exp_avg"].dtype == torch.float32
    assert opt.state[a[0]]["exp_avg"].dtype == torch.float32


def test_state_layout_and_grads_none_are_skipped():
    ps = params((4, 3), (5,), (6,), dtype=torch.bfloat16)
    opt = Lion(ps, lr=0.1)
    ps[0].grad = torch.ones(4, 3, dtype=torch.bfloat16)
    ps[2].grad = torch.ones(6, dtype=torch.bfloat16)
    before = ps[1].detach().clone()
    opt.step()
    assert ps[1] not in opt.state or not opt.state[ps[1]]
    assert_same(ps[1].data, before)
    st = opt.state[ps[0]]
    assert set(st) == {"step", "exp_avg"}
    assert st["exp_avg"].dtype == torch.bfloat16 and st["exp_avg"].shape == (4, 3)
    assert st["exp_avg"].is_contiguous()
    assert st["step"].dtype == torch.int64 and st["step"].dim() == 0 and int(st["step"]) == 1
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 2]
    assert type(sd["state"][0]) is dict
    assert sd["param_groups"][0]["params"] == [0, 1, 2]
    # A parameter gets its gradient later: its own step count starts then.
    ps[1].grad = torch.ones(5, dtype=torch.bfloat16)
    opt.step()
    assert [int(opt.state[p]["step"]) for p in ps] == [2, 1, 2]


def test_named_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = Lion(model.named_parameters(), lr=0.01)
    assert opt.param_groups[0]["param_names"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    bias = model[1].bias
    bias.grad = None
    bias.grad_dtype = None  # torch >= 2.10 allows gradients of other dtypes then
    bias.grad = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"parameter '1.bias': its gradient has dtype float64"):
        opt.step()


@pytest.mark.parametrize("momentum_dtype", [None, torch.float32, torch.bfloat16])
def test_state_dict_round_trip_and_resume(momentum_dtype):
    """Resuming from a saved state_dict continues bit for bit (stochastic rounding included:
    each parameter's step count keys its bits), and keeps the momentum dtype."""
    def fresh():
        return params((17, 3), (64,), dtype=torch.bfloat16, seed=3)

    kw = dict(lr=3e-3, weight_decay=0.1, stochastic_rounding=True, seed=4, momentum_dtype=momentum_dtype)
    ps = fresh()
    opt = Lion(ps, **kw)
    for s in range(3):
        set_grads(ps, seed=s)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved_params = [p.detach().clone() for p in ps]
    for s in range(3, 6):
        set_grads(ps, seed=s)
        opt.step()

    qs = [torch.nn.Parameter(p.clone()) for p in saved_params]
    resumed = Lion(qs, lr=1.0)  # the loaded groups replace these settings
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    resumed.load_state_dict(sd)
    assert resumed.param_groups[0]["lr"] == 3e-3
    expect = momentum_dtype or torch.bfloat16
    assert all(resumed.state[q]["exp_avg"].dtype == expect for q in qs)
    for s in range(3, 6):
        set_grads(qs, seed=s)
        resumed.step()
    for p, q in zip(ps, qs):
        assert_same(q.data, p.data)
        assert_same(resumed.state[q]["exp_avg"], opt.state[p]["exp_avg"])
        assert int(resumed.state[q]["step"]) == 6
    # Stepping never changed the loaded dict.
    buf.seek(0)
    again = torch.load(buf, weights_only=True)
    for k in sd["state"]:
        assert_same(sd["state"][k]["exp_avg"], again["state"][k]["exp_avg"])


def test_load_keeps_f32_momentum_of_bf16_params():
    ps = params((10,), dtype=torch.bfloat16)
    opt = Lion(ps, momentum_dtype=torch.float32, lr=0.1)
    set_grads(ps, 1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    other = Lion(params((10,), dtype=torch.bfloat16))
    other.load_state_dict(sd)
    (q,) = other.param_groups[0]["params"]
    assert other.state[q]["exp_avg"].dtype == torch.float32
    assert_same(other.state[q]["exp_avg"], sd["state"][0]["exp_avg"])


def test_load_a_state_dict_of_the_reference_class():
    ps = params((9,), (4, 4), seed=5)
    ref = ReferenceLion(ps, lr=0.01, weight_decay=0.1)
    set_grads(ps, 1)
    ref.step()
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = Lion(qs)
    opt.load_state_dict(ref.state_dict())
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["cautious"] is False
    for p, q in zip(ps, qs):
        assert int(opt.state[q]["step"]) == 0  # the reference keeps no step count
        assert_same(opt.state[q]["exp_avg"], ref.state[p]["exp_avg"])
    set_grads(ps, 2), set_grads(qs, 2)
    ref.step(), opt.step()
    for p, q in zip(ps, qs):
        assert_same(q.data, p.data)


def test_hooks_profiler_schedulers_and_closures():
    ps = params((8,))
    opt = Lion(ps, lr=0.1)
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    h2 = opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    h3 = register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global"))
    set_grads(ps, 1)
    opt.step()
    assert calls == ["global", "pre", "post"]
    for h in (h1, h2, h3):
        h.remove()
    opt.step()
    assert calls == ["global", "pre", "post"]
    with torch.profiler.profile() as prof:
        opt.step()
    assert any(e.name == "Optimizer.step#Lion.step" for e in prof.events())
    # A closure's loss is returned; schedulers change lr between steps.
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    before = ps[0].detach().clone()
    loss = opt.step(lambda: torch.tensor(3.0))
    assert float(loss) == 3.0
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.05
    mid = ps[0].detach().clone()
    opt.step()
    moved = (mid - ps[0].detach()).abs().max().item()
    assert abs(moved - 0.05) < 1e-6 and (before - mid).abs().max().item() == pytest.approx(0.1, abs=1e-6)


def test_skip_non_finite_and_grad_unscale():
    ps = params((100,), (7,))
    opt = Lion(ps, lr=0.1, skip_non_finite=True, grad_unscale=1 / 1024)
    set_grads(ps, 1)
    for p in ps:
        p.grad *= 1024  # exactly: a power of two
    opt.step()
    snapshot = [(p.detach().clone(), opt.state[p]["exp_avg"].clone()) for p in ps]
    ps[1].grad[3] = float("nan")
    opt.step()
    assert opt.last_step_skipped and opt.skipped_steps == 1
    for p, (v, m) in zip(ps, snapshot):
        assert_same(p.data, v)
        assert_same(opt.state[p]["exp_avg"], m)
        assert int(opt.state[p]["step"]) == 1
    # Unscaled by the power of two exactly: the same as unscaled gradients.
    qs = params((100,), (7,))
    plain = Lion(qs, lr=0.1)
    set_grads(qs, 1)
    plain.step()
    for p, q in zip(ps, qs):
        assert_same(p.data, q.data)
        assert_same(opt.state[p]["exp_avg"], plain.state[q]["exp_avg"])
    set_grads(ps, 2)
    opt.step()
    assert not opt.last_step_skipped


def test_maximize_matches_torch_convention_on_parameters():
    """torch's `maximize` steps with -grad: parameters identical, momentum exactly negated."""
    ps = params((50,), seed=7)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = Lion(ps, lr=0.01, weight_decay=0.1, maximize=True)
    neg = Lion(qs, lr=0.01, weight_decay=0.1)
    for s in range(3):
        set_grads(ps, s)
        for p, q in zip(ps, qs):
            q.grad = -p.grad
        opt.step(), neg.step()
    assert_same(ps[0].data, qs[0].data)
    assert_same(opt.state[ps[0]]["exp_avg"], -neg.state[qs[0]]["exp_avg"])


@needs_hooks
def test_threads_and_the_dlpack_fallback_are_bit_identical():
    n = lion_optim._lion_optim.PAR_THRESHOLD + 999
    results = []
    for threads, exchange in ((1, True), (2, True), (2, False)):
        lion_optim._lion_optim._set_exchange_api(exchange)
        ps = params((n,), (33,), dtype=torch.bfloat16, seed=8)
        opt = Lion(ps, lr=1e-3, stochastic_rounding=True, cautious=True, num_threads=threads)
        for s in range(2):
            set_grads(ps, s)
            opt.step()
        results.append([p.detach().clone() for p in ps])
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert_same(a, b)


def test_assign_streams_decouples_rounding_from_positions():
    """With `assign_streams`, a parameter rounds the same in any optimizer layout."""
    a, b = params((300,), (301,), dtype=torch.bfloat16, seed=9)
    a2, b2 = (torch.nn.Parameter(t.detach().clone()) for t in (a, b))
    assign_streams([a, b])
    assign_streams([a2, b2])
    one = Lion([a, b], lr=1e-3, stochastic_rounding=True, seed=1)
    # The other optimizer holds them in the other order, in two groups.
    two = Lion([{"params": [b2]}, {"params": [a2]}], lr=1e-3, stochastic_rounding=True, seed=1)
    set_grads([a, b], 1)
    a2.grad, b2.grad = a.grad.clone(), b.grad.clone()
    one.step(), two.step()
    assert_same(a.data, a2.data)
    assert_same(b.data, b2.data)


def test_state_replaced_from_outside_is_adopted():
    """ZeroRedundancyOptimizer (and users) write `state[p]` directly: the next step adopts it
    (a copy into the optimizer's own buffer) and never writes the given tensor."""
    ps = params((20,), seed=10)
    opt = Lion(ps, lr=0.1)
    set_grads(ps, 1)
    opt.step()
    (p,) = ps
    given = torch.full((20,), 0.5)
    opt.state[p] = {"step": torch.tensor(7), "exp_avg": given}
    qs = [torch.nn.Parameter(p.detach().clone())]
    ref = Lion(qs, lr=0.1)
    ref.load_state_dict({"state": {0: {"step": 7, "exp_avg": given.clone()}}, "param_groups": opt.state_dict()["param_groups"]})
    set_grads(ps, 2), set_grads(qs, 2)
    opt.step(), ref.step()
    assert_same(p.data, qs[0].data)
    assert torch.equal(given, torch.full((20,), 0.5))
    assert int(opt.state[p]["step"]) == 8
    # An exp_avg replaced inside the state dict, too.
    opt.state[p]["exp_avg"] = torch.zeros(20, dtype=torch.bfloat16)
    set_grads(ps, 3)
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.bfloat16


def test_add_param_group_empty_groups_and_empty_tensors():
    ps = params((5,), (0,), (3, 0))
    opt = Lion([{"params": ps}, {"params": []}], lr=0.1)
    set_grads(ps, 1)
    opt.step()
    late = params((4,), seed=3)
    opt.add_param_group({"params": late, "lr": 0.5, "weight_decay": 0.1})
    assert opt.param_groups[2]["momentum_dtype"] is None
    set_grads(ps + late, 2)
    opt.step()
    assert int(opt.state[late[0]]["step"]) == 1 and int(opt.state[ps[0]]["step"]) == 2
    with pytest.raises(ValueError, match=r"param group 3: invalid hyperparameter beta2 = 1.5: must be in \[0, 1\)"):
        opt.add_param_group({"params": params((2,), seed=4), "betas": (0.9, 1.5)})
    assert len(opt.param_groups) == 3


def test_betas_as_a_list():
    ps = params((6,))
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    a, b = Lion(ps, lr=0.1, betas=[0.8, 0.9]), Lion(qs, lr=0.1, betas=(0.8, 0.9))
    set_grads(ps, 1), set_grads(qs, 1)
    a.step(), b.step()
    assert_same(ps[0].data, qs[0].data)
    a.param_groups[0]["betas"] = [0.8]
    with pytest.raises(ValueError, match="'betas' must be a pair of floats, got 1 values"):
        a.step()


def test_set_to_none_false_and_subclasses():
    class MyLion(Lion):
        pass

    ps = params((6,))
    opt = MyLion(ps, lr=0.1)
    set_grads(ps, 1)
    opt.step()
    opt.zero_grad(set_to_none=False)
    assert torch.equal(ps[0].grad, torch.zeros(6))
    before = ps[0].detach().clone()
    opt.step()  # a zero gradient on nonzero momentum still moves
    assert not torch.equal(before, ps[0].data)


def test_grad_scaler_and_threads():
    import threading

    model = torch.nn.Linear(8, 3)
    opt = Lion(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = model.weight.detach().clone()
    loss = model(torch.randn(4, 8)).pow(2).sum()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(before, model.weight.detach())
    # Steps of one optimizer from several threads are serialized or refused, never concurrent.
    big = params((lion_optim._lion_optim.PAR_THRESHOLD * 4,))
    opt = Lion(big, lr=1e-3, num_threads=1)
    set_grads(big, 1)
    opt.step()
    errors = []

    def run():
        for _ in range(5):
            try:
                opt.step()
            except RuntimeError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all("already running in another thread" in e for e in errors)
    assert int(opt.state[big[0]]["step"]) == 16 - len(errors)
