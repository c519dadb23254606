"""Parameters dense in another order than C's (`channels_last` convolution weights, transposed
matrices): stepped in place in memory order, their momentum laid out as they are, exactly the
step of the contiguous copy; a gradient laid out otherwise, and views that are not dense
(strided, expanded), are refused, naming the tensor."""

from __future__ import annotations

import copy

import pytest
import torch

import lion_optim
from lion_optim.torch import Lion

from conftest import assert_same

FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}
# The permutation that puts a channels_last tensor's dimensions in memory order.
MEMORY_ORDER = {2: (0, 2, 3, 1), 3: (0, 2, 3, 4, 1)}


def conv_params(dim, dtype, fmt=torch.contiguous_format, seed=0):
    """Two convolution weights and their biases, in memory format `fmt`."""
    gen = torch.Generator().manual_seed(seed)
    k = (3,) * dim
    shapes = [(8, 3) + k, (8,), (5, 8) + k, (5,)]
    out = []
    for s in shapes:
        t = torch.randn(s, generator=gen).to(dtype)
        if len(s) > 2:
            t = t.contiguous(memory_format=fmt)
        out.append(torch.nn.Parameter(t))
    return out


def grads_for(ps, seed, fmt=torch.contiguous_format):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in ps:
        g = (torch.randn(p.shape, generator=gen) * 0.1).to(p.dtype)
        out.append(g.contiguous(memory_format=fmt) if p.dim() > 2 else g)
    return out


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype,cautious", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)])
def test_channels_last_steps_exactly_as_the_contiguous_copy(dim, dtype, cautious):
    fmt = FORMATS[dim]
    cl = conv_params(dim, dtype, fmt)
    co = [torch.nn.Parameter(p.detach().contiguous()) for p in cl]
    assert not cl[0].is_contiguous() and cl[0].is_contiguous(memory_format=fmt)
    kw = dict(lr=1e-2, weight_decay=0.1, cautious=cautious, momentum_dtype=torch.float32)
    opt_cl, opt_co = Lion(cl, **kw), Lion(co, **kw)
    addr = [p.data_ptr() for p in cl]
    for step in range(3):
        for p, q, g in zip(cl, co, grads_for(cl, step)):
            p.grad = g.contiguous(memory_format=fmt) if p.dim() > 2 else g
            q.grad = g.contiguous()
        opt_cl.step()
        opt_co.step()
        for i, (p, q) in enumerate(zip(cl, co)):
            assert_same(p, q, f"step {step}: parameter {i}")
            assert_same(opt_cl.state[p]["exp_avg"], opt_co.state[q]["exp_avg"], f"step {step}: exp_avg {i}")
    # In place, and the momentum follows the parameter's memory format.
    assert [p.data_ptr() for p in cl] == addr
    assert cl[0].is_contiguous(memory_format=fmt) and not cl[0].is_contiguous()
    ea = opt_cl.state[cl[0]]["exp_avg"]
    assert ea.stride() == cl[0].stride() and ea.dtype == torch.float32


@pytest.mark.parametrize("dim", [2, 3])
def test_stochastic_rounding_of_a_channels_last_parameter_follows_its_memory_order(dim):
    """The rounding bits are keyed by an element's position in memory: a channels_last
    parameter rounds as the contiguous tensor of its memory order (its permuted copy) does."""
    fmt, perm = FORMATS[dim], MEMORY_ORDER[dim]
    cl = conv_params(dim, torch.bfloat16, fmt)
    twin = [torch.nn.Parameter(p.detach().permute(perm).contiguous() if p.dim() > 2 else p.detach().clone()) for p in cl]
    kw = dict(lr=1e-3, weight_decay=0.1, stochastic_rounding=True, seed=3)
    opt_cl, opt_twin = Lion(cl, **kw), Lion(twin, **kw)
    for step in range(3):
        for p, t, g in zip(cl, twin, grads_for(cl, 10 + step, fmt)):
            p.grad = g
            t.grad = g.permute(perm).contiguous() if g.dim() > 2 else g.clone()
        opt_cl.step()
        opt_twin.step()
    for i, (p, t) in enumerate(zip(cl, twin)):
        mine = p.detach().permute(perm) if p.dim() > 2 else p.detach()
        assert_same(mine.contiguous(), t, f"parameter {i}")


