"""``lion_optim.torch.Lion``: a drop-in ``torch.optim.Optimizer`` running the Rust Lion step.

The one-line swap from the reference implementation (google/automl ``lion_pytorch.py``)::

    # from lion_pytorch import Lion
    from lion_optim.torch import Lion
    opt = Lion(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)

Same signature, defaults, validation messages, param groups and state (``exp_avg``, plus a
``step`` count), and the crate's options as keyword arguments. Every ``step()`` is one call into Rust over all parameters of all groups, with
the GIL released and the work spread over ``num_threads`` threads (default: torch's intra-op
thread count); parameters, gradients and momentum are updated in place, zero-copy.
"""

from __future__ import annotations

import array
import collections
import math
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from . import _check_hyper, _check_options, _lion_optim

__all__ = ["Lion", "assign_streams"]

_MOMENTUM_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16)

# Step hooks and the profiler: when none is active, `Lion.step` skips torch's wrapper for them
# (`Optimizer.profile_hook_step`, ~6 us); when one is, it runs through that wrapper.
try:
    from torch.optim.optimizer import _global_optimizer_post_hooks as _GLOBAL_POST_HOOKS
    from torch.optim.optimizer import _global_optimizer_pre_hooks as _GLOBAL_PRE_HOOKS

    _profiler_enabled = torch._C._autograd._profiler_enabled
    _FAST_STEP = callable(getattr(torch.optim.Optimizer, "profile_hook_step", None))
except (ImportError, AttributeError):  # pragma: no cover - other torch versions
    _FAST_STEP = False
_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
_STREAM_ATTR = "lion_stream"


def assign_streams(params: Iterable[torch.Tensor], start: int = 0) -> None:
    """Gives each parameter a fixed stochastic-rounding stream: its position in ``params``
    (plus ``start``), stored as the attribute ``lion_stream`` of the tensor.

    A :class:`Lion` draws a parameter's rounding bits from its ``lion_stream`` if it has one,
    else from its position in the optimizer. Call it on ``model.parameters()`` before building
    optimizers that split the model differently (``ZeroRedundancyOptimizer``, one optimizer per
    stage), so that every parameter rounds exactly as in a single-process run.
    """
    for i, p in enumerate(params, start):
        setattr(p, _STREAM_ATTR, int(i))


def _bump(changes: List[int]) -> None:
    changes[0] += 1


class _State(collections.defaultdict):
    """``Optimizer.state`` that counts its changes, and the changes of the per-parameter dicts
    it holds, in one shared counter: ``Lion`` re-reads the state only when something
    (``load_state_dict``, ``ZeroRedundancyOptimizer``, the user) changed an entry."""

    __slots__ = ("_changes",)

    def __init__(self, initial: Any = ()) -> None:
        super().__init__(None, initial)
        self._changes = [0]
        self.default_factory = self._fresh

    def _fresh(self) -> "_ParamState":
        return _ParamState(self._changes)

    def __reduce__(self) -> Any:
        return (collections.defaultdict, (dict, {k: dict(v) for k, v in self.items()}))

    def __setitem__(self, key: Any, value: Any) -> None:
        _bump(self._changes)
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        _bump(self._changes)
        super().__delitem__(key)

    def clear(self) -> None:
        _bump(self._changes)
        super().clear()

    def pop(self, *args: Any) -> Any:
        _bump(self._changes)
        return super().pop(*args)

    def popitem(self) -> Any:
        _bump(self._changes)
        return super().popitem()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        _bump(self._changes)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        _bump(self._changes)
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> "_State":
        _bump(self._changes)
        return super().__ior__(other)


class _ParamState(dict):
    """One parameter's state (``step``, ``exp_avg``), counting its changes in its optimizer's
    counter. Pickles, copies and ``state_dict()``s as a plain dict."""

    __slots__ = ("_changes",)

    def __init__(self, changes: List[int], initial: Any = ()) -> None:
        super().__init__(initial)
        self._changes = changes

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))

    def __setitem__(self, key: Any, value: Any) -> None:
        _bump(self._changes)
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        _bump(self._changes)
        super().__delitem__(key)

    def clear(self) -> None:
        _bump(self._changes)
        super().clear()

    def pop(self, *args: Any) -> Any:
        _bump(self._changes)
        return super().pop(*args)

    def popitem(self) -> Any:
        _bump(self._changes)
        return super().popitem()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        _bump(self._changes)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        _bump(self._changes)
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> "_ParamState":
        _bump(self._changes)
        return super().__ior__(other)


