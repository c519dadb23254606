"""Every bad input is a clear Python exception naming the tensor and the reason, and nothing is
written: every buffer of the call is byte-identical afterwards."""

from __future__ import annotations

import ctypes
import io
import warnings

import numpy as np
import pytest
import torch

import lion_optim
from lion_optim.torch import Lion

# ------------------------------------------------------------------------------------------
# A fake device: an array type whose DLPack C exchange API reports any device type for host
# memory (this machine has no GPU; torch.cuda tensors cannot be made here).


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
        ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
        ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64),
    ]


_FILL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_DLTensor))


class _Api(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("prev", ctypes.c_void_p)] + [
        (name, ctypes.c_void_p) for name in ("alloc", "managed_from", "managed_to")
    ] + [("dltensor_from", _FILL), ("stream", ctypes.c_void_p)]


@_FILL
def _fill(obj_ptr, out):
    obj = ctypes.cast(obj_ptr, ctypes.py_object).value
    t = out.contents
    t.data = obj.array.ctypes.data
    t.device_type, t.device_id, t.ndim = obj.device_type, 0, 1
    t.code, t.bits, t.lanes = 2, 32, 1
    t.shape = obj.shape_arr
    t.strides = obj.strides_arr
    t.byte_offset = 0
    return 0


_API = _Api(1, 3, None, None, None, None, _fill, None)
_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_CAPSULE_NAME = ctypes.create_string_buffer(b"dlpack_exchange_api")  # must outlive the capsule


class FakeDeviceArray:
    """f32 host memory that says it lives on DLPack device `device_type` (2: CUDA)."""

    __dlpack_c_exchange_api__ = _new_capsule(ctypes.addressof(_API), ctypes.addressof(_CAPSULE_NAME), None)

    def __init__(self, n, device_type=2):
        self.array = np.arange(n, dtype=np.float32)
        self.device_type = device_type
        self.shape_arr = (ctypes.c_int64 * 1)(n)
        self.strides_arr = (ctypes.c_int64 * 1)(1)


# ------------------------------------------------------------------------------------------


def raw(t):
    """The bytes of a tensor or array (any layout)."""
    if isinstance(t, np.ndarray):
        return t.tobytes()
    if isinstance(t, FakeDeviceArray):
        return t.array.tobytes()
    if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type == "cpu":
        return t.detach().contiguous().reshape(-1).view(torch.uint8).clone()
    return None  # meta, sparse: no bytes of their own here


def snapshot(*tensors):
    return [raw(t) for t in tensors]


def unchanged(before, *tensors):
    for i, (b, t) in enumerate(zip(before, tensors)):
        if b is None:
            continue
        now = raw(t)
        same = now == b if isinstance(b, bytes) else torch.equal(now, b)
        assert same, f"buffer {i} was modified"


def good(n=10, dtype=torch.float32):
    return torch.randn(n).to(dtype), torch.randn(n).to(dtype), torch.randn(n).to(dtype)


def refused(exc, match, ps, gs, ms, **kw):
    """`lion_optim.step` raises `exc` matching `match`, and writes nothing: a good tensor is
    always first in the lists."""
    p0, g0, m0 = good()
    ps, gs, ms = [p0] + ps, [g0] + gs, [m0] + ms
    everything = ps + gs + ms
    before = snapshot(*everything)
    with pytest.raises(exc, match=match):
        lion_optim.step(ps, gs, ms, lr=0.1, **kw)
    unchanged(before, *everything)