def test_channels_last_model_trains_and_its_state_round_trips():
    """A channels_last CNN under autograd (its gradients come channels_last), `state_dict`
    into an optimizer of a contiguous copy of the model, and a model switched to channels_last
    after some steps (its momentum is laid out anew): the same parameters as the contiguous
    run."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 3))
    flat = copy.deepcopy(net)
    switched = copy.deepcopy(net)
    net.to(memory_format=torch.channels_last)
    kw = dict(lr=1e-2, weight_decay=0.1)
    opts = [Lion(m.parameters(), **kw) for m in (net, flat, switched)]
    x = torch.randn(2, 3, 10, 10)
    for step in range(4):
        if step == 2:
            switched.to(memory_format=torch.channels_last)
        grads = None
        for m, opt in zip((net, flat, switched), opts):
            m.zero_grad(set_to_none=True)
            m(x).pow(2).mean().backward()
            if grads is None:
                grads = [p.grad.detach().clone() for p in m.parameters()]
                assert m[0].weight.grad.is_contiguous(memory_format=torch.channels_last)
            for p, g in zip(m.parameters(), grads):  # the same gradient values everywhere
                p.grad.copy_(g)
            opt.step()
        for i, (a, b, c) in enumerate(zip(net.parameters(), flat.parameters(), switched.parameters())):
            assert_same(a, b, f"step {step}: parameter {i}")
            assert_same(c, b, f"step {step}: parameter {i} (switched to channels_last at step 2)")
    assert opts[2].state[switched[0].weight]["exp_avg"].stride() == switched[0].weight.stride()
    # The channels_last run's state loads into the contiguous model's optimizer.
    fresh = Lion(copy.deepcopy(flat).parameters(), **kw)
    fresh.load_state_dict(opts[0].state_dict())
    for p, q in zip(fresh.param_groups[0]["params"], flat.parameters()):
        assert_same(fresh.state[p]["exp_avg"], opts[1].state[q]["exp_avg"], "loaded exp_avg")


def test_gradient_or_momentum_laid_out_otherwise_is_refused():
    p = torch.nn.Parameter(torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    opt = Lion([p], lr=0.1)
    p.grad = torch.randn(4, 3, 2, 2)  # contiguous: another layout than its parameter's
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"^parameter 0: its gradient has strides \(12, 4, 2, 1\), the parameter "
                       r"\(12, 1, 6, 3\) \(shape \(4, 3, 2, 2\)\): the step pairs elements in memory order"):
        opt.step()
    assert_same(p, before, "parameter")
    assert not opt.state
    p.grad = p.grad.contiguous(memory_format=torch.channels_last)  # what the message says
    opt.step()
    # The functional API: every buffer of a tensor laid out alike.
    g = torch.randn_like(p)
    lion_optim.step(p.detach(), g, torch.zeros_like(p), lr=0.1)  # zeros_like keeps the format
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] has shape \(4, 3, 2, 2\) and strides \(12, 4, 2, 1\), "
                       r"the parameter shape \(4, 3, 2, 2\) and strides \(12, 1, 6, 3\)"):
        lion_optim.step(p.detach(), g, torch.zeros(4, 3, 2, 2), lr=0.1)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] has shape \(48,\)"):
        lion_optim.step(p.detach(), g, torch.zeros(48), lr=0.1)
    # A transposed matrix is dense too: stepped with a gradient and momentum laid out alike.
    w = torch.randn(5, 7).t()
    m = torch.zeros_like(w)
    lion_optim.step(w, torch.ones(5, 7).t(), m, lr=0.5)
    assert torch.equal(m, torch.full((7, 5), 0.01))


def test_views_that_are_not_dense_are_refused_at_construction():
    base = torch.randn(4, 6)
    for t, what in [(base[:, ::2], r"\(shape \(4, 3\), strides \(6, 2\)\)"),
                    (torch.zeros(3, 1).expand(3, 5), r"\(shape \(3, 5\), strides \(1, 0\)\)")]:
        with pytest.raises(RuntimeError, match=r"^parameter 0: the parameter is not dense " + what):
            Lion([t], lr=0.1)