_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class _Home:
    """A momentum buffer owned by the optimizer: a ``bytearray`` (held with a memoryview, so it
    can never be resized) and the ``exp_avg`` tensor that views it. The Rust side writes the
    bytearray; since the optimizer owns it, it needs no checks at every step."""

    __slots__ = ("tensor", "buf", "view", "code", "numel")

    def __init__(self, shape: Tuple[int, ...], dtype: torch.dtype) -> None:
        numel = math.prod(shape)
        size = torch.empty((), dtype=dtype).element_size()
        self.buf = bytearray(numel * size)
        self.view = memoryview(self.buf)
        self.code = _DTYPE_CODE[dtype]
        self.numel = numel
        if numel == 0:
            self.tensor = torch.zeros(shape, dtype=dtype)
        else:
            self.tensor = torch.frombuffer(self.buf, dtype=dtype).view(shape)


# The keys of a param group beyond the reference's, with their defaults (for checkpoints of
# the reference class, which lack them).
_GROUP_DEFAULTS: Dict[str, Any] = {
    "momentum_dtype": None,
    "maximize": False,
    "stochastic_rounding": False,
    "seed": 0,
    "max_lr": None,
    "cautious": False,
    "grad_unscale": None,
}


def _check_group(group: Dict[str, Any], where: str) -> None:
    _check_hyper(group["lr"], group["betas"], group["weight_decay"], where)
    _check_options(group.get("max_lr"), group.get("grad_unscale"), group.get("seed", 0), None, where)
    md = group.get("momentum_dtype")
    if md not in _MOMENTUM_DTYPES:
        raise TypeError(
            f"{where}: momentum_dtype must be None (the parameter's dtype), torch.float32, "
            f"torch.bfloat16 or torch.float16, got {md!r}"
        )


