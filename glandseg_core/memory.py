"""One memory estimate, after every resampling: what segmenting an image (or training a config) will need.

The pixels the network really sees are known before anything is allocated: the segmenter's
:meth:`~glandseg_core.segmenters.base.Segmenter.plan` says the image's size at the model's pixel size (after the
pixel size the user typed, the TIFF's resolution tags or the slide level), its windows and its TTA views. The
model kind says how memory grows with them (:meth:`glandseg_core.registry.ModelKind.memory_cost`, measured on
the shipped models): a fixed part (runtime, weights, one window's activations: windows bound them) plus bytes
per pixel of the image at the model's pixel size (its probabilities and post-processing), plus, when the image
is resampled, bytes per pixel of the input (the input and its label map at the input's size).

The budget (:func:`current_budget`) is ``GLANDSEG_MEMORY_BUDGET_MB`` when set (or ``--memory-budget`` on the
command line), else a share of the memory available now (``psutil``): a quarter for the dashboard's interactive
jobs (``GLANDSEG_MEMORY_FRACTION``), most of it for ``glandseg predict``. An image over the budget is refused in
one line that says what would fit (:func:`check`). Training configs are checked by the kind's estimate of one
step (:func:`check_training`) against the device's memory, before any data is read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from .errors import ConfigError, ImageError
from .registry import MemoryCost
from .segmenters.base import Plan
from .segmenters.scale import model_factor, scaled_shape

BUDGET_ENV = "GLANDSEG_MEMORY_BUDGET_MB"
FRACTION_ENV = "GLANDSEG_MEMORY_FRACTION"
INTERACTIVE_FRACTION = (
    0.25  # the dashboard: the rest stays with the server, its sessions and the machine
)
BATCH_FRACTION = 0.8  # glandseg predict: one job, the user's own machine


def _size(n: float) -> str:
    """``1.5 GB``, ``640 MB``: bytes in words (powers of 1024)."""
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


@dataclass(frozen=True)
class Budget:
    """What one segmentation may use: ``bytes`` of memory, of which ``source`` says where from."""

    bytes: int
    source: str

    def __str__(self) -> str:
        return f"{_size(self.bytes)} ({self.source})"


def current_budget(mb: float | None = None, fraction: float | None = None) -> Budget:
    """The memory budget of one segmentation now.

    Args:
        mb: a fixed budget in MiB (``--memory-budget``); None: ``GLANDSEG_MEMORY_BUDGET_MB``, else ``fraction``
            (default ``GLANDSEG_MEMORY_FRACTION``, else :data:`BATCH_FRACTION`) of the memory available now.

    Raises:
        ConfigError: a budget or fraction that is not a positive number (names the setting).
    """
    if mb is not None:
        return Budget(int(_positive(mb, "--memory-budget", 2**20)), f"--memory-budget {mb:g} MB")
    fixed = os.environ.get(BUDGET_ENV, "").strip()
    if fixed:
        return Budget(int(_positive(fixed, BUDGET_ENV, 2**20)), BUDGET_ENV)
    if fraction is None:
        fraction = float(
            _positive(os.environ.get(FRACTION_ENV, "") or BATCH_FRACTION, FRACTION_ENV, 1.0)
        )
    available = available_memory()
    return Budget(
        int(fraction * available), f"{fraction:.0%} of the {available / 2**30:.1f} GiB available"
    )


def available_memory() -> int:
    """Bytes this process may still use: the machine's available memory (``psutil``), at most what the
    address-space limit (``ulimit -v``) and the cgroup (a container's memory limit) leave."""
    available = int(psutil.virtual_memory().available)
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            available = min(available, int(soft) - int(psutil.Process().memory_info().vms))
    except (ImportError, OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(0, available)


def _positive(value: object, name: str, unit: float) -> int | float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{name}={value}: expected a positive number")
    return int(number * unit) if unit > 1 else number


@dataclass(frozen=True)
class Estimate:
    """Expected peak memory of one segmentation, and what it is made of.

    Attributes:
        bytes: the estimated peak. cost: the kind's coefficients. input_shape: (H, W) of the input.
        working_shape: (H, W) at the model's pixel size (what the network sees, window by window).
        views: TTA views per window. factor: model pixels per input pixel (1.0: not resampled).
    """

    bytes: int
    cost: MemoryCost
    input_shape: tuple[int, int]
    working_shape: tuple[int, int]
    views: int
    factor: float

    @property
    def per_work_pixel(self) -> int:
        return self.cost.work_bytes_per_pixel + (self.cost.tta_bytes_per_pixel if self.views > 1 else 0)

    def max_working_pixels(self, budget: Budget) -> int:
        """The most pixels at the model's pixel size that fit ``budget`` (this input resampled)."""
        inputs = (
            math.prod(self.input_shape) * self.cost.input_bytes_per_pixel if self.factor != 1.0 else 0
        )
        return max(0, (budget.bytes - self.cost.base_bytes - inputs) // self.per_work_pixel)


def estimate(cost: MemoryCost, plan: Plan, shape: tuple[int, ...]) -> Estimate:
    """The peak memory of running ``plan`` on an input of ``shape`` (H, W[, C]) with a kind of ``cost``."""
    inp = (int(shape[0]), int(shape[1]))
    work = (int(plan.working_shape[0]), int(plan.working_shape[1]))
    per_px = cost.work_bytes_per_pixel + (cost.tta_bytes_per_pixel if plan.views > 1 else 0)
    total = cost.base_bytes + per_px * math.prod(work)
    if plan.factor != 1.0:
        total += cost.input_bytes_per_pixel * math.prod(inp)
    return Estimate(int(total), cost, inp, work, plan.views, plan.factor)


def estimate_config(cfg: Any, shape: tuple[int, ...], mpp: float | None, tta: bool) -> Estimate:
    """:func:`estimate` for a model's config, without loading the network (the dashboard's page does this
    before it starts a worker): the working shape from ``cfg.data_mpp``, one window."""
    f = model_factor(mpp, float(cfg.data_mpp))
    plan = Plan(scaled_shape(shape, f), 1, 8 if tta else 1, f)
    return estimate(cfg.kind.memory_cost(cfg), plan, shape)


def estimate_segmenter(segmenter: Any, shape: tuple[int, ...], mpp: float | None) -> Estimate | None:
    """:func:`estimate` from a loaded segmenter's own plan; None for a stand-in without a plan or a kind."""
    cfg: Any = getattr(segmenter, "cfg", None)
    if not callable(getattr(segmenter, "plan", None)) or not hasattr(cfg, "kind"):
        return None
    plan = segmenter.plan(shape, mpp)
    return estimate(cfg.kind.memory_cost(cfg), plan, shape)


def check(est: Estimate, budget: Budget, what: str, mpp: float | None, data_mpp: float) -> None:
    """Raise ImageError (one line naming ``what``, saying what would fit) when ``est`` is over ``budget``."""
    if est.bytes <= budget.bytes:
        return
    (h, w), (wh, ww) = est.input_shape, est.working_shape
    at = f"{ww}×{wh} px at the model's {data_mpp:g} µm/px" if est.factor != 1.0 else f"{w}×{h} px"
    head = f"{what}: {at}" + (f" (input {w}×{h} px at {mpp:g} µm/px)" if est.factor != 1.0 else "")
    need = f"needs about {_size(est.bytes)}, above the memory budget of {budget}"
    fits = est.max_working_pixels(budget)
    if fits < 64 * 64:
        raise ImageError(f"{head} {need}; the model alone needs about {_size(est.cost.base_bytes)}")
    advice = f"about {fits / 1e6:.1f} megapixels at the model's pixel size fit"
    pixel_size = mpp if mpp is not None else data_mpp
    largest = pixel_size * math.sqrt(fits / max(1, wh * ww))
    if est.factor != 1.0 and largest >= 0.01:
        advice += f" (this image at up to {largest:.2f} µm/px, or a crop of it)"
    else:
        advice += " (a crop of this image, or a larger --memory-budget)"
    raise ImageError(f"{head} {need}; {advice}")


# ------------------------------------------------------------------------------------------ training


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, words) of the memory a training on ``device`` can use: the GPU's, else the machine's RAM."""
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device.index or 0)
        return int(props.total_memory), f"the {props.name}'s {_size(props.total_memory)}"
    total = psutil.virtual_memory().total
    return int(total), f"this machine's {_size(total)} of RAM"


def check_training(cfg: Any, device: torch.device) -> None:
    """Refuse a config whose training step would not fit ``device`` by its kind's estimate
    (:meth:`~glandseg_core.registry.ModelKind.train_bytes`: kept activations of one batch; generous, so that
    every preset passes on the machine it was made for).

    Raises:
        ConfigError: one line with the settings that drive the estimate, the estimate and the memory.
    """
    need = int(cfg.kind.train_bytes(cfg))
    have, words = device_memory(device)
    if need <= have:
        return
    section = ", ".join(
        f"{cfg.model}_{k}={getattr(cfg.params, k)}" for k in ("base", "scale") if hasattr(cfg.params, k)
    )
    settings = ", ".join(
        filter(
            None,
            [
                section,
                f"train_crop_size={cfg.train_crop_size}",
                f"train_batch_size={cfg.train_batch_size}",
            ],
        )
    )
    raise ConfigError(
        f"{settings}: one training step of this {cfg.kind.title} needs about {_size(need)} of memory, more "
        f"than {words}; lower train_batch_size or train_crop_size (or the network's width)"
    )
