"""Mixed precision: bf16 autocast on CPUs with AMX (3-4x faster than fp32 there), bf16/fp16 on CUDA."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch


@functools.cache
def has_amx() -> bool:
    """Whether this CPU has AMX-BF16 tiles; without them bf16 is slower than fp32, so autocast stays off."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 on CPUs with AMX, bf16 (or fp16) on CUDA; a no-op otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if enabled and device.type == "cpu" and has_amx():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
