"""``lion_optim.torch.Lion``: a drop-in ``torch.optim.Optimizer`` running the Rust Lion step.

The one-line swap from the reference implementation (google/automl ``lion_pytorch.py``)::

    # from lion_pytorch import Lion
    from lion_optim.torch import Lion
    opt = Lion(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)

Same signature, defaults, param groups and state (``exp_avg``, plus a ``step`` count), and the
crate's options as keyword arguments. Every ``step()`` is one call into Rust over all parameters
of all groups, with the GIL released and the work spread over ``num_threads`` threads (default:
torch's intra-op thread count); parameters, gradients and momentum are updated in place,
zero-copy. Bad hyperparameters raise ``ValueError`` as in the reference, with the message of the
Rust core (which validates them) naming the parameter and the param group.
"""

from __future__ import annotations

import array
import collections
import itertools
import math
import sys
from itertools import chain
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

from . import _check_num_threads, _lion_optim

__all__ = ["Lion", "assign_streams", "to_bitsandbytes"]

_Q8 = "q8"
_MOMENTUM_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16, _Q8)
# Elements per block of the 8-bit momentum: one float32 absmax per 256 codes.
_Q8_BLOCK: int = _lion_optim.Q8_BLOCK

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
    stage), so that every parameter rounds exactly as in a single-process run. (Under FSDP2,
    which keeps every parameter in every rank's optimizer, positions already agree; call it
    after ``fully_shard``, which replaces the parameters, if at all.)
    """
    for i, p in enumerate(params, start):
        setattr(p, _STREAM_ATTR, int(i))


class _Counted:
    """The mutating methods of a dict, each counting the change in ``self._changes[0]`` (a
    counter shared by an optimizer's state and its per-parameter dicts) before it is made."""

    __slots__ = ()
    _changes: List[int]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._changes[0] += 1
        super().__setitem__(key, value)  # type: ignore[misc]

    def __delitem__(self, key: Any) -> None:
        self._changes[0] += 1
        super().__delitem__(key)  # type: ignore[misc]

    def clear(self) -> None:
        self._changes[0] += 1
        super().clear()  # type: ignore[misc]

    def pop(self, *args: Any) -> Any:
        self._changes[0] += 1
        return super().pop(*args)  # type: ignore[misc]

    def popitem(self) -> Any:
        self._changes[0] += 1
        return super().popitem()  # type: ignore[misc]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._changes[0] += 1
        return super().setdefault(key, default)  # type: ignore[misc]

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changes[0] += 1
        super().update(*args, **kwargs)  # type: ignore[misc]

    def __ior__(self, other: Any) -> Any:
        self._changes[0] += 1
        return super().__ior__(other)  # type: ignore[misc]


class _State(_Counted, collections.defaultdict):
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


class _ParamState(_Counted, dict):
    """One parameter's state (``step``, ``exp_avg``), counting its changes in its optimizer's
    counter. Pickles, copies and ``state_dict()``s as a plain dict."""

    __slots__ = ("_changes",)

    def __init__(self, changes: List[int], initial: Any = ()) -> None:
        super().__init__(initial)
        self._changes = changes

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


# ------------------------------------------------------------------------------------------
# Momentum buffers. The one place that knows how a momentum dtype becomes a buffer the Rust side
# steps (the dtype code it reads, the bytes per element): the 8-bit momentum to come (codes and
# per-block scales) is another kind of buffer here and another code there.

_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, _Q8: 3}


def _layout(t: torch.Tensor) -> Optional[Tuple[int, ...]]:
    """The memory layout of a dense tensor as the Rust side compares them: None for C order,
    else its strides with those of dimensions of size 1 set to 0 (``channels_last``...)."""
    if t.is_contiguous():
        return None
    return tuple(0 if d == 1 else s for d, s in zip(t.shape, t.stride()))


class _Home:
    """A momentum buffer owned by the optimizer: a ``bytearray``, the tensor ``local`` that
    views it with the shape and memory layout of the parameter (of its local shard, for a
    ``DTensor``), and ``tensor``, what ``state["exp_avg"]`` holds: ``local``, or for a
    ``DTensor`` parameter a ``DTensor`` of the parameter's mesh and placements over it. The Rust
    side writes the bytearray in memory order, as the parameter's memory; since the optimizer
    owns it (and every plan pins it: a bytearray with an export cannot be resized), it needs no
    checks at every step."""

    __slots__ = ("tensor", "local", "buf", "code", "numel", "layout")

    # Element momentum has no block scales (the 8-bit home's second buffer).
    absbuf: Optional[bytearray] = None

    def __init__(self, like: torch.Tensor, dtype: torch.dtype, dtensor: Optional[torch.Tensor] = None) -> None:
        shape = tuple(like.shape)
        numel = like.numel()
        size = torch.empty((), dtype=dtype).element_size()
        self.buf = bytearray(numel * size)
        self.code = _DTYPE_CODE[dtype]
        self.numel = numel
        self.layout = _layout(like) if numel else None
        if numel == 0:
            self.local = torch.zeros(shape, dtype=dtype)
        elif self.layout is None:
            self.local = torch.frombuffer(self.buf, dtype=dtype).view(shape)
        else:
            # Dense in another order (channels_last...): the parameter's strides over the buffer.
            self.local = torch.frombuffer(self.buf, dtype=dtype).as_strided(shape, like.stride())
        self.tensor = self.local
        if dtensor is not None:
            from torch.distributed.tensor import DTensor

            self.tensor = DTensor.from_local(
                self.local, dtensor.device_mesh, dtensor.placements, run_check=False,
                shape=dtensor.shape, stride=dtensor.stride(),
            )


