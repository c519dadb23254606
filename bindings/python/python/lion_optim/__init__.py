"""The Lion optimizer step, fused, vectorized and bit-exact, from Rust (the ``lion-optim`` crate).

Two ways in:

* ``lion_optim.torch.Lion`` -- a drop-in ``torch.optim.Optimizer``::

      from lion_optim.torch import Lion
      opt = Lion(model.parameters(), lr=1e-4, weight_decay=0.1)

* :func:`step` -- the functional API: one Lion step over arrays you keep yourself (numpy arrays,
  ml_dtypes bfloat16 arrays, torch tensors), updated in place::

      import numpy as np, lion_optim
      p = np.ones(1000, np.float32); g = np.full(1000, 0.5, np.float32); m = np.zeros_like(p)
      lion_optim.step(p, g, m, lr=1e-3, weight_decay=0.1)

Every step is one call into Rust over all tensors, with the GIL released and the work spread
over threads. Parameters, gradients and momentum may each be float32, bfloat16 or float16. The
arithmetic is the crate's reference, bit for bit, on every CPU::

    decay = f32(1 - lr*wd)   b1 = f32(beta1)   omb1 = f32(1 - beta1)    (computed in f64,
    lr32  = f32(lr)          b2 = f32(beta2)   omb2 = f32(1 - beta2)     rounded once)
    per element, in f32:  p1 = p * decay
                          c  = m*b1 + g*omb1          (the old momentum)
                          p  = p1 - lr32 * sign(c)    sign(0) = sign(NaN) = 0
                          m  = m*b2 + g*omb2

No fused multiply-add: PyTorch's CPU ``add_(x, alpha=a)`` fuses, so the momentum may differ from
a PyTorch implementation's by one f32 rounding in some elements; parameters after a step from
the same state are identical.

Bad input (a CUDA, meta or sparse tensor, a view that is not dense, a read-only array, mismatched
shapes or memory layouts, unsupported dtypes, buffers that overlap in memory, invalid
hyperparameters) raises ``TypeError``,
``ValueError`` or ``RuntimeError`` naming the tensor or the setting, and nothing is written.
Hyperparameters are validated by the Rust core, whose message the ``ValueError`` carries.

This module does not import torch; ``lion_optim.torch`` does.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple, Union

from . import _lion_optim

if TYPE_CHECKING:  # pragma: no cover
    import numpy
    import torch as _torch

    Array = Union[numpy.ndarray, _torch.Tensor]
else:
    Array = Any

__version__: str = _lion_optim.__version__

__all__ = [
    "step",
    "cautious_count",
    "Q8Momentum",
    "simd_path",
    "default_num_threads",
    "STREAM_MULTIPLIER",
    "Q8_MAP",
    "Q8_BLOCK",
    "__version__",
]

#: ``seed ^ stream * STREAM_MULTIPLIER`` (mod 2**64) is the seed of a tensor's stochastic
#: rounding bits, ``stream`` being its entry of ``streams`` (default: its position).
STREAM_MULTIPLIER = 0x9E3779B97F4A7C15

#: The 8-bit momentum's code map: bitsandbytes' signed dynamic map
#: (``bitsandbytes.functional.create_dynamic_map(signed=True)``), its 256 float32 values
#: ascending (0.0 at code 127, 1.0 at code 255). Momentum element ``i`` is
#: ``Q8_MAP[codes[i]] * absmax[i // 256]``.
Q8_MAP: Tuple[float, ...] = tuple(_lion_optim.Q8_MAP)

_U64 = 1 << 64

#: Elements per block of 8-bit momentum (one float32 scale each): 256.
Q8_BLOCK: int = _lion_optim.Q8_BLOCK


class Q8Momentum:
    """8-bit momentum for :func:`step` and :func:`cautious_count` (in place of an ``exp_avg``
    array): bitsandbytes' blockwise format, a quarter of float32's memory.

    ``codes`` holds one uint8 per element (an index into :data:`Q8_MAP`), laid out like the
    parameter (its shape and memory layout, or both C-contiguous); ``absmax`` one float32 per
    block of 256 elements in memory order, C-contiguous, ``ceil(numel / 256)`` of them. Element
    ``i`` of the momentum is ``Q8_MAP[codes[i]] * absmax[i // 256]``. Both are numpy arrays or
    CPU torch tensors, written in place by :func:`step`. The same two arrays as
    ``bitsandbytes.optim.Lion8bit``'s ``state1`` and ``absmax1``.

    A shard of a larger tensor (``offsets``) must start on a block boundary (a multiple of 256)
    and, unless it is the tensor's last, hold whole blocks: the blocks are those of the whole
    tensor.

    Example::

        import numpy as np, lion_optim
        p = np.ones(1000, np.float32); g = np.full(1000, 0.5, np.float32)
        m = lion_optim.Q8Momentum.zeros_like(p)
        lion_optim.step(p, g, m, lr=1e-3)
        m.codes.dtype, m.absmax.shape     # (dtype('uint8'), (4,))
    """

    __slots__ = ("codes", "absmax")

    def __init__(self, codes: Array, absmax: Array) -> None:
        self.codes = codes
        self.absmax = absmax

    @classmethod
    def zeros_like(cls, param: Array) -> "Q8Momentum":
        """Zero momentum for ``param`` (code 127 is 0.0, every scale 0.0), of ``param``'s kind:
        torch tensors (``torch.full_like(param, 127, dtype=torch.uint8)``, which keeps its
        memory layout) for a torch tensor, numpy arrays otherwise."""
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(param, torch.Tensor):
            codes = torch.full_like(param, 127, dtype=torch.uint8)
            absmax = torch.zeros(-(-param.numel() // Q8_BLOCK), dtype=torch.float32, device=param.device)
            return cls(codes, absmax)
        import numpy as np

        codes = np.full_like(param, 127, dtype=np.uint8)
        absmax = np.zeros(-(-int(np.size(param)) // Q8_BLOCK), np.float32)
        return cls(codes, absmax)

    def __repr__(self) -> str:
        return f"Q8Momentum(codes={self.codes!r}, absmax={self.absmax!r})"


def _momenta(ms: list) -> list:
    """The exp_avgs as the extension takes them: arrays, or ``(codes, absmax)`` tuples."""
    return [(m.codes, m.absmax) if isinstance(m, Q8Momentum) else m for m in ms]


def simd_path() -> str:
    """The instruction-set path the core uses on this CPU: ``"avx512"``, ``"avx2"``,
    ``"portable"`` (SSE2, NEON, simd128, ...). All give the same bits."""
    return _lion_optim.simd_path()


def default_num_threads() -> int:
    """The thread count used when ``num_threads`` is None: torch's intra-op thread count
    (``torch.get_num_threads()``) if torch is imported, else ``os.cpu_count()``."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    return max(1, os.cpu_count() or 1)


def _check_num_threads(num_threads: Any, where: str = "") -> None:
    """``num_threads``: None or an int >= 1 (the core never sees it; it sizes the thread pool)."""
    if num_threads is None:
        return
    pre = f"{where}: " if where else ""
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"{pre}num_threads must be an int or None, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"{pre}Invalid num_threads: {num_threads} (must be >= 1)")


def _as_list(x: Any, name: str) -> Tuple[list, bool]:
    """(list of arrays, whether a single array was given)."""
    if isinstance(x, (list, tuple)):
        return list(x), False
    return [x], True


def _u64(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not 0 <= v < _U64:
        raise ValueError(f"Invalid {name}: {v} (must be in [0, 2**64))")
    return v


def _per_tensor(x: Any, n: int, single: bool, name: str) -> Optional[list]:
    """One int per tensor (a single int for a single array)."""
    if x is None:
        return None
    if single and not isinstance(x, (list, tuple)):
        x = [x]
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be a list with one int per tensor")
    return [_u64(v, f"{name}[{i}]") for i, v in enumerate(x)]


def _totals(x: Any, single: bool) -> Optional[list]:
    """One (agreeing, numel) pair per tensor (a single pair for a single array)."""
    if x is None:
        return None
    if single and isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x):
        x = [x]
    if not isinstance(x, (list, tuple)):
        raise TypeError("cautious_totals must be a list with one (agreeing, numel) pair per tensor")
    out = []
    for i, pair in enumerate(x):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"cautious_totals[{i}] must be a pair (agreeing, numel), got {pair!r}")
        out.append((_u64(pair[0], f"cautious_totals[{i}][0]"), _u64(pair[1], f"cautious_totals[{i}][1]")))
    return out


