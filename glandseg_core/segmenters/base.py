"""What every segmenter offers: image -> raw output -> label map, in one direction.

A segmenter is built by :func:`segmenters.load_segmenter` (from a model folder) or :func:`segmenters.make_segmenter`
(from a network in memory). ``segmenter(image)`` is ``segmenter.labels(segmenter.raw(image))``: ``raw`` runs the
network (with test-time augmentation and tiling when asked for) and ``labels`` post-processes its output with
thresholds that may be swapped, e.g. while tuning them on ``val``.

A segmenter owns its plan and reports progress (StarDist's ``predict_instances(..., show_tile_progress=)``):
``plan(shape, mpp)`` says how many windows and views a call will run, before it runs; ``raw(image, progress=)``
reports a :class:`~glandseg_core.progress.Step` (phase ``segment``, unit ``passes``, ``total = plan.passes``,
``detail = {"windows", "views"}``) before the first and after each forward pass. Pixel size belongs to the call:
``segmenter(image, mpp=0.31)`` brings the image to the model's scale (``cfg.data_mpp``, ``scale.py``) and returns
labels at the input's size; ``mpp=None`` means "already at the model's scale".

Label maps are int32[H, W] of the input image's shape: 0=background, 1..N glands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..config import RunConfig
from ..progress import Counter, ProgressFn
from ..thresholds import Post
from .instances import Instances
from .tiling import Tiling


@dataclass(frozen=True)
class Plan:
    """What one segmentation call will run, known before it runs.

    Attributes:
        working_shape: (H, W) of the image at the model's pixel size (what ``raw`` is given; the input's own
            size when no ``mpp`` or the model's own).
        windows: windows the image is cut into (1: the whole image at once).
        views: test-time augmentation views of each window (1 without TTA).
        factor: model pixels per input pixel (1.0: no resampling).
    """

    working_shape: tuple[int, int]
    windows: int
    views: int
    factor: float = 1.0

    @property
    def passes(self) -> int:
        """Forward passes of the network: windows x views."""
        return self.windows * self.views

    def counter(self, progress: ProgressFn | None) -> Counter:
        """A :class:`~glandseg_core.progress.Counter` of this plan's passes (phase ``segment``)."""
        detail: dict[str, object] = {"windows": self.windows, "views": self.views}
        return Counter(progress, "segment", self.passes, "passes", detail)


@runtime_checkable
class Segmenter(Protocol):
    """A loaded model that segments glands.

    Attributes:
        kind: ``"unet"`` or ``"maskrcnn"``.
        model: the network (eval mode). cfg: its config. post: its post-processing thresholds.
        device: where it runs. path: the folder it came from (None when built in memory).
        tta: whether ``raw`` averages flipped and rotated views. tiling: when and how large images are windowed.
    """

    kind: str
    model: torch.nn.Module
    cfg: RunConfig
    post: Post
    device: torch.device
    path: Path | None
    tta: bool
    tiling: Tiling

    def plan(self, shape: tuple[int, ...], mpp: float | None = None) -> Plan:
        """The windows and views ``self(image, mpp=mpp)`` runs for an image of ``shape`` (H, W[, C])."""
        ...

    def raw(self, image: np.ndarray, progress: ProgressFn | None = None) -> Any:
        """The network's output for uint8[H, W, 3] RGB at the model's scale, at the image's size; ``progress``
        gets a ``segment`` step before the first and after each forward pass (``total = plan.passes``)."""
        ...

    def labels(self, raw: Any, post: Post | None = None) -> np.ndarray:
        """int32[H, W] label map (0=background, 1..N glands) of a raw output; ``post`` overrides the thresholds."""
        ...

    def __call__(
        self, image: np.ndarray, mpp: float | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """int32[H, W] label map of uint8[H, W, 3] RGB (0=background, 1..N glands) of pixel size ``mpp`` µm
        (None: already at the model's scale), at the image's size."""
        ...


@runtime_checkable
class WindowSegmenter(Segmenter, Protocol):
    """A segmenter that segments slide windows (``slides/``): each window whole, painted on its own."""

    def window_plan(self, shape: tuple[int, ...]) -> Plan:
        """The windows and views :meth:`window_instances` runs for a window of ``shape`` (H, W[, C])."""
        ...

    def window_instances(self, image: np.ndarray, progress: ProgressFn | None = None) -> Instances:
        """The glands of uint8[h, w, 3] window at the model's pixel size, as non-overlapping instances in window
        coordinates (``cut`` all False)."""
        ...


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is uint8[H, W, 3]."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8[H, W, 3] -> float32[1, 3, H, W] in [0, 1]."""
    return (
        torch.from_numpy(np.require(image, requirements=["C", "W"]))
        .permute(2, 0, 1)
        .unsqueeze(0)
        .float()
        .div_(255.0)
    )