class Lion(torch.optim.Optimizer):
    r"""The Lion optimizer (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"),
    fused in Rust: one pass over memory per step, bit-exact on every CPU.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts defining
            parameter groups (each group may set any keyword below except ``skip_non_finite``
            and ``num_threads``).
        lr: learning rate (default 1e-4).
        betas: ``(beta1, beta2)``: the interpolation of the update's sign and the momentum's
            decay (default (0.9, 0.99)).
        weight_decay: decoupled weight decay: ``p *= 1 - lr * weight_decay`` (default 0).
        momentum_dtype: the dtype of ``exp_avg``: None (the parameter's, as the reference),
            ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``.
        stochastic_rounding: round bfloat16/float16 parameters and momentum stochastically
            (unbiased: small updates survive in bf16). The random bits are a pure function of
            ``(seed, stream, step, element index)``; a parameter's stream is its ``lion_stream``
            attribute (see :func:`assign_streams`) or else its position in the optimizer (across
            groups, as in ``state_dict()``), its step its own ``state["step"]``.
        seed: the seed of the stochastic rounding bits (an int in [0, 2**64)).
        maximize: maximize the objective. The momentum averages the gradients as given (torch's
            ``maximize`` optimizers average ``-grad``: parameters identical, momentum negated).
        max_lr: fully decoupled weight decay (``p *= 1 - weight_decay * lr / max_lr``, as timm's
            and optimi's), instead of the paper's ``1 - lr * weight_decay``. None: the paper's.
        cautious: the cautious variant (Liang et al., 2024): move only where the update's sign
            agrees with the gradient, rescaled by ``numel / (agreeing + 1)`` per tensor.
        grad_unscale: multiply every gradient by this first (``1 / loss_scale`` of a manual AMP
            loop), inside the same pass; set ``group["grad_unscale"]`` before each step as the
            scale changes. None: gradients as they are.
        skip_non_finite: if any gradient (after unscaling) is inf or NaN, skip the whole step
            (nothing written, ``step`` counts unchanged): ``last_step_skipped`` tells, and
            ``skipped_steps`` counts.
        num_threads: threads for the step (default None: ``torch.get_num_threads()`` at each
            step).

    State per parameter (created at its first step with a gradient): ``step`` (a 0-dim int64
    tensor: the steps it took) and ``exp_avg`` (the momentum, contiguous, of
    ``momentum_dtype``). Both view buffers the optimizer owns (so a step needs no checks of its
    own state): change them in place, or assign new tensors (``state[p]["exp_avg"] = t``: the
    next step adopts a copy), but do not swap their storage (``.data = ...``, ``.set_()``),
    which the optimizer would not see. ``state_dict()`` is torch's standard format, and
    ``load_state_dict()`` keeps each ``exp_avg``'s dtype (the base class would cast it to the
    parameter's dtype). As with torch's own optimizers, ``state_dict()`` returns the live state
    tensors: ``torch.save`` it (or ``copy.deepcopy`` it) before further steps if you keep it.

    Parameters whose ``grad`` is None are skipped. Parameters, gradients and momentum may be
    float32, bfloat16 or float16, each (any mix); they must be CPU tensors, contiguous, dense,
    with the gradient of the parameter's shape. Any bad input raises ``TypeError``,
    ``ValueError`` or ``RuntimeError`` naming the parameter, before anything is written.

    Differences from the reference class, all on purpose: the momentum update rounds
    ``m*b2`` and ``g*(1-b2)`` separately (PyTorch's CPU ``add_(alpha=)`` fuses them), so the
    momentum may differ from the reference's by one f32 rounding in some elements; for
    bfloat16/float16 parameters the step is computed in f32 and rounded once (the reference
    rounds after the decay and after the update). Parameters after a step from the same f32
    state are bit-identical to the reference's. Writes do not bump autograd's version counter
    (as writes through ``p.data``).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: Tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        momentum_dtype: Optional[torch.dtype] = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        maximize: bool = False,
        max_lr: Optional[float] = None,
        cautious: bool = False,
        grad_unscale: Optional[float] = None,
        skip_non_finite: bool = False,
        num_threads: Optional[int] = None,
    ) -> None:
        _check_hyper(lr, betas, weight_decay)
        _check_options(max_lr, grad_unscale, seed, num_threads)
        defaults = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            momentum_dtype=momentum_dtype,
            maximize=bool(maximize),
            stochastic_rounding=bool(stochastic_rounding),
            seed=seed,
            max_lr=max_lr,
            cautious=bool(cautious),
            grad_unscale=grad_unscale,
        )
        _check_group(defaults, "defaults")
        self._homes: Dict[int, _Home] = {}
        self._invalidate()
        self.skip_non_finite = bool(skip_non_finite)
        self.num_threads = num_threads
        self.skipped_steps = 0
        self.last_step_skipped = False
        super().__init__(params, defaults)
        self.state = _State(self.state)

    # -------------------------------------------------------------------------------------
    # torch.optim.Optimizer protocol

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a param group (``torch.optim.Optimizer.add_param_group``), after checking its
        settings (those it sets, with the defaults for the others)."""
        if isinstance(param_group, dict):
            merged = dict(self.defaults)
            merged.update({k: v for k, v in param_group.items() if k not in ("params", "param_names")})
            _check_group(merged, f"param group {len(self.param_groups)}")
        super().add_param_group(param_group)
        self._invalidate()

    def state_dict(self) -> Dict[str, Any]:
        """The standard ``torch.optim`` state dict: ``{"state": {id: {"step", "exp_avg"}},
        "param_groups": [...]}``. ``step`` is a 0-dim int64 tensor, ``exp_avg`` the momentum in
        its own dtype. The tensors are the live state (as torch's optimizers do): save or
        deep-copy the dict before the next step if you keep it."""
        sd = super().state_dict()
        sd["state"] = {k: dict(v) if isinstance(v, dict) else v for k, v in sd["state"].items()}
        return sd

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["state"] = collections.defaultdict(
            dict, {k: dict(v) if isinstance(v, dict) else v for k, v in state["state"].items()}
        )
        state["skip_non_finite"] = self.skip_non_finite
        state["num_threads"] = self.num_threads
        state["skipped_steps"] = self.skipped_steps
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in _GROUP_DEFAULTS.items():
                group.setdefault(k, v)
        for k, v in (("skip_non_finite", False), ("num_threads", None), ("skipped_steps", 0), ("last_step_skipped", False)):
            self.__dict__.setdefault(k, v)
        self.__dict__.setdefault("_homes", {})
        if not isinstance(self.state, _State):
            self.state = _State(self.state)
        self._invalidate()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a state dict of this class (or of the reference class: its groups get this
        class's defaults), keeping each ``exp_avg``'s dtype, in memory of its own (a copy:
        stepping never changes the dict that was loaded).

        Checks first that it fits (the number and sizes of groups, every group's settings, every
        state's ``exp_avg``: a float32/bfloat16/float16 tensor with its parameter's number of
        elements; ``step``: an int or one-element tensor >= 0) and raises ``ValueError`` or
        ``TypeError`` naming the parameter otherwise, with nothing changed.
        """
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g, sg in zip(self.param_groups, saved_groups):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
                )
        for i, sg in enumerate(saved_groups):
            merged = dict(_GROUP_DEFAULTS)
            merged.update({k: v for k, v in sg.items() if k not in ("params", "param_names")})
            for key in ("lr", "betas", "weight_decay"):
                if key not in merged:
                    raise ValueError(f"loaded param group {i} has no '{key}'")
            _check_group(merged, f"loaded param group {i}")
        names = self._labels()
        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups),
                enumerate(chain.from_iterable(g["params"] for g in self.param_groups)),
            )
        )
        loaded: Dict[Any, Tuple[torch.Tensor, int]] = {}
        for sid, value in state_dict["state"].items():
            if sid not in id_map:
                raise ValueError(f"loaded state dict has state for parameter id {sid!r}, which no group lists")
            pos, p = id_map[sid]
            where = f"loaded state of {names[pos]}"
            if not isinstance(value, dict):
                raise ValueError(f"{where} is not a dict")
            if not value:
                continue
            ea = value.get("exp_avg")
            _check_momentum(ea, p, where)
            loaded[sid] = (ea, _step_count(value.get("step", 0), where))
        # The base class would cast every exp_avg to its parameter's dtype: give it the rest.
        rest = {
            sid: {k: v for k, v in value.items() if k not in ("exp_avg", "step")}
            for sid, value in state_dict["state"].items()
            if isinstance(value, dict) and value
        }
        super().load_state_dict({**state_dict, "state": rest})
        with torch.no_grad():
            for sid, (ea, steps) in loaded.items():
                _, p = id_map[sid]
                home = _Home(tuple(p.shape), ea.dtype)
                home.tensor.copy_(ea.detach().reshape(p.shape))
                self._homes[id(home.tensor)] = home
                self.state[p]["exp_avg"] = home.tensor
                self.state[p]["step"] = steps
        self._invalidate()

    # -------------------------------------------------------------------------------------
    # The step

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Performs a single optimization step over every parameter of every group that has a
        gradient: one call into Rust, with the GIL released.

        Step hooks (``register_step_pre_hook``/``register_step_post_hook``, global or own) and
        the profiler's ``Optimizer.step#Lion.step`` range work as for any torch optimizer; when
        none is active, the step skips torch's wrapper for them (about 6 us).

        Args:
            closure: a closure that reevaluates the model and returns the loss (optional).

        Returns:
            The loss, if a closure was given.
        """
        if (
            _GLOBAL_PRE_HOOKS
            or _GLOBAL_POST_HOOKS
            or self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _profiler_enabled()
        ):
            return _hooked_step(self, closure)
        return self._step(closure)

    def _step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan = self._plan
        st = self.state
        if plan is None or st is not self._plan_state or st._changes[0] != self._plan_version:
            plan = self._make_plan()
        r = plan.step(self.param_groups, self.num_threads or torch.get_num_threads(), self.skip_non_finite)
        if r is not True:
            self._slow_step(r)
        else:
            self.last_step_skipped = False
        return loss

    def _slow_step(self, r: Any) -> None:
        """A step that found the plan stale or states missing: rebuild, initialize, retry."""
        for _ in range(4):
            if r is True:
                self.last_step_skipped = False
                return
            if r is False:
                self.last_step_skipped = True
                self.skipped_steps += 1
                return
            if r is not None:
                self._init_state(r)
            plan = self._make_plan()
            r = plan.step(self.param_groups, self.num_threads or torch.get_num_threads(), self.skip_non_finite)
        raise RuntimeError("lion_optim.torch.Lion: param_groups or state keep changing during step()")

    def _init_state(self, positions: List[int]) -> None:
        """Zero state for the parameters at these positions of the plan."""
        st = self.state
        for k in positions:
            p = self._plan_params[k]
            md = self.param_groups[self._plan_groups[k]]["momentum_dtype"] or p.dtype
            home = _Home(tuple(p.shape), md)
            self._homes[id(home.tensor)] = home
            st[p] = _ParamState(st._changes, {"step": 0, "exp_avg": home.tensor})

    # -------------------------------------------------------------------------------------
    # The plan: what the Rust side reads at every step

    def _invalidate(self) -> None:
        self._plan = None
        self._plan_state = None
        self._plan_version = -1
        self._plan_params: List[torch.Tensor] = []
        self._plan_groups: List[int] = []

    def _labels(self) -> List[str]:
        out = []
        pos = 0
        many = len(self.param_groups) > 1
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for j, _ in enumerate(group["params"]):
                if names is not None and j < len(names):
                    out.append(f"parameter '{names[j]}'")
                else:
                    out.append(f"parameter {pos} (group {gi})" if many else f"parameter {pos}")
                pos += 1
        return out

    @torch.no_grad()
    def _make_plan(self) -> Any:
        """Reads ``param_groups`` and ``state``: moves every state's ``exp_avg`` into a buffer of
        the optimizer's own (if it is not in one: after ``load_state_dict``, ZeRO, or a user's
        assignment) and every ``step`` into the optimizer's step counts, and makes the plan."""
        st = self.state
        if not isinstance(st, _State):
            st = self.state = _State(st)
        params: List[torch.Tensor] = []
        groups: List[int] = []
        streams: List[int] = []
        lens: List[int] = []
        labels = self._labels()
        for gi, group in enumerate(self.param_groups):
            ps = group["params"]
            if not isinstance(ps, list):
                ps = group["params"] = list(ps)
            lens.append(len(ps))
            for p in ps:
                pos = len(params)
                stream = getattr(p, _STREAM_ATTR, None)
                if stream is None:
                    stream = pos
                elif isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream < (1 << 64):
                    raise ValueError(f"{labels[pos]}: lion_stream must be an int in [0, 2**64), got {stream!r}")
                params.append(p)
                groups.append(gi)
                streams.append(stream)
        # First check every state (raising changes nothing), then adopt them.
        n = len(params)
        counts = [0] * n
        found: List[Optional[Tuple[dict, torch.Tensor, Optional[_Home]]]] = []
        for k, p in enumerate(params):
            s = dict.get(st, p)
            if s is None or (isinstance(s, dict) and not s):
                found.append(None)
                continue
            if not isinstance(s, dict):
                raise ValueError(f"the state of {labels[k]} is not a dict")
            ea = s.get("exp_avg")
            home = self._homes.get(id(ea)) if ea is not None else None
            if home is None or home.tensor is not ea:
                _check_momentum(ea, p, f"the state of {labels[k]}")
                home = None
            counts[k] = _step_count(s.get("step", 0), f"the state of {labels[k]}")
            found.append((s, ea, home))
        steps_buf = bytearray(8 * max(n, 1))
        if n:
            steps_buf[:] = array.array("q", counts).tobytes()
        step_views = torch.frombuffer(steps_buf, dtype=torch.int64).unbind()
        momentum: List[Optional[Tuple[bytearray, int, int]]] = []
        homes: Dict[int, _Home] = {}
        for k, (p, f) in enumerate(zip(params, found)):
            if f is None:
                momentum.append(None)
                continue
            s, ea, home = f
            if type(s) is not _ParamState or s._changes is not st._changes:
                s = _ParamState(st._changes, s)
                st[p] = s
            if home is None:
                home = _Home(tuple(p.shape), ea.dtype)
                home.tensor.copy_(ea.detach().reshape(p.shape))
                s["exp_avg"] = home.tensor
            homes[id(home.tensor)] = home
            s["step"] = step_views[k]
            momentum.append((home.buf, home.code, home.numel))
        keep: List[Any] = [memoryview(steps_buf)] + [h.view for h in homes.values()]
        plan = _lion_optim.TorchPlan(params, groups, streams, labels, lens, momentum, steps_buf, keep)
        self._homes = homes
        self._plan, self._plan_state, self._plan_version = plan, st, st._changes[0]
        self._plan_params, self._plan_groups = params, groups
        return plan


def _check_momentum(ea: Any, p: torch.Tensor, where: str) -> None:
    if not isinstance(ea, torch.Tensor):
        raise ValueError(f"{where} has no exp_avg tensor (got {type(ea).__name__})")
    if ea.dtype not in _FLOATS:
        raise TypeError(f"{where}: exp_avg has dtype {ea.dtype}; supported: float32, bfloat16, float16")
    if ea.layout != torch.strided:
        raise ValueError(f"{where}: exp_avg has layout {ea.layout}")
    if ea.numel() != p.numel():
        raise ValueError(
            f"{where}: exp_avg has {ea.numel()} elements (shape {tuple(ea.shape)}), "
            f"the parameter {p.numel()} (shape {tuple(p.shape)})"
        )


def _step_count(value: Any, where: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{where}: step is a tensor of {value.numel()} elements")
        v = value.item()
        if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
            raise ValueError(f"{where}: step {v} is not a whole number")
        value = int(v)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << 64) - 1:
        raise ValueError(f"{where}: step must be an int >= 0, got {value!r}")
    return value


if _FAST_STEP:
    _hooked_step = torch.optim.Optimizer.profile_hook_step(Lion._step)
    # torch wraps `step` of every Optimizer subclass unless it is marked as hooked.
    Lion.step.hooked = True  # type: ignore[attr-defined]
else:  # pragma: no cover - other torch versions: torch's wrapper, always
    Lion.step = Lion._step  # type: ignore[method-assign]