def test_device_layout_and_contiguity():
    p, g, m = good()
    refused(RuntimeError, r"params\[1\] is a meta tensor", [torch.empty(10, device="meta")], [g], [m])
    refused(RuntimeError, r"grads\[1\] is a meta tensor", [p], [torch.empty(10, device="meta")], [m])
    refused(RuntimeError, r"params\[1\] is a CUDA tensor .*CPU tensors only", [FakeDeviceArray(10)], [g], [m])
    refused(RuntimeError, r"exp_avgs\[1\] is a non-CPU tensor", [p], [g], [FakeDeviceArray(10, device_type=99)])
    t = torch.randn(5, 2).t()
    refused(RuntimeError, r"params\[1\] is not contiguous \(shape \(2, 5\), strides \(1, 2\)\)",
            [t], [torch.randn(2, 5)], [torch.zeros(2, 5)])
    refused(RuntimeError, r"grads\[1\] is not contiguous", [torch.randn(2, 5)], [t], [torch.zeros(2, 5)])
    refused(RuntimeError, r"exp_avgs\[1\] is not contiguous", [torch.randn(2, 5)], [torch.randn(2, 5)], [t])
    refused(RuntimeError, r"grads\[1\] has layout torch.sparse_coo", [p], [g.to_sparse()], [m])
    refused(RuntimeError, r"params\[1\] is not contiguous", [torch.zeros(1).expand(10)], [g], [m])
    a = np.zeros((4, 6), np.float32)[:, ::2]
    refused(RuntimeError, r"params\[1\] is not C-contiguous", [a], [np.zeros((4, 3), np.float32)], [np.zeros(12, np.float32)])


def test_types_dtypes_shapes_and_lengths():
    p, g, m = good()
    refused(TypeError, r"params\[1\] has dtype float64; supported: float32, bfloat16, float16", [p.double()], [g], [m])
    refused(TypeError, r"grads\[1\] has dtype int32", [p], [g.int()], [m])
    refused(TypeError, r"exp_avgs\[1\] has dtype float64", [p], [g], [np.zeros(10)])
    refused(TypeError, r"params\[1\] expected a torch.Tensor or a numpy.ndarray, got list", [[1.0] * 10], [g], [m])
    refused(ValueError, r"grads\[1\] has shape \(2, 5\), the parameter \(10,\)", [p], [g.view(2, 5)], [m])
    refused(ValueError, r"exp_avgs\[1\] has 9 elements, the parameter 10", [p], [g], [m[:9]])
    with pytest.raises(ValueError, match="grads has 1 entries, params 2"):
        lion_optim.step([p, p.clone()], [g], [m, m.clone()])
    with pytest.raises(ValueError, match="offsets has 1 entries, params 2"):
        lion_optim.step([p, p.clone()], [g, g], [m, m.clone()], offsets=[0])


def test_numpy_read_only_and_misaligned():
    p, g, m = (np.ones(10, np.float32) for _ in range(3))
    ro = np.frombuffer(bytes(40), dtype=np.float32)
    refused(ValueError, r"params\[1\] is read-only", [ro], [g], [m])
    refused(ValueError, r"exp_avgs\[1\] is read-only", [p], [g], [ro])
    lion_optim.step(p, ro, m)  # a read-only gradient is fine
    buf = bytearray(45)
    mis = np.frombuffer(buf, dtype=np.float32, offset=1, count=10)
    refused(RuntimeError, r"params\[1\] is misaligned", [mis], [g], [m])


def test_overlapping_buffers():
    p, g, m = good(20)
    refused(RuntimeError, r"params\[1\]: .* and exp_avgs\[1\]|params\[1\] and exp_avgs\[1\] overlap", [p], [g], [p])
    refused(RuntimeError, r"overlap in memory", [p[:10]], [g[:10]], [p[5:15]])
    refused(RuntimeError, r"overlap in memory", [p], [p], [m])  # a gradient aliasing its parameter
    refused(RuntimeError, r"overlap in memory", [p[:10], p[10:]], [g[:10], p[5:15]], [m[:10], m[10:]])
    refused(RuntimeError, r"params\[1\] and params\[2\] overlap", [p, p], [g, g], [m, m.clone()])
    # Gradients may share memory (they are only read).
    q = torch.zeros(20)
    lion_optim.step([p, q], [g, g], [m, torch.zeros(20)], lr=0.1)


