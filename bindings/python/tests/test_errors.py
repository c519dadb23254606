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
    # A transposed matrix is dense (in another order): its gradient and momentum must be laid
    # out alike (the step pairs elements in memory order).
    t = torch.randn(5, 2).t()
    refused(ValueError, r"grads\[1\] has strides \(5, 1\), the parameter \(1, 2\) \(shape \(2, 5\)\): the step "
            r"pairs elements in memory order", [t], [torch.randn(2, 5)], [torch.zeros(2, 5)])
    refused(ValueError, r"grads\[1\] has strides \(1, 2\), the parameter \(5, 1\)", [torch.randn(2, 5)], [t], [torch.zeros(2, 5)])
    refused(ValueError, r"exp_avgs\[1\] has shape \(2, 5\) and strides \(1, 2\), the parameter shape \(2, 5\) and "
            r"strides \(5, 1\)", [torch.randn(2, 5)], [torch.randn(2, 5)], [t])
    refused(ValueError, r"exp_avgs\[1\] has shape \(10,\) and strides \(1,\), the parameter shape \(2, 5\)",
            [t.clone()], [t.clone()], [torch.zeros(10)])
    refused(RuntimeError, r"grads\[1\] has layout torch.sparse_coo", [p], [g.to_sparse()], [m])
    # Not dense: overlapping (expanded) or with gaps (strided).
    refused(RuntimeError, r"params\[1\] is not dense \(shape \(10,\), strides \(0,\)\): its elements do not fill",
            [torch.zeros(1).expand(10)], [g], [m])
    refused(RuntimeError, r"grads\[1\] is not dense \(shape \(2, 5\), strides \(10, 2\)\)",
            [torch.zeros(2, 5)], [torch.zeros(2, 10)[:, ::2]], [torch.zeros(2, 5)])
    a = np.zeros((4, 6), np.float32)[:, ::2]
    refused(RuntimeError, r"params\[1\] is not dense \(shape \(4, 3\), byte strides \(24, 8\)\)",
            [a], [np.zeros((4, 3), np.float32)], [np.zeros(12, np.float32)])


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
    """Hyperparameters are the core's to judge: its message (naming the call and the
    parameter) comes through as a ValueError; a value of the wrong Python type is a TypeError;
    what the core never sees (seed, step, offsets, streams, thread counts) is checked here."""
    p, g, m = good()
    core = r"^lion_optim.step: invalid hyperparameter "
    for kw, exc, match in [
        (dict(lr=-1e-3), ValueError, core + r"lr = -0.001: must be finite and >= 0$"),
        (dict(lr=float("inf")), ValueError, core + r"lr = inf: must be finite and >= 0$"),
        (dict(lr=1e39), ValueError, core + r"lr = 1000+: must be a finite f32"),
        (dict(betas=(1.0, 0.5)), ValueError, core + r"beta1 = 1: must be in \[0, 1\)$"),
        (dict(betas=(0.5, float("nan"))), ValueError, core + r"beta2 = NaN: must be in \[0, 1\)$"),
        (dict(weight_decay=-1.0), ValueError, core + r"weight_decay = -1: must be finite and >= 0$"),
        # lr * weight_decay > 1 would flip the parameters' signs
        (dict(lr=0.5, weight_decay=3.0), ValueError,
         core + r"weight_decay = 3: the decay factor 1 - lr \* weight_decay must be in \[0, 1\]"),
        (dict(weight_decay=0.5, max_lr=0.01), ValueError,
         core + r"weight_decay = 0.5: the decay factor 1 - weight_decay \* lr / max_lr"),
        (dict(grad_unscale=0.0), ValueError, core + r"grad_unscale = 0: must be > 0 and finite in f32$"),
        (dict(grad_unscale=1e-50), ValueError, core + r"grad_unscale = 0.0+1: must be > 0 and finite in f32$"),
        (dict(max_lr=-1.0), ValueError, core + r"max_lr = -1: must be finite and > 0$"),
        (dict(cautious=True, cautious_totals=[(11, 10)]), ValueError,
         r"^lion_optim.step: tensor 1: invalid hyperparameter cautious.agreeing = 11: must be <= cautious.numel$"),
        (dict(cautious=True, cautious_totals=[(1, 5)]), ValueError, r"invalid hyperparameter cautious.numel = 5"),
        (dict(betas=(0.9,)), ValueError, r"^lion_optim.step: 'betas' must be a pair of floats, got 1 values$"),
        (dict(lr="fast"), TypeError, r"^lion_optim.step: 'lr' must be a float, got str$"),
        (dict(betas="fast"), TypeError, r"^lion_optim.step: 'betas' must be a pair of floats, got str$"),
        (dict(max_lr="1"), TypeError, r"^lion_optim.step: 'max_lr' must be a float or None, got str$"),
        (dict(seed=2**64), ValueError,
         r"^lion_optim.step: 'seed' must be an int in \[0, 2\*\*64\), got 18446744073709551616$"),
        (dict(seed=True), TypeError, r"^lion_optim.step: 'seed' must be an int in \[0, 2\*\*64\), got bool$"),
        (dict(step=-1), ValueError, "Invalid step"),
        (dict(cautious_totals=[(1, 10)]), ValueError, "cautious_totals needs cautious=True"),
        (dict(offsets=-1), ValueError, r"Invalid offsets\[0\]: -1"),
        (dict(streams=[2**64]), ValueError, r"Invalid streams\[0\]"),
        (dict(num_threads=0), ValueError, r"Invalid num_threads: 0"),
        (dict(num_threads=1.5), TypeError, r"num_threads must be an int or None, got float"),
    ]:
        ps, gs, ms = p, g, m
        if "cautious_totals" in kw:
            # Two tensors, the second one's pair bad (a good pair first).
            ps, gs, ms = [p, p.clone()], [g, g.clone()], [m, m.clone()]
            kw = dict(kw, cautious_totals=[(0, 10), kw["cautious_totals"][0]])
        everything = [ps, gs, ms] if isinstance(ps, torch.Tensor) else ps + gs + ms
        before = snapshot(*everything)
        with pytest.raises(exc, match=match):
            lion_optim.step(ps, gs, ms, **{"lr": 0.1, **kw})
        unchanged(before, *everything)


