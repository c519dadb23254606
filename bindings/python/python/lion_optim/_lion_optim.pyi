"""Type stubs of the Rust extension ``lion_optim._lion_optim`` (private: use ``lion_optim`` and
``lion_optim.torch``)."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

__version__: str
#: Elements from which a step is spread over threads.
PAR_THRESHOLD: int

def _step(
    params: List[Any],
    grads: List[Any],
    exp_avgs: List[Any],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    grad_unscale: Optional[float],
    max_lr: Optional[float],
    seed: Optional[int],
    cautious: bool,
    step: int,
    offsets: Optional[Sequence[int]],
    streams: Optional[Sequence[int]],
    cautious_totals: Optional[Sequence[Tuple[int, int]]],
    num_threads: int,
    skip_non_finite: bool,
) -> bool:
    """One Lion step over lists of arrays; True if applied."""

def _cautious_count(
    grads: List[Any],
    exp_avgs: List[Any],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    grad_unscale: Optional[float],
    max_lr: Optional[float],
) -> List[int]:
    """The cautious variant's count per tensor."""

def _reference_step(
    params: Any,
    grads: Any,
    exp_avg: Any,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool = False,
    grad_unscale: Optional[float] = None,
    max_lr: Optional[float] = None,
    seed: Optional[int] = None,
    cautious: bool = False,
    cautious_total: Optional[Tuple[int, int]] = None,
    step: int = 0,
    offset: int = 0,
) -> None:
    """Test hook: the crate's scalar reference step on one tensor (``seed`` used as it is)."""

def _last_core_ns() -> int:
    """Nanoseconds the last step spent in the core, with the GIL released."""

def _set_exchange_api(enabled: bool) -> None:
    """Test hook: use or bypass the DLPack C exchange API."""

def simd_path() -> str:
    """The instruction-set path of the core on this CPU."""

def _save_safetensors_demo(path: str) -> Dict[str, List[float]]:
    """Test hook: a safetensors state file written by the crate's ``Lion::save_safetensors``;
    returns each tensor's momentum as floats, by name."""

class TorchPlan:
    """The parameters, states, groups, streams and labels of a ``lion_optim.torch.Lion``."""

    def __init__(
        self,
        params: List[Any],
        states: List[Optional[dict]],
        group: List[int],
        streams: List[int],
        labels: List[str],
        group_lens: List[int],
    ) -> None: ...
    def step(self, param_groups: List[Dict[str, Any]], num_threads: int, skip_non_finite: bool) -> Any:
        """True (applied), False (skipped), None (stale plan) or positions needing state."""
    def __len__(self) -> int: ...
