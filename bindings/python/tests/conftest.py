"""Shared helpers: the reference PyTorch Lion class, bit comparisons, dtype tables."""

from __future__ import annotations

import itertools
import os

import pytest
import torch

import lion_optim
from lion_optim import _lion_optim
from reference_lion import ReferenceLion  # noqa: F401 (the tests import it from here)

# The extension's test hooks (`_reference_step`, `_set_exchange_api`, `_save_safetensors_demo`)
# exist only in a build with the cargo feature `test-hooks`, which the test script enables. The
# tests that need them skip without them, unless hooks are required (LION_OPTIM_TEST_HOOKS=1,
# or CI): then the run stops at once.
HOOKS = bool(getattr(_lion_optim, "TEST_HOOKS", False))
BUILD_WITH_HOOKS = (
    "pip install ./bindings/python --config-settings=build-args='--features test-hooks'"
)
needs_hooks = pytest.mark.skipif(
    not HOOKS,
    reason=f"needs the extension's test hooks, which this build lacks: {BUILD_WITH_HOOKS}",
)


def pytest_configure(config):
    required = os.environ.get("LION_OPTIM_TEST_HOOKS") == "1" or os.environ.get("CI", "") not in ("", "0", "false")
    if required and not HOOKS:
        raise pytest.UsageError(
            "the extension was built without the test hooks that LION_OPTIM_TEST_HOOKS=1 (or CI) "
            f"requires; build it with them: {BUILD_WITH_HOOKS}"
        )

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_COMBOS = list(itertools.product(DTYPES, repeat=3))  # (params, grads, momentum): 27
# Lengths around every vector width (4, 8, 16, 32 lanes) and block sizes, none a multiple of
# a width beyond the first few.
SIZES = [0, 1, 3, 7, 8, 15, 17, 31, 33, 63, 65, 127, 129, 1000, 4099]

INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a float tensor, as integers."""
    return t.detach().contiguous().view(INT_VIEW[t.dtype])


def assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Bit-identical, except that any NaN matches any NaN."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a, e = actual.detach(), expected.detach()
    same = (bits(a) == bits(e)) | (torch.isnan(a) & torch.isnan(e))
    if not bool(same.all()):
        i = int((~same).flatten().nonzero()[0])
        raise AssertionError(
            f"{what}: {int((~same).sum())} of {a.numel()} elements differ; first at {i}: "
            f"{a.flatten()[i].item()!r} != {e.flatten()[i].item()!r}"
        )


def ulp32(x: torch.Tensor) -> torch.Tensor:
    """The spacing of f32 numbers at |x| (for |x| > 0; the smallest subnormal at 0)."""
    x = x.abs().float()
    return torch.nextafter(x, torch.full_like(x, float("inf"))) - x


def special_values(n: int, dtype: torch.dtype, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Random values with zeros, signed zeros, tiny values and (rarely) inf/NaN mixed in."""
    x = torch.randn(n, generator=gen) * scale
    if n >= 8:
        x[::7] = 0.0
        x[3::11] = -0.0
        x[5::13] = 1e-41  # subnormal in f32, zero in f16, subnormal in bf16
    return x.to(dtype)


@pytest.fixture(autouse=True)
def _exchange_api_on():
    """Every test starts with the DLPack exchange API in use (two tests turn it off)."""
    if not HOOKS:
        yield
        return
    _lion_optim._set_exchange_api(True)
    yield
    _lion_optim._set_exchange_api(True)
