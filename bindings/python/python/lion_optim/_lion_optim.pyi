"""Type stubs of the Rust extension ``lion_optim._lion_optim`` (private: use ``lion_optim`` and
``lion_optim.torch``).

Settings travel as a param group dict (``group``): the keys of a ``lion_optim.torch.Lion``
param group, ``lr``, ``betas``, ``weight_decay`` (required), ``maximize``, ``grad_unscale``,
``max_lr``, ``stochastic_rounding``, ``seed``, ``cautious`` (optional). A value of the wrong
type raises ``TypeError``; the core validates the values (``ValueError`` with its message).

The test hooks (``_reference_step``, ``_reference_step_q8``, ``_set_exchange_api``,
``_save_safetensors_demo``) exist
only in an extension built with the cargo feature ``test-hooks`` (``TEST_HOOKS`` is then True).
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

__version__: str
#: Elements from which a step is spread over threads.
PAR_THRESHOLD: int
#: Whether the extension was built with the test hooks (the cargo feature ``test-hooks``).
TEST_HOOKS: bool
#: bitsandbytes' signed dynamic map: the 8-bit momentum's 256 code values, ascending.
Q8_MAP: List[float]
#: Elements per block of 8-bit momentum (one float32 scale each).
Q8_BLOCK: int

def _step(
    params: List[Any],
    grads: List[Any],
    exp_avgs: List[Any],
    group: Dict[str, Any],
    *,
    step: int,
    offsets: Optional[Sequence[int]],
    streams: Optional[Sequence[int]],
    cautious_totals: Optional[Sequence[Tuple[int, int]]],
    num_threads: int,
    skip_non_finite: bool,
) -> bool:
    """One Lion step over lists of arrays with the settings ``group``; True if applied. An
    entry of ``exp_avgs`` is an array, or 8-bit momentum as a ``(codes, absmax)`` tuple."""

def _cautious_count(grads: List[Any], exp_avgs: List[Any], group: Dict[str, Any]) -> List[int]:
    """The cautious variant's count per tensor (``exp_avgs`` as in :func:`_step`)."""

def _check_group(group: Dict[str, Any], name: str) -> None:
    """Checks a param group's settings as a step reads them; ``name`` starts every message."""

def _last_core_ns() -> int:
    """Nanoseconds the last step spent in the core, with the GIL released."""

def simd_path() -> str:
    """The instruction-set backend of the core on this CPU."""

def _check_params(params: List[Any], labels: List[str]) -> None:
    """Raises as a step would for a parameter it cannot view (device, dtype, layout), writing
    nothing; ``labels[i]`` names ``params[i]`` in messages."""

class TorchPlan:
    """The parameters, states, groups, streams and labels of a ``lion_optim.torch.Lion``; the
    memory layout of each momentum buffer; where each ``DTensor`` parameter's local shard lies
    in the whole tensor. ``momentum[k]``: None (no state yet) or ``(buffer, code, elements,
    scales)``: code 0/1/2 (float32/float16/bfloat16 elements in ``buffer``, ``scales`` None) or 3
    (8-bit momentum: ``buffer`` the uint8 codes, ``scales`` a bytearray of one float32 per block of
    256 elements). Every bytearray is pinned (cannot be resized) while the plan lives."""

    def __init__(
        self,
        params: List[Any],
        group: List[int],
        streams: List[int],
        labels: List[str],
        group_lens: List[int],
        momentum: List[Optional[Tuple[bytearray, int, int, Optional[bytearray]]]],
        layouts: List[Optional[Tuple[int, ...]]],
        shards: List[Optional[Tuple[Any, List[Tuple[int, int, int]], int, int, bool]]],
        steps: bytearray,
    ) -> None: ...
    def step(
        self,
        param_groups: List[Dict[str, Any]],
        num_threads: int,
        skip_non_finite: bool,
        totals: Optional[List[int]] = None,
    ) -> Any:
        """True (applied), False (skipped), None (stale plan) or positions needing state;
        ``totals``: the cautious counts of the whole tensors of sharded ``DTensor`` parameters."""
    def stats(self, param_groups: List[Dict[str, Any]], skip_non_finite: bool) -> Any:
        """None (stale plan), positions needing state, or ``(counts, finite)``: the cautious
        counts of the local shards of sharded ``DTensor`` parameters, and whether every gradient
        is finite."""
    def __len__(self) -> int: ...

# Test hooks (cargo feature ``test-hooks``):

def _reference_step(
    params: Any,
    grads: Any,
    exp_avg: Any,
    group: Dict[str, Any],
    *,
    cautious_total: Optional[Tuple[int, int]] = None,
    step: int = 0,
    offset: int = 0,
) -> None:
    """Test hook: the crate's scalar backend (bit-identical to its reference) on one tensor
    (``seed`` used as it is)."""

def _reference_step_q8(
    params: bytes,
    params_dtype: str,
    grads: bytes,
    grads_dtype: str,
    codes: bytes,
    absmax: bytes,
    group: Dict[str, Any],
    *,
    step: int = 0,
    offset: int = 0,
    skip_non_finite: bool = False,
) -> Tuple[bytes, bytes, bytes, bool]:
    """Test hook: one step of ``lion_optim::reference::step_q8_with`` (the 8-bit momentum's
    specification) on copies: parameters and gradients as native-endian bytes of
    ``params_dtype``/``grads_dtype`` (``"float32"``, ``"float16"``, ``"bfloat16"``), the momentum
    as its uint8 codes and float32 block scales (``seed`` used as it is). Returns the new
    ``(params, codes, absmax)`` bytes and whether the step was applied."""

def _set_exchange_api(enabled: bool) -> None:
    """Test hook: use or bypass the DLPack C exchange API."""

def _save_safetensors_demo(path: str) -> Dict[str, List[float]]:
    """Test hook: a safetensors state file written by the crate's ``Lion::save_safetensors``;
    returns each tensor's momentum as floats, by name."""