def test_bad_hyperparameters_and_options():
    p, g, m = good()
    for kw, match in [
        (dict(lr=-1e-3), "Invalid learning rate: -0.001"),
        (dict(lr=float("inf")), "Invalid learning rate: inf"),
        (dict(lr=1e39), r"invalid hyperparameter lr = 1000+: must be a finite f32"),
        (dict(betas=(1.0, 0.5)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.5, float("nan"))), "Invalid beta parameter at index 1: nan"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        # lr * weight_decay > 1 would flip the parameters' signs
        (dict(lr=0.5, weight_decay=3.0), r"weight_decay = 3: the decay factor 1 - lr \* weight_decay must be in \[0, 1\]"),
        (dict(weight_decay=0.5, max_lr=0.01), r"the decay factor 1 - weight_decay \* lr / max_lr"),
        (dict(grad_unscale=0.0), "Invalid grad_unscale value: 0.0"),
        (dict(max_lr=-1.0), "Invalid max_lr value"),
        (dict(seed=2**64), "Invalid seed"),
        (dict(step=-1), "Invalid step"),
        (dict(cautious_totals=[(1, 10)]), "cautious_totals needs cautious=True"),
        (dict(cautious=True, cautious_totals=[(11, 10)]), "cautious.agreeing"),
        (dict(cautious=True, cautious_totals=[(1, 5)]), "cautious.numel"),
        (dict(grad_unscale=1e-50), "grad_unscale"),
        (dict(offsets=-1), r"Invalid offsets\[0\]: -1"),
        (dict(streams=[2**64]), r"Invalid streams\[0\]"),
    ]:
        before = snapshot(p, g, m)
        with pytest.raises(ValueError, match=match):
            lion_optim.step(p, g, m, **{"lr": 0.1, **kw})
        unchanged(before, p, g, m)
    with pytest.raises(TypeError, match="lr must be a float"):
        lion_optim.step(p, g, m, lr="fast")


# ------------------------------------------------------------------------------------------
# The optimizer


def model_and_opt(**kw):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(4))]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = Lion(ps, lr=0.1, **kw)
    opt.step()  # state exists
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps, opt


def opt_refused(opt, exc, match):
    """`opt.step()` raises and changes no parameter, gradient or state tensor."""
    tensors = []
    for g in opt.param_groups:
        for p in g["params"]:
            tensors.append(p)
            if p.grad is not None:
                tensors.append(p.grad)
            for v in opt.state.get(p, {}).values():
                if isinstance(v, torch.Tensor):
                    tensors.append(v)
    before = snapshot(*tensors)
    steps = [int(opt.state[p]["step"]) for g in opt.param_groups for p in g["params"] if opt.state.get(p)]
    with pytest.raises(exc, match=match):
        opt.step()
    unchanged(before, *tensors)
    assert steps == [int(opt.state[p]["step"]) for g in opt.param_groups for p in g["params"] if opt.state.get(p)]


