"""The device module: the automatic choice, the environment overrides and their errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from webssl_cli import device as dev
from webssl_cli.errors import UserError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    monkeypatch.delenv(dev.DTYPE_ENV, raising=False)


@no_cuda
def test_auto_is_cpu_fp32_without_a_gpu() -> None:
    device = dev.pick_device()
    assert device == torch.device("cpu")
    assert dev.autocast_dtype(device) is None
    with dev.autocast(device, None):  # a no-op context on CPU
        assert not torch.is_autocast_enabled()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    assert dev.pick_device() == torch.device("cpu")
    cpu = torch.device("cpu")
    monkeypatch.setenv(dev.DTYPE_ENV, "bf16")
    assert dev.autocast_dtype(cpu) == torch.bfloat16  # bf16 forced even on CPU
    assert dev.autocast_dtype(cpu, "fp32") is None  # an explicit config value wins
    monkeypatch.setenv(dev.DTYPE_ENV, "fp32")
    assert dev.autocast_dtype(cpu, "auto") is None
    assert dev.autocast_dtype(cpu, "bf16") == torch.bfloat16
    x = torch.randn(4, 4)
    with dev.autocast(cpu, torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16


def test_an_explicit_request_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(dev.DEVICE_ENV, "nonsense")
    assert dev.pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [
        (dev.DEVICE_ENV, "gpu", "WEBSSL_DEVICE: unknown device 'gpu'; valid: auto, cpu, cuda"),
        (dev.DEVICE_ENV, "cuda:x", "WEBSSL_DEVICE: unknown device"),
        (dev.DTYPE_ENV, "fp16", "WEBSSL_DTYPE: unknown dtype 'fp16'; valid: auto, bf16, fp32"),
    ],
)
def test_bad_values_are_user_errors(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, match: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=match):
        dev.autocast_dtype(dev.pick_device()) if var == dev.DTYPE_ENV else dev.pick_device()


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_user_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(dev.DEVICE_ENV, name)
    with pytest.raises(UserError, match="WEBSSL_DEVICE: .* no CUDA device is visible"):
        dev.pick_device()
    with pytest.raises(UserError, match="^device: "):
        dev.pick_device(name)


def test_importing_the_module_imports_no_torch() -> None:
    code = "import sys, webssl_cli.device\nassert 'torch' not in sys.modules\n"
    subprocess.run([sys.executable, "-c", code], check=True)