class _Q8Home:
    """An 8-bit momentum buffer owned by the optimizer (bitsandbytes' blockwise format): two
    ``bytearray`` s, ``buf`` (one uint8 code per element, in the memory order of the parameter)
    and ``absbuf`` (one float32 scale per block of 256 elements), and the tensors that view them:
    ``tensor`` (= ``local``, ``state["exp_avg_codes"]``: uint8 of the parameter's shape and
    memory layout) and ``absmax`` (``state["exp_avg_absmax"]``: float32 of shape
    ``(ceil(numel / 256),)``). New momentum is zero: code 127, scale 0.

    For a ``DTensor`` parameter (placed as ``_q8_placements`` allows) the buffers hold its local
    shard's codes and blocks (``local``, ``local_absmax``), and ``tensor`` and ``absmax`` are
    ``DTensor`` s over them: the codes placed as the parameter, the scales (of the whole
    tensor's blocks, shaped by ``_q8_scales_shape``) sharded the same way on dimension 0."""

    __slots__ = ("tensor", "local", "buf", "absbuf", "absmax", "local_absmax", "code", "numel", "layout")

    def __init__(self, p: torch.Tensor) -> None:
        like = _local(p)
        shape = tuple(like.shape)
        numel = like.numel()
        blocks = -(-numel // _Q8_BLOCK)
        self.buf = bytearray(b"\x7f" * numel)
        self.absbuf = bytearray(4 * blocks)
        self.code = _DTYPE_CODE[_Q8]
        self.numel = numel
        self.layout = _layout(like) if numel else None
        if numel == 0:
            self.local = torch.zeros(shape, dtype=torch.uint8)
            self.absmax = torch.zeros((0,), dtype=torch.float32)
        else:
            flat = torch.frombuffer(self.buf, dtype=torch.uint8)
            self.local = flat.view(shape) if self.layout is None else flat.as_strided(shape, like.stride())
            self.absmax = torch.frombuffer(self.absbuf, dtype=torch.float32)
        self.tensor = self.local
        self.local_absmax = self.absmax
        if _is_dtensor(p):
            from torch.distributed.tensor import DTensor

            self.tensor = DTensor.from_local(
                self.local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
            )
            scales = _q8_scales_shape(p)
            self.absmax = DTensor.from_local(
                self.local_absmax.view(-1, *scales[1:]), p.device_mesh, p.placements, run_check=False,
                shape=scales, stride=tuple(math.prod(scales[i + 1 :]) for i in range(len(scales))),
            )

    def load(self, codes: torch.Tensor, absmax: torch.Tensor) -> None:
        """Copies checked (``_check_q8``) codes and scales in (this rank's part, from
        ``_q8_values``): codes in the parameter's memory order (the blocks are runs of 256
        elements in that order)."""
        if self.numel:
            if self.layout is None:
                self.local.copy_(codes.detach().reshape(self.local.shape))
            else:
                self.local.copy_(codes.detach())
            self.local_absmax.copy_(absmax.detach().reshape(-1))


def _is_q8_state(s: Dict[str, Any]) -> bool:
    """Whether a parameter's state holds 8-bit momentum (``exp_avg_codes``/``exp_avg_absmax``)."""
    return "exp_avg_codes" in s or "exp_avg_absmax" in s


def _check_q8(codes: Any, absmax: Any, p: torch.Tensor, where: str) -> None:
    """Checks 8-bit momentum for parameter ``p``: ``codes`` a uint8 tensor with the parameter's
    number of elements (and, for a parameter not in C order, its shape and memory layout: blocks
    follow memory order), ``absmax`` a float32 tensor of ``ceil(numel / 256)`` elements."""
    if _is_dtensor(p):
        _q8_placements(p, where)
    for key, t, dtype in (("exp_avg_codes", codes, torch.uint8), ("exp_avg_absmax", absmax, torch.float32)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where} has no {key} tensor (got {type(t).__name__})")
        if _is_dtensor(t) and not _is_dtensor(p):
            raise ValueError(f"{where}: {key} is a DTensor, the parameter a plain tensor")
        if _is_dtensor(t) and t.device_mesh != p.device_mesh:
            raise ValueError(f"{where}: {key} is a DTensor on another device mesh than its parameter's")
        if t.dtype != dtype:
            raise TypeError(f"{where}: {key} has dtype {t.dtype}; it must be {dtype}")
        if t.layout != torch.strided:
            raise ValueError(f"{where}: {key} has layout {t.layout}")
    n = p.numel()
    if codes.numel() != n:
        raise ValueError(
            f"{where}: exp_avg_codes has {codes.numel()} elements (shape {tuple(codes.shape)}), "
            f"the parameter {n} (shape {tuple(p.shape)})"
        )
    blocks = -(-n // _Q8_BLOCK)
    if absmax.numel() != blocks or (absmax.dim() > 1 and tuple(absmax.shape) != _q8_scales_shape(p)):
        raise ValueError(
            f"{where}: exp_avg_absmax has shape {tuple(absmax.shape)}; a parameter of {n} elements "
            f"needs ({blocks},): one scale per block of {_Q8_BLOCK}"
        )
    layout = _layout(_local(p)) if n else None
    if _is_dtensor(p):
        if tuple(codes.shape) != tuple(p.shape):
            raise ValueError(
                f"{where}: exp_avg_codes has shape {tuple(codes.shape)}, the parameter {tuple(p.shape)}"
            )
    elif layout is not None and (tuple(codes.shape) != tuple(p.shape) or _layout(codes) != layout):
        raise ValueError(
            f"{where}: exp_avg_codes has shape {tuple(codes.shape)} and strides {tuple(codes.stride())}, "
            f"the parameter shape {tuple(p.shape)} and strides {tuple(p.stride())}: 8-bit momentum's "
            "blocks are runs of 256 elements in the parameter's memory order, so its codes must be "
            "laid out as the parameter"
        )


# bitsandbytes' optimizers move their quantization state (``state1``, ``absmax1``, ``qmap1``,
# ...) into a dict under this key in ``state_dict()`` (to hide it from FSDP); loading unwraps it.
_BNB_WRAPPED = "__bnb_optimizer_quant_state__"


def _q8_map() -> torch.Tensor:
    """bitsandbytes' signed dynamic map, the 8-bit momentum's 256 code values (``Q8_MAP``), as a
    new float32 tensor."""
    return torch.tensor(_lion_optim.Q8_MAP, dtype=torch.float32)


def _check_qmap(qmap: Any, key: str, where: str) -> None:
    """A saved code map must be bitsandbytes' signed dynamic map, ``Q8_MAP``: equal, or (as a map
    that torch's ``linspace`` computed on another CPU may be) within one unit in the last place
    of every value."""
    if not isinstance(qmap, torch.Tensor) or qmap.dtype != torch.float32 or qmap.numel() != 256:
        got = f"{qmap.dtype} tensor of {qmap.numel()} values" if isinstance(qmap, torch.Tensor) else type(qmap).__name__
        raise ValueError(f"{where}: {key} must be a float32 tensor of 256 values (the code map), got {got}")
    ours = _q8_map().view(torch.int32).to(torch.int64)
    theirs = qmap.detach().to("cpu").reshape(-1).contiguous().view(torch.int32).to(torch.int64)
    worst = int((ours - theirs).abs().max())
    if worst > 1:
        raise ValueError(
            f"{where}: {key} is another code map (it differs from bitsandbytes' signed dynamic map, "
            f"lion_optim.Q8_MAP, by up to {worst} units in the last place); only that map is supported"
        )


def _is_bitsandbytes(state_dict: Dict[str, Any]) -> bool:
    """Whether a state dict is bitsandbytes' (``Lion8bit``, ``Lion``): its states hold ``state1``
    (or its wrapped quantization state), its groups an ``eps``."""
    for value in state_dict["state"].values():
        if isinstance(value, dict) and ("state1" in value or _BNB_WRAPPED in value):
            return True
    return any(isinstance(g, dict) and "eps" in g for g in state_dict["param_groups"])


def _map_states(
    state_dict: Dict[str, Any], where: Callable[[Any], str], convert: Callable[[Dict[str, Any], str], Any]
) -> Dict[Any, Any]:
    """The per-parameter states of ``state_dict``: each non-empty dict as ``convert(value,
    where(sid))`` (``where`` names the state in errors), anything else as it is."""
    return {
        sid: convert(value, where(sid)) if isinstance(value, dict) and value else value
        for sid, value in state_dict["state"].items()
    }


def _from_bitsandbytes(
    state_dict: Dict[str, Any], groups: List[Dict[str, Any]], labels: Dict[Any, str]
) -> Dict[str, Any]:
    """A bitsandbytes Lion state dict in this class's layout: each group keeps this optimizer's
    settings and takes ``lr``, ``betas`` and ``weight_decay`` from the checkpoint; 8-bit
    ``state1``/``absmax1`` become ``exp_avg_codes``/``exp_avg_absmax`` (``qmap1`` checked), a
    float ``state1`` (bitsandbytes' 32-bit state, and its 8-bit optimizers' small tensors)
    ``exp_avg``. ``labels`` names each saved parameter id in messages."""
    new_groups = []
    for i, (g, sg) in enumerate(zip(groups, state_dict["param_groups"])):
        ng = {k: v for k, v in g.items() if k not in ("params", "param_names")}
        for key in ("lr", "betas", "weight_decay"):
            if key not in sg:
                raise ValueError(f"loaded param group {i} has no '{key}'")
            ng[key] = sg[key]
        ng["params"] = sg["params"]
        if "param_names" in sg:
            ng["param_names"] = sg["param_names"]
        new_groups.append(ng)

    def convert(value: Dict[str, Any], where: str) -> Dict[str, Any]:
        value = dict(value)
        wrapped = value.pop(_BNB_WRAPPED, None)
        if wrapped is not None:
            if not isinstance(wrapped, dict):
                raise ValueError(f"{where}: {_BNB_WRAPPED} is not a dict")
            value.update(wrapped)
        if "state2" in value:
            raise ValueError(f"{where} has a second state (state2): it is not a Lion state")
        s1 = value.get("state1")
        if not isinstance(s1, torch.Tensor):
            raise ValueError(f"{where} has no state1 tensor (got {type(s1).__name__})")
        out: Dict[str, Any] = {"step": value.get("step", 0)}
        if s1.dtype == torch.uint8:
            if "absmax1" not in value:
                raise ValueError(
                    f"{where}: 8-bit state1 without absmax1 (bitsandbytes' block_wise=False: one "
                    "scale per tensor) is not supported; only the blockwise format (the default)"
                )
            if "qmap1" in value:
                _check_qmap(value["qmap1"], "qmap1", where)
            out["exp_avg_codes"] = s1
            out["exp_avg_absmax"] = value["absmax1"]
        else:
            out["exp_avg"] = s1
        return out

    def where(sid: Any) -> str:
        return f"loaded bitsandbytes state of {labels.get(sid, f'parameter id {sid!r}')}"

    return {**state_dict, "state": _map_states(state_dict, where, convert), "param_groups": new_groups}


def to_bitsandbytes(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """A :class:`Lion` state dict (``opt.state_dict()``) in the layout of bitsandbytes'
    ``Lion8bit`` (and ``Lion``), for ``bnb_opt.load_state_dict(to_bitsandbytes(sd))``.

    8-bit momentum becomes ``state1`` (the uint8 codes), ``absmax1`` and ``qmap1`` (the code map,
    bitsandbytes' own: the two formats are one); float momentum becomes a float32 ``state1``
    (what bitsandbytes keeps for a tensor it steps in 32 bits, such as one below its
    ``min_8bit_size``; bfloat16 and float16 momentum are widened exactly); ``step`` an int. Each
    group keeps ``lr``, ``betas`` and ``weight_decay`` (and gets bitsandbytes' ``eps``, 0 for
    Lion); this class's other settings (stochastic rounding, cautious, ``maximize``, ...) have no
    counterpart there and are not carried. Like ``state_dict()``, the result shares the live
    state tensors where no conversion is needed (bitsandbytes' ``load_state_dict`` copies them).

    Raises ``ValueError`` for a dict that is not a :class:`Lion` state dict, or for the state of
    a ``DTensor`` parameter (bitsandbytes steps whole tensors: gather it first).

    Example::

        import bitsandbytes as bnb
        from lion_optim.torch import Lion, to_bitsandbytes

        opt = Lion(model.parameters(), lr=1e-4, momentum_dtype="q8")
        ...  # train
        bnb_opt = bnb.optim.Lion8bit(model.parameters(), lr=1e-4)
        bnb_opt.load_state_dict(to_bitsandbytes(opt.state_dict()))
        # and back: a Lion loads a bitsandbytes Lion8bit (or Lion) state dict as it is
        opt.load_state_dict(bnb_opt.state_dict())
    """
    if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
        raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
    groups = []
    for i, g in enumerate(state_dict["param_groups"]):
        if not isinstance(g, dict) or any(k not in g for k in ("params", "lr", "betas", "weight_decay")):
            raise ValueError(f"param group {i} is not a Lion param group (params, lr, betas, weight_decay)")
        ng = {
            "params": list(g["params"]),
            "lr": g["lr"],
            "betas": tuple(g["betas"]),
            "eps": 0.0,
            "weight_decay": g["weight_decay"],
        }
        if "param_names" in g:
            ng["param_names"] = list(g["param_names"])
        groups.append(ng)
    qmap = _q8_map()

    def convert(value: Dict[str, Any], where: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {"step": _step_count(value.get("step", 0), where)}
        tensors = [value.get(k) for k in ("exp_avg", "exp_avg_codes", "exp_avg_absmax")]
        if any(_is_dtensor(t) for t in tensors):
            raise ValueError(f"{where}: a DTensor (gather it with full_tensor() first)")
        if _is_q8_state(value):
            codes, absmax = value.get("exp_avg_codes"), value.get("exp_avg_absmax")
            for key, t, dtype in (("exp_avg_codes", codes, torch.uint8), ("exp_avg_absmax", absmax, torch.float32)):
                if not isinstance(t, torch.Tensor) or t.dtype != dtype:
                    raise ValueError(f"{where}: {key} must be a {dtype} tensor")
            if -(-codes.numel() // _Q8_BLOCK) != absmax.numel():
                raise ValueError(
                    f"{where}: {codes.numel()} codes need {-(-codes.numel() // _Q8_BLOCK)} scales, "
                    f"exp_avg_absmax has {absmax.numel()}"
                )
            out["state1"], out["qmap1"], out["absmax1"] = codes, qmap, absmax.reshape(-1)
        else:
            ea = value.get("exp_avg")
            if not isinstance(ea, torch.Tensor) or ea.dtype not in _FLOATS:
                raise ValueError(f"{where} has no float exp_avg or 8-bit exp_avg_codes")
            out["state1"] = ea.to(torch.float32)
        return out

    state = _map_states(state_dict, lambda sid: f"state of parameter id {sid!r}", convert)
    return {"state": state, "param_groups": groups}


def _check_q8_dtensors(tensors: List[torch.Tensor], labels: List[str], md: Any) -> None:
    """8-bit momentum of ``DTensor`` parameters: checked where their group asks for it (at
    construction, ``add_param_group`` and state creation, before anything is stored)."""
    if md != _Q8:
        return
    for t, label in zip(tensors, labels):
        if _is_dtensor(t):
            _q8_placements(t, label)


def _chunks(size: int, parts: List[Tuple[int, int]]) -> Tuple[int, int]:
    """Where the shard at mesh coordinates ``parts`` (``(coordinate, mesh size)`` per ``Shard(0)``
    mesh dimension, in mesh order) lies in ``[0, size)``: nested ``torch.chunk`` s, as
    ``DTensor`` places ``Shard(0)``."""
    lo, hi = 0, size
    for c, n in parts:
        chunk = -(-(hi - lo) // n)
        lo, hi = min(lo + c * chunk, hi), min(lo + (c + 1) * chunk, hi)
    return lo, hi


def _q8_scales_shape(p: torch.Tensor) -> Tuple[int, ...]:
    """The shape of the block scales of a ``DTensor`` parameter's 8-bit momentum (a whole state
    dict may hold them so too): a row of scales per row of the parameter where its rows are whole
    blocks (so that ``Shard(0)`` splits the scales exactly as the rows, whatever their count),
    else one scale per block."""
    numel = p.numel()
    row = numel // p.shape[0] if p.dim() >= 2 and p.shape[0] else 0
    if row and row % _Q8_BLOCK == 0:
        return (p.shape[0], row // _Q8_BLOCK)
    return (-(-numel // _Q8_BLOCK),)


def _q8_placements(p: torch.Tensor, label: str) -> None:
    """8-bit momentum of a ``DTensor`` parameter: its blocks of 256 elements are those of the
    whole tensor, so every rank's shard must be whole blocks of it, and the scales (one per
    block, a ``DTensor`` sharded like the parameter on dimension 0) must fall to each rank as
    its blocks do. That holds for ``Replicate`` and ``Shard(0)`` placements whose shards start at
    multiples of 256 elements: FSDP2's row shards of matrices whose rows hold a multiple of 256
    elements (their scales a row per row, ``_q8_scales_shape``: split as the rows), and other
    shards whose block counts split as ``torch.chunk`` splits the scales (one per block);
    checked here for every rank (so every rank raises alike), raising otherwise."""
    from torch.distributed.tensor import Replicate, Shard

    placements = tuple(p.placements)
    sharded = [i for i, pl in enumerate(placements) if type(pl) is Shard]
    if not all(type(pl) in (Shard, Replicate) for pl in placements) or any(placements[i].dim != 0 for i in sharded):
        raise ValueError(
            f"{label}: 8-bit momentum (momentum_dtype='q8') of a DTensor needs Shard(0) and "
            f"Replicate placements, not {placements}; use a float momentum_dtype for its param group"
        )
    if len(_q8_scales_shape(p)) == 2:
        return  # (rows of whole blocks, split as their rows of scales)
    numel = p.numel()
    row = numel // p.shape[0] if p.dim() and p.shape[0] else 0
    blocks = -(-numel // _Q8_BLOCK)
    sizes = [p.device_mesh.size(i) for i in sharded]
    for coords in itertools.product(*(range(n) for n in sizes)):
        parts = list(zip(coords, sizes))
        lo, hi = (r * row for r in _chunks(p.shape[0], parts)) if p.dim() else (0, numel)
        b_lo, b_hi = _chunks(blocks, parts)
        if hi > lo and (lo % _Q8_BLOCK or (lo // _Q8_BLOCK, -(-hi // _Q8_BLOCK)) != (b_lo, b_hi)):
            raise ValueError(
                f"{label}: 8-bit momentum (momentum_dtype='q8') of a DTensor needs every shard to "
                f"be whole blocks of {_Q8_BLOCK} elements of the whole tensor, split as its "
                f"{blocks} block scales split; the shard at mesh coordinates {coords} is elements "
                f"[{lo}, {hi}) of {numel}; use a float momentum_dtype for its param group"
            )


def _q8_values(codes: torch.Tensor, absmax: torch.Tensor, p: torch.Tensor, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """This rank's codes and scales of checked (``_check_q8``) 8-bit momentum of ``p``: the
    tensors themselves for a plain parameter; for a ``DTensor`` parameter the local shards of
    ``DTensor`` codes and scales (redistributed to the parameter's placements if they differ: a
    collective, as every rank loads together), or this rank's part of whole plain tensors."""
    if not _is_dtensor(p):
        return codes, absmax
    local = _local(p)
    shape, offset = _local_box(p, where)
    if _is_dtensor(codes):
        if tuple(codes.placements) != tuple(p.placements):
            codes = codes.redistribute(p.device_mesh, p.placements)
        codes = codes.detach().to_local()
    else:
        box = tuple(slice(o, o + n) for o, n in zip(offset, shape))
        codes = codes.detach().reshape(p.shape)[box]
    first = (offset[0] * (p.numel() // p.shape[0]) if p.dim() and p.shape[0] else 0) // _Q8_BLOCK
    count = -(-local.numel() // _Q8_BLOCK)
    if _is_dtensor(absmax):
        if tuple(absmax.placements) != tuple(p.placements):
            absmax = absmax.redistribute(p.device_mesh, p.placements)
        absmax = absmax.detach().to_local().reshape(-1)
    else:
        absmax = absmax.detach().reshape(-1)[first : first + count]
    if tuple(codes.shape) != tuple(local.shape) or absmax.numel() != count:
        raise ValueError(
            f"{where}: this rank's part of the 8-bit momentum is {tuple(codes.shape)} codes and "
            f"{absmax.numel()} scales, its parameter shard needs {tuple(local.shape)} and {count}"
        )
    return codes, absmax


# ------------------------------------------------------------------------------------------
# DTensor parameters (FSDP2's fully_shard, distribute_tensor): each rank steps its local shard
# in place, in the runs in which it lies in the whole tensor's memory order, each with its
# element offset there (so stochastic rounding draws the bits of one process).


def _is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (none exists unless that module
    was imported: no import here)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, getattr(mod, "DTensor", ()))


def _local(p: torch.Tensor) -> torch.Tensor:
    """A parameter's own memory: its local shard for a ``DTensor``, else itself."""
    return p._local_tensor if _is_dtensor(p) else p


def _placement_check(p: torch.Tensor, label: str) -> Tuple[Any, ...]:
    from torch.distributed.tensor import Replicate, Shard

    placements = tuple(p.placements)
    # (Exactly these types: _StridedShard, a Shard, lays a shard out in pieces of its own.)
    if not all(type(pl) in (Shard, Replicate) for pl in placements):
        raise ValueError(
            f"{label}: a DTensor with placements {placements}; lion_optim.torch.Lion steps DTensor "
            "parameters placed with Shard and Replicate"
        )
    return placements


def _local_box(p: torch.Tensor, label: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The shape of a ``DTensor``'s local shard and its offset in the whole tensor, per dimension
    (checked against the local tensor)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    local = p._local_tensor
    if tuple(shape) != tuple(local.shape):
        raise ValueError(
            f"{label}: its local shard has shape {tuple(local.shape)}, its placements "
            f"{tuple(p.placements)} give {tuple(shape)}"
        )
    return tuple(shape), tuple(offset)


def _runs(p: torch.Tensor, label: str) -> List[Tuple[int, int, int]]:
    """Where a ``DTensor``'s local shard lies in the whole tensor: ``(start, len, index)`` runs,
    elements ``[start, start + len)`` of the local shard in memory order being elements
    ``[index, index + len)`` of the whole tensor in its memory order. One run for ``Shard(0)``
    and ``Replicate``; a ``Shard(d)`` of an inner dimension gives one per outer index."""
    gshape, gstride = tuple(p.shape), tuple(p.stride())
    local = p._local_tensor
    lshape, goff = _local_box(p, label)
    lstride = tuple(local.stride())
    lnumel = math.prod(lshape)
    if lnumel == 0:
        return []
    # The whole tensor's memory order: its dimensions by decreasing stride (those of size 1
    # index nothing and are left out).
    order = sorted((d for d in range(len(gshape)) if gshape[d] != 1), key=lambda d: -gstride[d])
    G = [gshape[d] for d in order]
    L = [lshape[d] for d in order]
    O = [goff[d] for d in order]
    GS = [math.prod(G[i + 1 :]) for i in range(len(G))]
    LS = [math.prod(L[i + 1 :]) for i in range(len(L))]
    dense = all(gstride[d] == GS[i] for i, d in enumerate(order))
    local_alike = all(L[i] == 1 or lstride[d] == LS[i] for i, d in enumerate(order))
    if not dense or not local_alike:
        raise ValueError(
            f"{label}: its local shard (shape {lshape}, strides {lstride}) is not laid out in "
            f"memory as the whole tensor (shape {gshape}, strides {gstride}) in its order"
        )
    partial = [i for i in range(len(G)) if L[i] != G[i]]
    if not partial:
        return [(0, lnumel, 0)]
    j = partial[-1]
    run = L[j] * GS[j]
    base = O[j] * GS[j]
    out: List[Tuple[int, int, int]] = []
    for idx in itertools.product(*(range(L[t]) for t in range(j))):
        start = sum(i * LS[t] for t, i in enumerate(idx))
        index = base + sum((O[t] + i) * GS[t] for t, i in enumerate(idx))
        if out and out[-1][0] + out[-1][1] == start and out[-1][2] + out[-1][1] == index:
            out[-1] = (out[-1][0], out[-1][1] + run, out[-1][2])
        else:
            out.append((start, run, index))
    return out


def _shard_arg(p: torch.Tensor, label: str) -> Tuple[Any, List[Tuple[int, int, int]], int, int, bool]:
    """What the Rust plan needs of a ``DTensor`` parameter: ``(placements, runs, local elements,
    whole elements, sharded)``."""
    from torch.distributed.tensor import Shard

    placements = _placement_check(p, label)
    runs = _runs(p, label)
    return placements, runs, p._local_tensor.numel(), p.numel(), any(type(pl) is Shard for pl in placements)


def _momentum_values(ea: torch.Tensor, p: torch.Tensor, where: str) -> torch.Tensor:
    """The values of momentum ``ea`` (checked by ``_check_momentum``) for parameter ``p``, as a
    plain tensor of the shape of ``p``'s own memory (its local shard for a ``DTensor``).

    For a ``DTensor`` parameter, ``ea`` is a ``DTensor`` on its mesh (redistributed to its
    placements if they differ: a collective, as every rank loads together), or the whole
    momentum as a plain tensor (this rank's part is taken)."""
    if not _is_dtensor(p):
        if _is_dtensor(ea):
            raise ValueError(f"{where}: exp_avg is a DTensor, the parameter a plain tensor")
        return ea.detach().reshape(p.shape)
    local = p._local_tensor
    if _is_dtensor(ea):
        if ea.device_mesh != p.device_mesh:
            raise ValueError(f"{where}: exp_avg is a DTensor on another device mesh than its parameter's")
        if tuple(ea.placements) != tuple(p.placements):
            ea = ea.redistribute(p.device_mesh, p.placements)
        values = ea.detach().to_local()
    else:
        shape, offset = _local_box(p, where)
        box = tuple(slice(o, o + n) for o, n in zip(offset, shape))
        values = ea.detach().reshape(p.shape)[box]
    if tuple(values.shape) != tuple(local.shape):
        raise ValueError(
            f"{where}: exp_avg's local shard has shape {tuple(values.shape)}, the parameter's "
            f"{tuple(local.shape)}"
        )
    return values


# The keys of a param group beyond the reference's, with their defaults (for checkpoints of
# the reference class, which lack them).
# The state keys the optimizer itself reads (the others are kept as they are).
_STATE_KEYS = ("exp_avg", "exp_avg_codes", "exp_avg_absmax", "exp_avg_qmap", "step")

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
    """A param group's settings, checked as a step will read them (``where`` names the group in
    messages); ``momentum_dtype`` is the one key only Python reads."""
    _lion_optim._check_group(group, where)
    md = group.get("momentum_dtype")
    if not (md == _Q8 if isinstance(md, str) else any(md is d or md == d for d in _MOMENTUM_DTYPES[:-1])):
        raise TypeError(
            f"{where}: momentum_dtype must be None (the parameter's dtype), torch.float32, "
            f"torch.bfloat16, torch.float16 or 'q8' (8-bit blockwise), got {md!r}"
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
            ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``; or ``"q8"``: 8-bit
            blockwise momentum (bitsandbytes' format, about 1.016 bytes per element; see below).
        stochastic_rounding: round bfloat16/float16 parameters and momentum stochastically
            (unbiased: small updates survive in bf16). The random bits are a pure function of
            ``(seed, stream, step, element index)``; a parameter's stream is its ``lion_stream``
            attribute (see :func:`assign_streams`) or else its position in the optimizer (across
            groups, as in ``state_dict()``), its step its own ``state["step"]``, an element's
            index its position in the parameter's memory (C order for a contiguous tensor; in
            the whole tensor, for a ``DTensor``).
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
    tensor: the steps it took) and ``exp_avg`` (the momentum, of ``momentum_dtype``, laid out in
    memory as its parameter: ``channels_last`` for a ``channels_last`` weight, as
    ``torch.zeros_like`` does; a ``DTensor`` of the parameter's mesh and placements for a
    ``DTensor``). Both view buffers the optimizer owns (so a step needs no checks of its
    own state): change them in place, or assign new tensors (``state[p]["exp_avg"] = t``: the
    next step adopts a copy), but do not swap their storage (``.data = ...``, ``.set_()``),
    which the optimizer would not see. ``state_dict()`` is torch's standard format, and
    ``load_state_dict()`` keeps each ``exp_avg``'s dtype (the base class would cast it to the
    parameter's dtype). As with torch's own optimizers, ``state_dict()`` returns the live state
    tensors: ``torch.save`` it (or ``copy.deepcopy`` it) before further steps if you keep it.

    8-bit momentum (``momentum_dtype="q8"``, for the optimizer or a param group): instead of
    ``exp_avg``, the state holds ``exp_avg_codes`` (``torch.uint8``, the parameter's shape and
    memory layout: one code per element into bitsandbytes' signed dynamic map) and
    ``exp_avg_absmax`` (``torch.float32`` of shape ``(ceil(numel / 256),)``: one scale per block
    of 256 elements in memory order; for a ``DTensor`` whose rows are whole blocks, a row of
    scales per row); element ``i`` of the momentum is
    ``Q8_MAP[codes[i]] * absmax[i // 256]``, as bitsandbytes' ``Lion8bit`` (its ``state1`` and
    ``absmax1``) and ``dequantize_blockwise`` (blocksize 256). New momentum is zero (code 127,
    scale 0). The Rust core steps both in place (dequantize, Lion step, requantize per block, in
    one pass; stochastic rounding also rounds the codes stochastically). Every parameter size is
    accepted (the last block may be partial; bitsandbytes' ``min_8bit_size`` policy is not
    applied: use a float ``momentum_dtype`` in a param group of small tensors if you want it).
    ``state_dict()``/``load_state_dict()`` round-trip the codes and scales bit for bit;
    ``load_state_dict()`` checks their dtypes and sizes (and, for a parameter not in C order,
    that the codes are laid out as it; a parameter whose memory layout changes after its 8-bit
    state exists, ``model.to(memory_format=...)``, is refused at the step, since re-laying out
    blocks would need a requantization). A state's kind follows its keys, not the group's
    ``momentum_dtype`` (as an ``exp_avg`` keeps its dtype). For ``DTensor`` parameters (FSDP2)
    the codes and scales are ``DTensor`` s too (the codes placed as the parameter, the scales
    sharded like it on dimension 0), and the step gives the bytes of one process, when every
    rank's shard is whole blocks of 256 elements of the whole tensor (``Shard(0)`` and
    ``Replicate`` placements; FSDP2's row shards of matrices whose rows hold a multiple of 256
    elements, say); other layouts (a bias of 384 elements on two ranks, ``Shard(1)``) are
    refused with ``ValueError`` naming the parameter when the optimizer is made (or at the
    first step, if a group is switched to ``"q8"`` later): give them a float ``momentum_dtype``
    in a param group of their own.

    Parameters whose ``grad`` is None are skipped. Parameters, gradients and momentum may be
    float32, bfloat16 or float16, each (any mix). Parameters must be CPU tensors, dense: in C
    order, or in another order (``channels_last``, a transposed matrix: the step is
    elementwise and runs in memory order), their gradient of the same shape and strides
    (autograd makes it so). A parameter the step cannot take (float64, integer, sparse, meta,
    CUDA, a strided or expanded view) is refused when the optimizer is made and by
    ``add_param_group``; any other bad input raises ``TypeError``, ``ValueError`` or
    ``RuntimeError`` at the step, naming the parameter, before anything is written.

    ``DTensor`` parameters (FSDP2's ``fully_shard``, with ``CPUOffloadPolicy`` on a GPU machine
    or on the CPU; ``distribute_tensor``), placed with ``Shard`` and ``Replicate``: every rank
    steps its local shard in place, each element with its index in the whole tensor, so the
    parameters and state are exactly those of one process stepping the whole tensors, stochastic
    rounding included; a cautious group's counts, and with ``skip_non_finite`` whether every
    rank's gradients are finite, are all-reduced over the mesh (one small all-reduce per step,
    only then). ``state_dict()`` holds ``DTensor`` momentum, which
    ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` and
    ``set_optimizer_state_dict`` save and load (sharded or full). FSDP2 replaces the modules'
    parameters: make the optimizer (and call :func:`assign_streams`) after ``fully_shard``.

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
        momentum_dtype: Optional[Union[torch.dtype, str]] = None,
        stochastic_rounding: bool = False,
        seed: int = 0,
        maximize: bool = False,
        max_lr: Optional[float] = None,
        cautious: bool = False,
        grad_unscale: Optional[float] = None,
        skip_non_finite: bool = False,
        num_threads: Optional[int] = None,
    ) -> None:
        _check_num_threads(num_threads)
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
        _check_group(defaults, "lion_optim.torch.Lion")
        self._homes: Dict[int, Any] = {}
        self._invalidate()
        self.skip_non_finite = bool(skip_non_finite)
        self.num_threads = num_threads
        self.skipped_steps = 0
        self.last_step_skipped = False
        # The parameters are checked (device, dtype, layout, placements) before any is stored,
        # with the labels a step would give them.
        groups = _as_groups(params)
        if groups is not None:
            tensors, labels = [], []
            for gi, g in enumerate(groups):
                t, lab = _tensors_and_labels(g, len(tensors), gi, len(groups) > 1)
                tensors += t
                labels += lab
                md = g.get("momentum_dtype", momentum_dtype) if isinstance(g, dict) else momentum_dtype
                _check_q8_dtensors(t, lab, md)
            _check_new_params(tensors, labels)
            params = groups
        self._constructing = True
        try:
            super().__init__(params, defaults)
        finally:
            self._constructing = False
        self.state = _State(self.state)

    # -------------------------------------------------------------------------------------
    # torch.optim.Optimizer protocol

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Adds a param group (``torch.optim.Optimizer.add_param_group``), after checking its
        settings (those it sets, with the defaults for the others) and its parameters (CPU
        tensors, or ``DTensor`` parameters with CPU local shards, placed with ``Shard``/``Replicate``;
        float32, bfloat16 or float16; strided and dense), raising as a step would, with
        nothing added."""
        if isinstance(param_group, dict):
            merged = dict(self.defaults)
            merged.update({k: v for k, v in param_group.items() if k not in ("params", "param_names")})
            gi = len(self.param_groups)
            _check_group(merged, f"param group {gi}")
            if not getattr(self, "_constructing", False):
                _normalize_params(param_group)
                start = sum(len(g["params"]) for g in self.param_groups)
                tensors, labels = _tensors_and_labels(param_group, start, gi, gi > 0)
                _check_q8_dtensors(tensors, labels, merged.get("momentum_dtype"))
                _check_new_params(tensors, labels)
        super().add_param_group(param_group)
        self._invalidate()

    def state_dict(self) -> Dict[str, Any]:
        """The standard ``torch.optim`` state dict: ``{"state": {id: {"step", "exp_avg"}},
        "param_groups": [...]}``. ``step`` is a 0-dim int64 tensor, ``exp_avg`` the momentum in
        its own dtype; with 8-bit momentum ``exp_avg_codes``, ``exp_avg_absmax`` and
        ``exp_avg_qmap`` (the code map, ``lion_optim.Q8_MAP``: one float32 tensor shared by the
        dict's states) instead of ``exp_avg``. The tensors are the live state (as torch's
        optimizers do): save or deep-copy the dict before the next step if you keep it.
        :func:`to_bitsandbytes` converts it for bitsandbytes' ``Lion8bit``."""
        sd = super().state_dict()
        sd["state"] = {k: dict(v) if isinstance(v, dict) else v for k, v in sd["state"].items()}
        qmap = None
        for v in sd["state"].values():
            if isinstance(v, dict) and "exp_avg_codes" in v:
                qmap = _q8_map() if qmap is None else qmap
                v["exp_avg_qmap"] = qmap
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

        A state dict of bitsandbytes' ``Lion8bit`` or ``Lion`` (``bnb_opt.state_dict()``: states
        with ``state1``, groups with ``eps``) loads as it is: its 8-bit ``state1``/``absmax1``
        become 8-bit momentum (``qmap1`` must be bitsandbytes' signed dynamic map, which is
        ``lion_optim.Q8_MAP``), a float ``state1`` (its 32-bit state, and its small tensors')
        float32 momentum; each group takes ``lr``, ``betas`` and ``weight_decay`` from it and
        keeps this optimizer's other settings. bitsandbytes' blockwise=False 8-bit state and
        two-state optimizers (``state2``) are refused.
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
        if _is_bitsandbytes(state_dict):
            labels = dict(
                zip(chain.from_iterable(g["params"] for g in saved_groups), self._labels())
            )
            state_dict = _from_bitsandbytes(state_dict, self.param_groups, labels)
            saved_groups = state_dict["param_groups"]
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
            if _is_q8_state(value):
                codes, absmax = value.get("exp_avg_codes"), value.get("exp_avg_absmax")
                _check_q8(codes, absmax, p, where)
                if "exp_avg_qmap" in value:
                    _check_qmap(value["exp_avg_qmap"], "exp_avg_qmap", where)
                values = _q8_values(codes, absmax, p, where)
                loaded[sid] = (_Q8, values, _step_count(value.get("step", 0), where))
                continue
            ea = value.get("exp_avg")
            _check_momentum(ea, p, where)
            loaded[sid] = (ea.dtype, _momentum_values(ea, p, where), _step_count(value.get("step", 0), where))
        # The base class would cast every exp_avg to its parameter's dtype: give it the rest.
        rest = {
            sid: {k: v for k, v in value.items() if k not in _STATE_KEYS}
            for sid, value in state_dict["state"].items()
            if isinstance(value, dict) and value
        }
        super().load_state_dict({**state_dict, "state": rest})
        with torch.no_grad():
            for sid, (dtype, values, steps) in loaded.items():
                _, p = id_map[sid]
                if dtype == _Q8:
                    q8 = _Q8Home(p)
                    q8.load(*values)
                    self._homes[id(q8.tensor)] = q8
                    self.state[p]["exp_avg_codes"] = q8.tensor
                    self.state[p]["exp_avg_absmax"] = q8.absmax
                    self.state[p]["step"] = steps
                    continue
                home = _Home(_local(p), dtype, p if _is_dtensor(p) else None)
                home.local.copy_(values)
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
        if self._plan_dist is None:
            r = plan.step(self.param_groups, self.num_threads or torch.get_num_threads(), self.skip_non_finite)
        else:
            r = self._try_step(plan)
        if r is not True:
            self._slow_step(r)
        else:
            self.last_step_skipped = False
        return loss

    def _try_step(self, plan: Any) -> Any:
        """One try of a step: as ``plan.step``, with the all-reduces a step of sharded
        ``DTensor`` parameters needs first (the cautious counts of whole tensors, and whether
        every rank's gradients are finite), if any."""
        threads = self.num_threads or torch.get_num_threads()
        dist = self._plan_dist
        if dist is None or not (self.skip_non_finite or dist.cautious(self.param_groups)):
            return plan.step(self.param_groups, threads, self.skip_non_finite)
        r = plan.stats(self.param_groups, self.skip_non_finite)
        if r is None or isinstance(r, list):
            return r
        totals, finite = dist.reduce(*r)
        if not finite:
            return False
        return plan.step(self.param_groups, threads, self.skip_non_finite, totals)

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
            r = self._try_step(self._make_plan())
        raise RuntimeError("lion_optim.torch.Lion: param_groups or state keep changing during step()")

    def _init_state(self, positions: List[int]) -> None:
        """Zero state for the parameters at these positions of the plan."""
        st = self.state
        dtypes = [self.param_groups[self._plan_groups[k]]["momentum_dtype"] for k in positions]
        labels = self._labels()
        for k, md in zip(positions, dtypes):
            _check_q8_dtensors([self._plan_params[k]], [labels[k]], md)
        for k, md in zip(positions, dtypes):
            p = self._plan_params[k]
            if md == _Q8:
                q8 = _Q8Home(p)
                self._homes[id(q8.tensor)] = q8
                st[p] = _ParamState(
                    st._changes, {"step": 0, "exp_avg_codes": q8.tensor, "exp_avg_absmax": q8.absmax}
                )
                continue
            home = _Home(_local(p), md or p.dtype, p if _is_dtensor(p) else None)
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
        self._plan_dist: Optional[_Collectives] = None

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
        found: List[Optional[Tuple[dict, Any, Any, Any]]] = []
        for k, p in enumerate(params):
            s = dict.get(st, p)
            if s is None or (isinstance(s, dict) and not s):
                found.append(None)
                continue
            if not isinstance(s, dict):
                raise ValueError(f"the state of {labels[k]} is not a dict")
            if _is_q8_state(s):
                where = f"the state of {labels[k]}"
                codes, absmax = s.get("exp_avg_codes"), s.get("exp_avg_absmax")
                q8 = self._homes.get(id(codes)) if codes is not None else None
                q8_source: Any = None
                if not isinstance(q8, _Q8Home) or q8.tensor is not codes or q8.absmax is not absmax:
                    _check_q8(codes, absmax, p, where)
                    q8, q8_source = None, _q8_values(codes, absmax, p, where)
                elif q8.layout != _layout(_local(p)) or q8.numel != _local(p).numel():
                    raise ValueError(
                        f"{where}: the parameter's memory layout changed since its 8-bit momentum "
                        "was laid out (its blocks are runs of 256 elements in memory order); "
                        "restore the layout, or drop its state"
                    )
                counts[k] = _step_count(s.get("step", 0), where)
                found.append((s, _Q8, q8, q8_source))
                continue
            ea = s.get("exp_avg")
            home = self._homes.get(id(ea)) if ea is not None else None
            source: Optional[torch.Tensor] = None
            if not isinstance(home, _Home) or home.tensor is not ea:
                _check_momentum(ea, p, f"the state of {labels[k]}")
                home, source = None, _momentum_values(ea, p, f"the state of {labels[k]}")
            elif home.layout != _layout(_local(p)) or home.numel != _local(p).numel():
                # The parameter's memory layout changed (`model.to(memory_format=...)`): its
                # momentum is laid out anew, to pair elements in memory order again.
                home, source = None, home.local
            counts[k] = _step_count(s.get("step", 0), f"the state of {labels[k]}")
            found.append((s, ea, home, source))
        shards = [_shard_arg(p, labels[k]) if _is_dtensor(p) else None for k, p in enumerate(params)]
        steps_buf = bytearray(8 * max(n, 1))
        if n:
            steps_buf[:] = array.array("q", counts).tobytes()
        step_views = torch.frombuffer(steps_buf, dtype=torch.int64).unbind()
        momentum: List[Optional[Tuple[bytearray, int, int, Optional[bytearray]]]] = []
        layouts: List[Optional[Tuple[int, ...]]] = []
        homes: Dict[int, Any] = {}
        for k, (p, f) in enumerate(zip(params, found)):
            if f is None:
                momentum.append(None)
                layouts.append(None)
                continue
            s, ea, home, source = f
            if type(s) is not _ParamState or s._changes is not st._changes:
                s = _ParamState(st._changes, s)
                st[p] = s
            if ea is _Q8:
                if home is None:
                    home = _Q8Home(p)
                    home.load(*source)
                    s["exp_avg_codes"] = home.tensor
                    s["exp_avg_absmax"] = home.absmax
            elif home is None:
                home = _Home(_local(p), ea.dtype, p if _is_dtensor(p) else None)
                home.local.copy_(source)
                s["exp_avg"] = home.tensor
            homes[id(home.tensor)] = home
            s["step"] = step_views[k]
            momentum.append((home.buf, home.code, home.numel, home.absbuf))
            layouts.append(home.layout)
        plan = _lion_optim.TorchPlan(params, groups, streams, labels, lens, momentum, layouts, shards, steps_buf)
        self._homes = homes
        self._plan, self._plan_state, self._plan_version = plan, st, st._changes[0]
        self._plan_params, self._plan_groups = params, groups
        self._plan_dist = _Collectives.of(params, shards, groups)
        return plan


class _Collectives:
    """The all-reduces of a step of sharded ``DTensor`` parameters (some placement a
    ``Shard``): per mesh and set of mesh dimensions they are sharded over, one int64 tensor of
    their cautious counts and a non-finite flag, summed over those dimensions' process groups."""

    __slots__ = ("keys", "groups", "slots")

    def __init__(self) -> None:
        # (mesh, sharded mesh dims, plan slots) per key; the param groups holding them.
        self.keys: Dict[Any, Tuple[Any, Tuple[int, ...], List[int]]] = {}
        self.groups: List[int] = []
        self.slots = 0

    @staticmethod
    def of(params: List[torch.Tensor], shards: List[Any], groups: List[int]) -> Optional["_Collectives"]:
        """The collectives of a plan's parameters; None if none is sharded."""
        out = _Collectives()
        seen = set()
        for p, arg, gi in zip(params, shards, groups):
            if arg is None or not arg[4]:
                continue
            placements = arg[0]
            dims = tuple(i for i, pl in enumerate(placements) if pl.is_shard())
            mesh = p.device_mesh
            entry = out.keys.setdefault((id(mesh), dims), (mesh, dims, []))
            entry[2].append(out.slots)
            out.slots += 1
            if gi not in seen:
                seen.add(gi)
                out.groups.append(gi)
        return out if out.slots else None

    def cautious(self, param_groups: List[Dict[str, Any]]) -> bool:
        """Whether a group holding sharded parameters is cautious (then counts are needed)."""
        return any(param_groups[gi].get("cautious") for gi in self.groups if gi < len(param_groups))

    def reduce(self, counts: List[int], finite: bool) -> Tuple[List[int], bool]:
        """The counts summed over the mesh, and whether every rank's gradients are finite."""
        import torch.distributed as dist

        totals = list(counts)
        bad = 0 if finite else 1
        any_bad = bad
        for mesh, dims, slots in self.keys.values():
            t = torch.tensor([counts[s] for s in slots] + [bad], dtype=torch.int64, device=mesh.device_type)
            for d in dims:
                dist.all_reduce(t, group=mesh.get_group(d))
            values = t.tolist()
            for s, v in zip(slots, values):
                totals[s] = int(v)
            any_bad += int(values[-1])
        return totals, any_bad == 0


def _normalize_params(group: Dict[str, Any]) -> None:
    """A group's ``params`` as a list, as ``torch.optim.Optimizer.add_param_group`` makes it
    (left as it is where torch refuses it: a set, a missing key)."""
    ps = group.get("params")
    if ps is None or isinstance(ps, (list, set)):
        return
    group["params"] = [ps] if isinstance(ps, torch.Tensor) else list(ps)


def _as_groups(params: Any) -> Optional[List[Any]]:
    """The param groups of an optimizer's ``params`` argument, each with its ``params`` as a
    list (an iterator read once); None where torch refuses the argument itself."""
    if isinstance(params, torch.Tensor):
        return None
    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    for g in groups:
        if isinstance(g, dict):
            _normalize_params(g)
    return groups


def _tensors_and_labels(group: Any, start: int, gi: int, many: bool) -> Tuple[List[torch.Tensor], List[str]]:
    """The tensors of a param group and their labels in messages, as ``Lion._labels`` gives
    them (``parameter 'name'``, ``parameter 3 (group 1)``, ``parameter 3``); what is not a
    tensor is left for torch to refuse."""
    if not isinstance(group, dict) or not isinstance(group.get("params"), list):
        return [], []
    ps = group["params"]
    names = group.get("param_names")
    if ps and isinstance(ps[0], tuple):
        names = [n for n, _ in ps]
        ps = [t for _, t in ps]
    tensors, labels = [], []
    for j, p in enumerate(ps):
        if not isinstance(p, torch.Tensor):
            continue
        if names is not None and j < len(names):
            labels.append(f"parameter '{names[j]}'")
        else:
            labels.append(f"parameter {start + j} (group {gi})" if many else f"parameter {start + j}")
        tensors.append(p)
    return tensors, labels


def _check_new_params(params: List[torch.Tensor], labels: List[str]) -> None:
    """Raises as a step would for a parameter it cannot step (device, dtype, layout; a
    ``DTensor``'s placements and local shard), before the optimizer stores any."""
    own = []
    for p, label in zip(params, labels):
        if _is_dtensor(p):
            _shard_arg(p, label)
            own.append(p._local_tensor)
        else:
            own.append(p)
    _lion_optim._check_params(own, labels)


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
