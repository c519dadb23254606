"""The 8-bit momentum is bitsandbytes' format: state dicts move both ways between
``lion_optim.torch.Lion(momentum_dtype="q8")`` and ``bitsandbytes.optim.Lion8bit`` (on the CPU,
bitsandbytes from PyPI), and training continues on the other side.

Skipped where bitsandbytes is not installed, unless it is required (``LION_OPTIM_TEST_BNB=1`` or
CI, as ``ci/python.sh`` sets): then a missing bitsandbytes is an error.
"""

from __future__ import annotations

import copy
import io
import os

import pytest
import torch

import lion_optim
from lion_optim.torch import Lion, to_bitsandbytes

if os.environ.get("LION_OPTIM_TEST_BNB") == "1" or os.environ.get("CI", "") not in ("", "0", "false"):
    import bitsandbytes as bnb
else:
    bnb = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as bnbf  # noqa: E402

HP = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
# bitsandbytes keeps tensors below min_8bit_size (4096) in 32 bits: one of each.
SHAPES = [(70, 100), (300,), (4097,)]


def bits(t: torch.Tensor) -> torch.Tensor:
    view = {torch.float32: torch.int32, torch.uint8: torch.uint8}
    return t.detach().contiguous().view(view[t.dtype])


def assert_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.numel() == b.numel()
    assert torch.equal(bits(a).reshape(-1), bits(b).reshape(-1))


def params(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]


def grads(ps, step: int):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen) * 0.1 for p in ps]


def run(ps, opt, steps) -> None:
    for step in steps:
        for p, g in zip(ps, grads(ps, step)):
            p.grad = g
        opt.step()


def saved(sd):
    """Through a file, as a checkpoint goes."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def decoded(codes: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """``Q8_MAP[codes[i]] * absmax[i // 256]``, computed here in torch."""
    table = torch.tensor(lion_optim.Q8_MAP, dtype=torch.float32)
    flat = codes.reshape(-1).long()
    scales = absmax.repeat_interleave(256)[: flat.numel()]
    return table[flat] * scales


def momentum(opt, p) -> torch.Tensor:
    st = opt.state[p]
    if "exp_avg_codes" in st:
        return decoded(st["exp_avg_codes"], st["exp_avg_absmax"])
    if "state1" in st and st["state1"].dtype == torch.uint8:
        return decoded(st["state1"], st["absmax1"])
    return (st["exp_avg"] if "exp_avg" in st else st["state1"]).float().reshape(-1)


def agree(a, b, ps_a, ps_b) -> None:
    """Two optimizers that stepped the same state with the same gradient: the parameters moved
    alike (Lion moves each by lr * sign: they differ only where the interpolation's sign does, at
    elements whose interpolation is within a rounding of zero) and the momenta are within one
    code of each other (bitsandbytes' CPU quantizer looks codes up in a 65,536-bin table that is
    not always the nearest; its update rounds ``m*b2 + g*(1-b2)`` once, ours twice)."""
    for pa, pb in zip(ps_a, ps_b):
        same = (bits(pa.detach()) == bits(pb.detach())).float().mean().item()
        assert same >= 0.999, f"{tuple(pa.shape)}: only {same:.4%} of the parameters agree"
        ma, mb = momentum(a, pa), momentum(b, pb)
        # One code's gap, at most 0.0141 of the block's scale (the widest gap of the map).
        scale = ma.abs().max().item()
        assert (ma - mb).abs().max().item() <= 0.0141 * scale * 1.001


def test_q8_map_is_bitsandbytes_map():
    """bitsandbytes' signed dynamic map, as it computes it here, bit for bit."""
    ours = torch.tensor(lion_optim.Q8_MAP, dtype=torch.float32)
    assert_bits(ours, bnbf.create_dynamic_map(signed=True).float())
    ps = params()
    opt = bnb.optim.Lion8bit(ps, **HP)
    run(ps, opt, [1])
    assert_bits(ours, opt.state[ps[0]]["qmap1"])


def test_bitsandbytes_state_dict_loads_and_training_continues():
    ps = params()
    theirs = bnb.optim.Lion8bit(ps, **HP)
    run(ps, theirs, range(1, 4))
    sd = saved(theirs.state_dict())
    untouched = copy.deepcopy(sd)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    # Another lr and decay here: the checkpoint's win; the momentum dtype stays this optimizer's.
    ours = Lion(qs, lr=5.0, weight_decay=0.0, momentum_dtype="q8", stochastic_rounding=False)
    ours.load_state_dict(sd)
    group = ours.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"]) == (1e-3, (0.9, 0.99), 0.1)
    assert group["momentum_dtype"] == "q8"
    for p, q in zip(ps, qs):
        st, bst = ours.state[q], theirs.state[p]
        assert int(st["step"]) == bst["step"] == 3
        if bst["state1"].dtype == torch.uint8:
            assert_bits(st["exp_avg_codes"], bst["state1"])
            assert_bits(st["exp_avg_absmax"], bst["absmax1"])
            assert st["exp_avg_codes"].shape == p.shape
        else:  # bitsandbytes' 32-bit state of a small tensor: float32 momentum here
            assert q.numel() < 4096
            assert_bits(st["exp_avg"], bst["state1"])
    # The dict that was loaded is not stepped.
    run(ps, theirs, [4])
    run(qs, ours, [4])
    for key, value in sd["state"].items():
        for k, v in value["__bnb_optimizer_quant_state__"].items():
            assert_bits(v, untouched["state"][key]["__bnb_optimizer_quant_state__"][k])
    agree(theirs, ours, ps, qs)
    # And it trains on: fitting targets, the loss keeps falling over 30 more steps.
    target = [torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) for p in qs]

    def loss() -> float:
        return sum(((q.detach() - t) ** 2).mean().item() for q, t in zip(qs, target))

    before = loss()
    for _ in range(30):
        for q, t in zip(qs, target):
            q.grad = 2 * (q.detach() - t) / q.numel()
        ours.step()
    assert loss() < before * 0.99


