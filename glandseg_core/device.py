"""Where and how networks run: device choice, mixed precision, and the CPU thread limit.

bf16 autocast on CPUs with AMX (3-4x faster than fp32 there), bf16/fp16 on CUDA, fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from .errors import ModelError


@functools.cache
def has_amx() -> bool:
    """Whether this CPU has AMX-BF16 tiles; without them bf16 is slower than fp32, so autocast stays off."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def cpu_bf16() -> bool:
    """Whether autocast runs bf16 on this CPU: it has AMX and ``$GLANDSEG_CPU_BF16`` is not ``0`` (``0`` runs
    fp32 as a CPU without AMX does, e.g. to compare engines as such a machine would see them)."""
    return has_amx() and os.environ.get("GLANDSEG_CPU_BF16", "").strip() != "0"


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 on CPUs with AMX (:func:`cpu_bf16`), bf16 (or fp16) on CUDA; a no-op otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast(
            "cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        )
    if enabled and device.type == "cpu" and cpu_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when available (or asked), else ``cpu``.

    Raises:
        ModelError: when ``cuda`` is asked for but not available.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


def apply_thread_limit() -> None:
    """Honour ``GLANDSEG_THREADS`` (e.g. 1 on a CPU shared with a training); ignored when not a positive integer."""
    value = os.environ.get("GLANDSEG_THREADS", "")
    if value.isdigit() and int(value) > 0:
        torch.set_num_threads(int(value))