def step(
    params: Union[Array, Sequence[Array]],
    grads: Union[Array, Sequence[Array]],
    exp_avgs: Union[Array, Q8Momentum, Sequence[Union[Array, Q8Momentum]]],
    *,
    lr: float = 1e-4,
    betas: Tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_unscale: Optional[float] = None,
    max_lr: Optional[float] = None,
    stochastic_rounding: bool = False,
    seed: int = 0,
    cautious: bool = False,
    step: int = 0,
    offsets: Union[int, Sequence[int], None] = None,
    streams: Union[int, Sequence[int], None] = None,
    cautious_totals: Union[Tuple[int, int], Sequence[Tuple[int, int]], None] = None,
    num_threads: Optional[int] = None,
    skip_non_finite: bool = False,
) -> bool:
    """One Lion step over arrays, in place: ``params`` and ``exp_avgs`` are updated, ``grads``
    read. Returns True if the step was applied (False only with ``skip_non_finite``).

    Each of ``params``, ``grads``, ``exp_avgs`` is one array or a list of arrays (the same
    length): numpy arrays (float32, float16, ml_dtypes.bfloat16) or CPU torch tensors (float32,
    bfloat16, float16), dense; ``params`` and ``exp_avgs`` writable. Any mix of dtypes works
    (27 combinations). The step is elementwise and pairs elements in memory order: a gradient
    must have its parameter's shape and strides; a momentum buffer its number of elements, and
    its shape and strides too if the parameter is not C-contiguous (``channels_last``, a
    transposed matrix: ``torch.zeros_like(p)`` keeps them) or has its shape. An element's
    index (for ``offsets`` and the rounding bits) is its position in memory. All tensors are
    stepped in one call, spread over ``num_threads`` threads (default
    :func:`default_num_threads`). An ``exp_avg`` may be a :class:`Q8Momentum` instead: 8-bit
    blockwise momentum (its codes and block scales updated in place). (A ``DTensor`` has no memory of its own: step its local shard
    with its offset, or use ``lion_optim.torch.Lion``, which does.)

    Args:
        lr, betas, weight_decay: the hyperparameters (the reference's defaults).
        maximize: step along ``+sign(c)``. The momentum still averages the gradients as given
            (torch's ``maximize`` optimizers average ``-grad``: the parameters are identical,
            the momentum is exactly negated).
        grad_unscale: multiply every gradient by this first (``1 / loss_scale``), in the pass.
        max_lr: fully decoupled weight decay: ``p *= 1 - weight_decay * lr / max_lr`` instead of
            ``1 - lr * weight_decay``.
        stochastic_rounding, seed: round bfloat16/float16 results stochastically, from random
            bits that are a pure function of ``(seed ^ stream * STREAM_MULTIPLIER, step,
            offset + element index)``: the same on every CPU and thread count.
        cautious: the cautious variant (only where ``sign(c)`` agrees with the gradient, rescaled
            by ``numel / (agreeing + 1)``).
        step: the step number, which keys the stochastic-rounding bits: advance it every step.
        offsets: per tensor, the index of its first element in a larger tensor it is a shard of
            (default 0): shards stepped with their offsets give exactly the bytes of the whole
            tensor, with stochastic rounding too.
        streams: per tensor, its random stream (default: its position in the list); the shards
            of one tensor share its stream.
        cautious_totals: per tensor, ``(agreeing, numel)`` of the whole tensor it is a shard of
            (the sum of :func:`cautious_count` over all shards, and the whole length): cautious
            shards then give exactly the bytes of the whole tensor.
        num_threads: threads to spread the work over.
        skip_non_finite: if any gradient (after unscaling) is inf or NaN, write nothing and
            return False.

    Raises:
        TypeError: an unsupported type or dtype, or a setting of the wrong type (``lr="fast"``).
        ValueError: bad hyperparameters (the core validates them; its message is passed
            through, e.g. ``lion_optim.step: invalid hyperparameter lr = -1: must be finite
            and >= 0``), mismatched shapes or list lengths, a read-only array.
        RuntimeError: a tensor that is not on the CPU, not dense (strided, expanded), sparse,
            or overlaps another buffer of the call.
        In every case nothing has been written.
    """
    _check_num_threads(num_threads)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < _U64:
        raise ValueError(f"Invalid step: {step!r} (must be an int in [0, 2**64))")
    ps, single = _as_list(params, "params")
    gs, _ = _as_list(grads, "grads")
    ms, _ = _as_list(exp_avgs, "exp_avgs")
    ms = _momenta(ms)
    offs = _per_tensor(offsets, len(ps), single, "offsets")
    strs = _per_tensor(streams, len(ps), single, "streams")
    totals = _totals(cautious_totals, single)
    if totals is not None and not cautious:
        raise ValueError("cautious_totals needs cautious=True")
    # The settings as a param group (the one form the extension parses and the core validates).
    group = dict(
        lr=lr,
        betas=betas,
        weight_decay=weight_decay,
        maximize=maximize,
        grad_unscale=grad_unscale,
        max_lr=max_lr,
        stochastic_rounding=stochastic_rounding,
        seed=seed,
        cautious=cautious,
    )
    return _lion_optim._step(
        ps,
        gs,
        ms,
        group,
        step=step,
        offsets=offs,
        streams=strs,
        cautious_totals=totals,
        num_threads=num_threads or default_num_threads(),
        skip_non_finite=bool(skip_non_finite),
    )


