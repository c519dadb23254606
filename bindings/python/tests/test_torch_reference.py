"""`lion_optim.torch.Lion` against the reference PyTorch class (google/automl `lion_pytorch.py`):
after each single step from the same state, parameters are bit-identical and the momentum is
within one f32 rounding (PyTorch's CPU `add_(alpha=)` fuses the multiply and the add)."""

from __future__ import annotations

import copy

import pytest
import torch

from lion_optim.torch import Lion

from conftest import ReferenceLion, assert_same, ulp32

HYPER = [
    dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
    dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1),
    dict(lr=0.05, betas=(0.95, 0.98), weight_decay=1.0),
    dict(lr=1e-3, betas=(0.0, 0.5), weight_decay=0.01),
    dict(lr=0.2, betas=(0.99, 0.999), weight_decay=0.3),
]
SHAPES = [(1,), (7,), (33,), (129, 3), (17, 31), (1000,), (4099,), (3, 5, 7)]


def make_params(seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def momentum_close(ours: torch.Tensor, ref: torch.Tensor, grad: torch.Tensor, beta2: float) -> int:
    """Within one f32 rounding of ``grad * (1 - beta2)`` (the product PyTorch's fused
    ``add_(alpha=)`` does not round) plus the final rounding: where ``m*b2`` and the product
    nearly cancel, that can be many ulps of the result, but never more than the product's.
    Returns the number of identical elements."""
    diff = (ours.double() - ref.double()).abs()
    term = (grad.float() * (1 - beta2)).abs()
    tol = (ulp32(term) + ulp32(ref)).double()
    bad = diff > tol
    assert not bool(bad.any()), f"momentum differs by more than one rounding in {int(bad.sum())} elements"
    return int((diff == 0).sum())


@pytest.mark.parametrize("hp", HYPER, ids=lambda h: f"lr{h['lr']}-wd{h['weight_decay']}-b{h['betas'][0]}")
def test_single_steps_from_the_same_state(hp):
    ours_p = make_params(1)
    ref_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    ours = Lion(ours_p, **hp)
    ref = ReferenceLion(ref_p, **hp)
    gen = torch.Generator().manual_seed(2)
    for step in range(6):
        for a, b in zip(ours_p, ref_p):
            g = torch.randn(a.shape, generator=gen) * 0.1
            if step == 2:
                g[..., ::3] = 0.0  # zero gradients on (possibly) zero momentum: c == 0
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        identical = 0
        for i, (a, b) in enumerate(zip(ours_p, ref_p)):
            assert_same(a.data, b.data, f"step {step} param {i}")
            ma, mb = ours.state[a]["exp_avg"], ref.state[b]["exp_avg"]
            identical += momentum_close(ma, mb, a.grad, hp["betas"][1])
            # The next step starts from the same state: ours.
            mb.copy_(ma)
        # Most momentum elements are identical (a fused and an unfused product-and-sum agree
        # in most cases).
        assert identical >= 0.5 * sum(p.numel() for p in ours_p)
        assert all(int(ours.state[p]["step"]) == step + 1 for p in ours_p)


def test_bf16_against_the_reference_computed_in_f32():
    """For bf16 tensors the reference class rounds after every operation; the crate computes
    the step in f32 and rounds once, which is the reference class run on f32 copies, rounded."""
    gen = torch.Generator().manual_seed(3)
    for hp in HYPER[1:4]:
        p = torch.nn.Parameter(torch.randn(4099, generator=gen).bfloat16())
        m0 = (torch.randn(4099, generator=gen) * 0.01).bfloat16()
        g = (torch.randn(4099, generator=gen) * 0.01).bfloat16()
        opt = Lion([p], **hp)
        p.grad = g
        opt.step()  # creates the state (zero momentum); then from m0:
        opt.state[p]["exp_avg"].copy_(m0)
        p32 = torch.nn.Parameter(p.detach().float())
        p32.grad = g.float()
        ref = ReferenceLion([p32], **hp)
        ref.state[p32]["exp_avg"] = m0.float()
        opt.step()
        ref.step()
        assert_same(p.data, p32.data.bfloat16(), "bf16 params")


def test_training_run_learns_like_the_reference():
    """A small MLP regresses a fixed random teacher: Lion learns as the reference class does."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    x = torch.randn(512, 16)
    with torch.no_grad():
        y = teacher(x)

    def train(opt_cls, **kw):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        opt = opt_cls(model.parameters(), lr=3e-3, weight_decay=0.01, **kw)
        losses = []
        for epoch in range(150):
            for i in range(0, 512, 64):
                loss = torch.nn.functional.mse_loss(model(x[i : i + 64]), y[i : i + 64])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                losses.append(torch.nn.functional.mse_loss(model(x), y).item())
        return losses, model

    ours, m_ours = train(Lion)
    ref, m_ref = train(ReferenceLion)
    assert ours[-1] < 0.1 * ours[0], ours[::10]
    assert ref[-1] < 0.1 * ref[0]
    assert abs(ours[-1] - ref[-1]) < 0.5 * max(ours[-1], ref[-1]), (ours[-1], ref[-1])
    # The first steps are the same computation (momentum rounding aside).
    assert abs(ours[0] - ref[0]) < 1e-3 * ref[0]
    # bf16 with stochastic rounding learns too.
    bf, _ = train(Lion, stochastic_rounding=True, momentum_dtype=torch.float32)
    assert bf[-1] < 0.1 * bf[0]


def test_bf16_model_with_stochastic_rounding_learns():
    torch.manual_seed(0)
    w_true = torch.randn(8, 32) * 0.3
    x = torch.randn(256, 32)
    y = x @ w_true.T

    def run():
        torch.manual_seed(1)
        model = torch.nn.Linear(32, 8, bias=False).bfloat16()
        opt = Lion(model.parameters(), lr=3e-3, stochastic_rounding=True, seed=5)
        for _ in range(400):
            loss = (model(x.bfloat16()).float() - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item(), model.weight.detach().clone()

    (loss, w), (loss2, w2) = run(), run()
    assert loss < 0.05 * y.pow(2).mean().item(), loss
    assert_same(w, w2, "deterministic")


def test_stochastic_rounding_moves_what_nearest_rounding_cannot():
    """lr = 1e-3 is under half a bf16 ulp at 1.0 (2**-8): round-to-nearest never moves the
    weight, stochastic rounding moves it by lr per step on average."""
    for sr, expect in ((False, 0.0), (True, 0.1)):
        p = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
        opt = Lion([p], lr=1e-3, stochastic_rounding=sr, momentum_dtype=torch.float32)
        for _ in range(100):
            p.grad = torch.ones_like(p)
            opt.step()
        moved = (1.0 - p.detach().float()).mean().item()
        assert abs(moved - expect) < 0.01, (sr, moved)


def test_deepcopy_and_pickle_keep_the_state():
    import pickle

    p = torch.nn.Parameter(torch.randn(10))
    opt = Lion([p], lr=0.1, momentum_dtype=torch.bfloat16, num_threads=2, skip_non_finite=True)
    p.grad = torch.randn(10)
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        (q,) = clone.param_groups[0]["params"]
        assert clone.state[q]["exp_avg"].dtype == torch.bfloat16
        assert torch.equal(clone.state[q]["exp_avg"], opt.state[p]["exp_avg"])
        assert int(clone.state[q]["step"]) == 1
        assert clone.num_threads == 2 and clone.skip_non_finite
        q.grad = p.grad.clone()
        clone.step()
        assert int(clone.state[q]["step"]) == 2
    assert int(opt.state[p]["step"]) == 1
