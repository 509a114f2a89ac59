"""Tests for glandseg_core.device: device choice, autocast only where it pays, the CPU thread limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from glandseg_core import device
from glandseg_core.errors import ModelError


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_precision_autocast_is_a_no_op_without_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "has_amx", lambda: False)
    with device.autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
    with device.autocast(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")


def test_autocast_uses_bf16_on_a_cpu_with_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "has_amx", lambda: True)
    with device.autocast(torch.device("cpu"), True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with device.autocast(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_glandseg_cpu_bf16_0_runs_fp32_as_a_cpu_without_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "has_amx", lambda: True)
    monkeypatch.setenv("GLANDSEG_CPU_BF16", "0")
    with device.autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("GLANDSEG_CPU_BF16", "1")
    with device.autocast(torch.device("cpu"), True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_cuda_asked_without_gpu() -> None:
    with pytest.raises(ModelError, match="no CUDA GPU"):
        device.pick_device("cuda")
    assert device.pick_device(None) == torch.device("cpu")


def test_pick_device_names() -> None:
    assert device.pick_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert device.pick_device("auto") == device.pick_device("") == expected


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1), ("0", None), ("-2", None), ("x", None), ("", None)]
)
def test_thread_limit(monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None) -> None:
    torch.set_num_threads(2)
    monkeypatch.setenv("GLANDSEG_THREADS", value)
    device.apply_thread_limit()
    assert torch.get_num_threads() == (2 if expected is None else expected)