def cautious_count(
    grads: Union[Array, Sequence[Array]],
    exp_avgs: Union[Array, Q8Momentum, Sequence[Union[Array, Q8Momentum]]],
    *,
    betas: Tuple[float, float] = (0.9, 0.99),
    grad_unscale: Optional[float] = None,
) -> Union[int, list]:
    """The cautious variant's count: the number of elements where ``sign(c) * g > 0`` (``c =
    m*b1 + g*(1 - b1)``, ``g`` after unscaling), per tensor (an int for one array, else a list).

    For a tensor sharded across processes: count every shard, all-reduce the sum, and step every
    shard with ``cautious=True, cautious_totals=(total, whole numel), offsets=shard start``: the
    result is exactly the bytes of the whole tensor's cautious step.

    Bad ``betas`` or ``grad_unscale`` raise as in :func:`step` (``ValueError`` with the core's
    message, ``TypeError`` for a value of the wrong type).
    """
    gs, single = _as_list(grads, "grads")
    ms, _ = _as_list(exp_avgs, "exp_avgs")
    ms = _momenta(ms)
    group = dict(lr=0.0, betas=betas, weight_decay=0.0, grad_unscale=grad_unscale)
    counts = _lion_optim._cautious_count(gs, ms, group)
    return counts[0] if single else counts