def test_optimizer_bad_tensors():
    ps, opt = model_and_opt()
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    meta.grad = torch.empty(3, device="meta")
    opt.add_param_group({"params": [meta]})
    opt_refused(opt, RuntimeError, r"parameter 2 \(group 1\): the parameter is a meta tensor")

    ps, opt = model_and_opt()
    ps[0].grad = torch.randn(4, 6).t()
    opt_refused(opt, RuntimeError, r"parameter 0: its gradient is not contiguous")

    nc = torch.nn.Parameter(torch.randn(4, 6).t())
    nc.grad = torch.randn(6, 4)
    ps, opt = model_and_opt()
    opt.add_param_group({"params": [nc]})
    opt_refused(opt, RuntimeError, r"parameter 2 \(group 1\): the parameter is not contiguous")

    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = Lion(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    opt_refused(opt, RuntimeError, r"parameter 0: its gradient has layout torch.sparse_coo")

    ps, opt = model_and_opt()
    ps[1].grad.data = torch.randn(5)
    opt_refused(opt, ValueError, r"parameter 1: its gradient has shape \(5,\), the parameter \(4,\)")

    d = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    d.grad = torch.randn(3, dtype=torch.float64)
    ps, opt = model_and_opt()
    opt.add_param_group({"params": [d]})
    opt_refused(opt, TypeError, r"parameter 2 \(group 1\): the parameter has dtype float64")


def test_optimizer_aliasing():
    ps, opt = model_and_opt()
    ps[1].grad = ps[1].detach()
    opt_refused(opt, RuntimeError, r"parameter 1: the parameter and parameter 1: its gradient overlap in memory")
    p = torch.nn.Parameter(torch.randn(5))
    p.grad = torch.randn(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the duplicate
        opt = Lion([p, p], lr=0.1)
    opt_refused(opt, RuntimeError, r"overlap in memory")


def test_optimizer_bad_state_and_settings():
    ps, opt = model_and_opt()
    opt.state[ps[1]]["exp_avg"] = torch.zeros(5)
    opt_refused(opt, ValueError, r"the state of parameter 1: exp_avg has 5 elements \(shape \(5,\)\), the parameter 4")
    ps, opt = model_and_opt()
    opt.state[ps[0]]["exp_avg"] = torch.zeros(6, 4, dtype=torch.float64)
    opt_refused(opt, TypeError, r"the state of parameter 0: exp_avg has dtype torch.float64")
    ps, opt = model_and_opt()
    opt.state[ps[0]]["step"] = -3
    opt_refused(opt, ValueError, r"the state of parameter 0: step must be an int >= 0, got -3")
    ps, opt = model_and_opt()
    opt.state[ps[0]]["step"].fill_(-2)
    opt_refused(opt, ValueError, r"parameter 0: its state 'step' is -2")
    ps, opt = model_and_opt()
    opt.param_groups[0]["lr"] = float("nan")
    opt_refused(opt, ValueError, r"param group 0: invalid hyperparameter lr = NaN")
    ps, opt = model_and_opt()
    opt.param_groups[0]["betas"] = "fast"
    opt_refused(opt, TypeError, r"param group 0: 'betas' must be a pair of floats, got str")
    ps, opt = model_and_opt()
    opt.param_groups[0]["seed"] = -1
    opt.param_groups[0]["stochastic_rounding"] = True
    opt_refused(opt, TypeError, r"param group 0: 'seed' must be an int in \[0, 2\*\*64\)")


def test_load_state_dict_that_does_not_fit():
    ps, opt = model_and_opt(momentum_dtype=torch.bfloat16)
    good_sd = opt.state_dict()
    buf = io.BytesIO()
    torch.save(good_sd, buf)

    def fresh_sd():
        buf.seek(0)
        return torch.load(buf, weights_only=True)

    cases = []
    sd = fresh_sd(); sd["param_groups"].append(dict(sd["param_groups"][0], params=[]))
    cases.append((sd, ValueError, "different number of parameter groups"))
    sd = fresh_sd(); sd["param_groups"][0]["params"] = [0]
    cases.append((sd, ValueError, "doesn't match the size of optimizer's group"))
    sd = fresh_sd(); sd["state"][1]["exp_avg"] = torch.zeros(7)
    cases.append((sd, ValueError, r"loaded state of parameter 1: exp_avg has 7 elements"))
    sd = fresh_sd(); sd["state"][0]["exp_avg"] = torch.zeros(6, 4, dtype=torch.int32)
    cases.append((sd, TypeError, r"loaded state of parameter 0: exp_avg has dtype torch.int32"))
    sd = fresh_sd(); sd["state"][0]["step"] = torch.tensor(-1)
    cases.append((sd, ValueError, r"loaded state of parameter 0: step must be an int >= 0"))
    sd = fresh_sd(); sd["state"][0]["step"] = torch.tensor([1.0, 2.0])
    cases.append((sd, ValueError, r"step is a tensor of 2 elements"))
    sd = fresh_sd(); del sd["state"][0]["exp_avg"]
    cases.append((sd, ValueError, r"loaded state of parameter 0 has no exp_avg tensor"))
    sd = fresh_sd(); sd["param_groups"][0]["lr"] = -1.0
    cases.append((sd, ValueError, r"loaded param group 0: Invalid learning rate: -1.0"))
    sd = fresh_sd(); sd["state"][5] = sd["state"][0]
    cases.append((sd, ValueError, r"state for parameter id 5, which no group lists"))
    sd = fresh_sd(); sd["state"][0] = [1, 2]
    cases.append((sd, ValueError, r"loaded state of parameter 0 is not a dict"))
    cases.append(({"state": {}}, ValueError, "must be a dict with 'state' and 'param_groups'"))
    for sd, exc, match in cases:
        tensors = ps + [v for p in ps for v in opt.state[p].values()]
        before = snapshot(*tensors)
        groups = [dict(g) for g in opt.param_groups]
        with pytest.raises(exc, match=match):
            opt.load_state_dict(sd)
        unchanged(before, *tensors)
        assert [dict(g) for g in opt.param_groups] == groups
    opt.load_state_dict(fresh_sd())  # and the good one loads
