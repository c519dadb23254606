"""The package itself: imports without torch, typing files, docstrings, and the crate's
safetensors state file read by Python's `safetensors`."""

from __future__ import annotations

import inspect
import json
import pathlib
import subprocess
import sys

import pytest
import torch

import lion_optim
import lion_optim.torch
from lion_optim import _lion_optim

from conftest import needs_hooks


def test_functional_api_does_not_import_torch():
    code = (
        "import sys, numpy as np, lion_optim\n"
        "p = np.ones(5, np.float32); m = np.zeros(5, np.float32)\n"
        "assert lion_optim.step(p, np.full(5, 2, np.float32), m, lr=0.5)\n"
        "assert (p == 0.5).all(), p\n"
        "assert 'torch' not in sys.modules\n"
        "print(lion_optim.default_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 1


def test_typing_files_and_docstrings():
    root = pathlib.Path(lion_optim.__file__).parent
    assert (root / "py.typed").exists()
    assert (root / "_lion_optim.pyi").exists()
    for obj in (lion_optim, lion_optim.step, lion_optim.cautious_count, lion_optim.Q8Momentum,
                lion_optim.Q8Momentum.zeros_like, lion_optim.torch, lion_optim.torch.Lion,
                lion_optim.torch.Lion.step, lion_optim.torch.Lion.load_state_dict, lion_optim.torch.Lion.state_dict,
                lion_optim.torch.assign_streams, _lion_optim.TorchPlan, _lion_optim._step):
        assert inspect.getdoc(obj), obj
    assert inspect.getdoc(_lion_optim._check_group)
    # TEST_HOOKS says whether the test hooks are there (the cargo feature `test-hooks`).
    for hook in ("_reference_step", "_reference_step_q8", "_set_exchange_api", "_save_safetensors_demo"):
        assert hasattr(_lion_optim, hook) == _lion_optim.TEST_HOOKS, hook
    # The stub lists what the extension has.
    stub = (root / "_lion_optim.pyi").read_text()
    for name in dir(_lion_optim):
        if not name.startswith("__"):
            assert name in stub, name


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected), bit by bit: the state files' checksum."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283


@needs_hooks
def test_safetensors_state_file_of_the_crate(tmp_path):
    """A state file written by the crate's `Lion::save_safetensors` (version 2) loads with
    Python's `safetensors` as ordinary tensors `{name}.exp_avg` in their dtypes, its metadata
    strings parse, and its checksum is the CRC-32C of the file with the checksum's digits set
    to "00000000"."""
    st = pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tmp_path / "lion.safetensors"
    values = _lion_optim._save_safetensors_demo(str(path))
    tensors = load_file(str(path))
    assert set(tensors) == {"wte.exp_avg", "h.0.ln_1.bias.exp_avg", "lm_head.exp_avg"}
    expect = {"wte": (torch.bfloat16, 10), "h.0.ln_1.bias": (torch.float32, 3), "lm_head": (torch.float16, 5)}
    for name, (dtype, n) in expect.items():
        t = tensors[f"{name}.exp_avg"]
        assert t.dtype == dtype and t.shape == (n,), name
        assert torch.equal(t.float(), torch.tensor(values[name])), name
        assert t.abs().sum() > 0, name  # two steps were taken
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "lion-optim" and meta["version"] == "2"
    assert int(meta["steps"]) == 2 and int(meta["skipped_steps"]) == 0
    assert "skip_non_finite" not in meta  # version 1's global flag: now one per group
    assert float(meta["lr_scale"]) == 1.0
    assert int(meta["groups"]) == 2 and int(meta["tensors"]) == 3
    g0 = {k.split(".", 2)[2]: v for k, v in meta.items() if k.startswith("group.0.")}
    g1 = {k.split(".", 2)[2]: v for k, v in meta.items() if k.startswith("group.1.")}
    keys = {"lr", "beta1", "beta2", "weight_decay", "maximize", "grad_unscale",
            "weight_decay_variant", "max_lr", "rounding", "seed", "cautious", "skip_non_finite"}
    assert set(g0) == set(g1) == keys
    assert float(g0["lr"]) == 1e-3 and float(g0["weight_decay"]) == 0.1
    assert (float(g0["beta1"]), float(g0["beta2"])) == (0.9, 0.99)
    assert g0["rounding"] == "nearest" and g0["cautious"] == "off" and g0["weight_decay_variant"] == "paper"
    assert float(g1["lr"]) == 2e-3 and float(g1["grad_unscale"]) == 0.5 and float(g1["max_lr"]) == 4e-3
    assert g1["rounding"] == "stochastic" and int(g1["seed"]) == 7 and g1["cautious"] == "whole"
    assert g1["weight_decay_variant"] == "fully_decoupled" and g1["maximize"] == "false"
    assert g0["skip_non_finite"] == "false" and g1["skip_non_finite"] == "true"
    for name, group in (("wte", 0), ("h.0.ln_1.bias", 1), ("lm_head", 0)):
        assert int(meta[f"tensor.{name}.group"]) == group
        assert int(meta[f"tensor.{name}.stream"]) >= 0
        assert meta[f"tensor.{name}.params"] in ("any", "f32", "f16", "bf16")
    # The header is plain JSON, as the format says.
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["wte.exp_avg"]["dtype"] == "BF16"
    # The checksum: 8 hex digits, the CRC-32C of the whole file with them set to "00000000".
    digits = meta["checksum"]
    assert len(digits) == 8 and int(digits, 16) >= 0
    key = b'"checksum":"' + digits.encode() + b'"'
    assert raw.count(key) == 1
    zeroed = raw.replace(key, b'"checksum":"00000000"')
    assert f"{crc32c(zeroed):08x}" == digits
    assert st is not None