def test_cautious_count_bad_settings():
    g, m = torch.randn(10), torch.randn(10)
    core = r"^lion_optim.cautious_count: invalid hyperparameter "
    with pytest.raises(ValueError, match=core + r"beta2 = 1: must be in \[0, 1\)$"):
        lion_optim.cautious_count(g, m, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=core + r"grad_unscale = -1"):
        lion_optim.cautious_count(g, m, grad_unscale=-1.0)
    with pytest.raises(TypeError, match=r"^lion_optim.cautious_count: 'betas' must be a pair of floats, got NoneType$"):
        lion_optim.cautious_count(g, m, betas=None)


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
    ps[0].grad = torch.randn(4, 6).t()
    opt_refused(opt, ValueError, r"^parameter 0: its gradient has strides \(1, 6\), the parameter \(4, 1\)")

    nc = torch.nn.Parameter(torch.randn(4, 6).t())  # dense, in another order: accepted
    nc.grad = torch.randn(6, 4)
    ps, opt = model_and_opt()
    opt.add_param_group({"params": [nc]})
    opt_refused(opt, ValueError, r"^parameter 2 \(group 1\): its gradient has strides \(4, 1\), the parameter \(1, 6\)")

    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = Lion(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    opt_refused(opt, RuntimeError, r"parameter 0: its gradient has layout torch.sparse_coo")

    ps, opt = model_and_opt()
    ps[1].grad.data = torch.randn(5)
    opt_refused(opt, ValueError, r"parameter 1: its gradient has shape \(5,\), the parameter \(4,\)")


def test_parameters_refused_at_construction_and_in_add_param_group():
    """What a step cannot step (an unsupported dtype, sparse, meta, not dense) is refused when
    the optimizer is made or the group added, with the step's message, and nothing stored."""
    ok = torch.nn.Parameter(torch.randn(3))
    f64 = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    cases = [
        (f64, TypeError, r"the parameter has dtype float64; supported: float32, bfloat16, float16$"),
        (torch.zeros(3, dtype=torch.int32), TypeError, r"the parameter has dtype int32; supported"),
        (torch.zeros(3, dtype=torch.uint8), TypeError, r"the parameter has dtype uint8; supported"),
        (torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64)), TypeError, r"the parameter has dtype complex64"),
        (torch.nn.Parameter(torch.randn(4, 3).to_sparse()), RuntimeError,
         r"the parameter has layout torch.sparse_coo: sparse and other non-strided tensors are not supported$"),
        (torch.nn.Parameter(torch.empty(3, device="meta")), RuntimeError, r"the parameter is a meta tensor \(it has no data\)$"),
        (torch.randn(4, 6)[:, ::2], RuntimeError, r"the parameter is not dense \(shape \(4, 3\), strides \(6, 2\)\)"),
    ]
    for bad, exc, reason in cases:
        with pytest.raises(exc, match=r"^parameter 1: " + reason):
            Lion([ok, bad], lr=0.1)
        with pytest.raises(exc, match=r"^parameter 'b': " + reason):
            Lion([("a", ok), ("b", bad)], lr=0.1)
        with pytest.raises(exc, match=r"^parameter 2 \(group 1\): " + reason):
            Lion([{"params": [ok]}, {"params": iter([ok.detach().clone(), bad])}], lr=0.1)
        opt = Lion([ok], lr=0.1)
        with pytest.raises(exc, match=r"^parameter 1 \(group 1\): " + reason):
            opt.add_param_group({"params": [bad]})
        assert len(opt.param_groups) == 1 and not opt.state
    # (A CUDA parameter is refused the same way, "the parameter is a CUDA tensor (DLPack
    # device type 2); lion_optim steps CPU tensors only"; this machine has no GPU to make one.)
    # A generator of parameters is read once, and still works.
    opt = Lion((p for p in [ok]), lr=0.1)
    assert opt.param_groups[0]["params"] == [ok]


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
    opt_refused(opt, ValueError, r"^param group 0: invalid hyperparameter lr = NaN: must be finite and >= 0$")
    ps, opt = model_and_opt()
    opt.param_groups[0]["betas"] = (0.9, 1.0)
    opt_refused(opt, ValueError, r"^param group 0: invalid hyperparameter beta2 = 1: must be in \[0, 1\)$")
    ps, opt = model_and_opt()
    opt.param_groups[0]["weight_decay"] = 20.0
    opt_refused(opt, ValueError, r"^param group 0: invalid hyperparameter weight_decay = 20: the decay factor")
    ps, opt = model_and_opt()
    opt.param_groups[0]["grad_unscale"] = "0.5"
    opt_refused(opt, TypeError, r"^param group 0: 'grad_unscale' must be a float or None, got str$")
    ps, opt = model_and_opt()
    opt.param_groups[0]["betas"] = "fast"
    opt_refused(opt, TypeError, r"param group 0: 'betas' must be a pair of floats, got str")
    ps, opt = model_and_opt()
    opt.param_groups[0]["seed"] = -1
    opt.param_groups[0]["stochastic_rounding"] = True
    opt_refused(opt, ValueError, r"^param group 0: 'seed' must be an int in \[0, 2\*\*64\), got -1$")


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
    cases.append((sd, ValueError, r"^loaded param group 0: invalid hyperparameter lr = -1: must be finite and >= 0$"))
    sd = fresh_sd(); sd["param_groups"][0]["betas"] = (0.9, 2.0)
    cases.append((sd, ValueError, r"^loaded param group 0: invalid hyperparameter beta2 = 2"))
    sd = fresh_sd(); sd["param_groups"][0]["seed"] = "7"
    cases.append((sd, TypeError, r"^loaded param group 0: 'seed' must be an int in \[0, 2\*\*64\), got str$"))
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