def test_state_dict_loads_into_bitsandbytes_and_training_continues():
    ps = params(1)
    # 8-bit momentum for the big tensors; bf16 momentum (widened to a float32 state1) for the
    # small one, in a group of its own.
    ours = Lion(
        [{"params": [ps[0], ps[2]], "momentum_dtype": "q8"}, {"params": [ps[1]], "momentum_dtype": torch.bfloat16}],
        **HP,
    )
    run(ps, ours, range(1, 4))
    sd = ours.state_dict()
    assert torch.equal(sd["state"][0]["exp_avg_qmap"], torch.tensor(lion_optim.Q8_MAP))
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    theirs = bnb.optim.Lion8bit([{"params": [qs[0], qs[2]]}, {"params": [qs[1]]}], lr=7.0)
    theirs.load_state_dict(saved(to_bitsandbytes(sd)))
    assert theirs.param_groups[0]["lr"] == 1e-3 and theirs.param_groups[1]["weight_decay"] == 0.1
    for p, q in zip(ps, qs):
        st, bst = ours.state[p], theirs.state[q]
        assert bst["step"] == 3
        if "exp_avg_codes" in st:
            assert_bits(bst["state1"], st["exp_avg_codes"])
            assert_bits(bst["absmax1"], st["exp_avg_absmax"])
            # bitsandbytes decodes them as the same momentum, bit for bit.
            deq = bnbf.dequantize_blockwise(bst["state1"], absmax=bst["absmax1"], code=bst["qmap1"], blocksize=256)
            assert_bits(deq.reshape(-1), decoded(st["exp_avg_codes"], st["exp_avg_absmax"]))
        else:
            assert bst["state1"].dtype == torch.float32
            assert_bits(bst["state1"], st["exp_avg"].float())
    run(ps, ours, [4])
    run(qs, theirs, [4])
    agree(ours, theirs, ps, qs)


def test_bad_bitsandbytes_state_refused_with_nothing_changed():
    ps = params()
    theirs = bnb.optim.Lion8bit(ps, **HP)
    run(ps, theirs, [1])
    good = saved(theirs.state_dict())
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    ours = Lion(qs, lr=1e-2, momentum_dtype="q8")
    run(qs, ours, [1])
    before = copy.deepcopy(ours.state_dict())

    def damaged(edit):
        sd = copy.deepcopy(good)
        edit(sd["state"][0]["__bnb_optimizer_quant_state__"], sd)
        return sd

    def other_map(q, sd):
        q["qmap1"] = q["qmap1"].clone()
        q["qmap1"][200] = torch.nextafter(torch.nextafter(q["qmap1"][200], torch.tensor(2.0)), torch.tensor(2.0))

    cases = [
        (other_map, ValueError, "another code map"),
        (lambda q, sd: q.pop("absmax1"), ValueError, "block_wise=False"),
        (lambda q, sd: q.__setitem__("absmax1", q["absmax1"][:-1]), ValueError, "exp_avg_absmax has shape"),
        (lambda q, sd: q.__setitem__("state2", q["state1"].clone()), ValueError, "state2"),
        (lambda q, sd: q.__setitem__("state1", q["state1"][:-1]), ValueError, "exp_avg_codes has"),
        (lambda q, sd: q.__setitem__("state1", q["state1"].to(torch.int32)), TypeError, "exp_avg has dtype"),
        (lambda q, sd: sd["param_groups"][0].pop("betas"), ValueError, "has no 'betas'"),
    ]
    for edit, exc, message in cases:
        with pytest.raises(exc, match=message):
            ours.load_state_dict(damaged(edit))
        after = ours.state_dict()
        assert after["param_groups"] == before["param_groups"]
        for key, value in before["state"].items():
            for k, v in value.items():
                assert torch.equal(after["state"][key][k], v)
    # The message names the parameter.
    with pytest.raises(ValueError, match=r"^loaded bitsandbytes state of parameter 0: qmap1"):
        ours.load_state_dict(damaged(other_map))


def test_to_bitsandbytes_refuses_what_is_not_a_lion_state():
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        to_bitsandbytes({"state": {}})
    with pytest.raises(ValueError, match="not a Lion param group"):
        to_bitsandbytes({"state": {}, "param_groups": [{"params": [0], "lr": 1.0}]})
    sd = {"state": {0: {"step": 1, "exp_avg": torch.zeros(3, dtype=torch.int32)}}, "param_groups": []}
    with pytest.raises(ValueError, match="no float exp_avg"):
        to_bitsandbytes(sd)
    sd = {
        "state": {0: {"step": 1, "exp_avg_codes": torch.zeros(300, dtype=torch.uint8), "exp_avg_absmax": torch.zeros(1)}},
        "param_groups": [],
    }
    with pytest.raises(ValueError, match="need 2 scales"):
        to_bitsandbytes(sd)
