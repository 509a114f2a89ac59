"""What every segmenter offers: image -> raw output -> label map, in one direction.

A segmenter is built by :func:`segment.load_segmenter` (from a model folder) or :func:`segment.make_segmenter`
(from a network in memory). ``segmenter(image)`` is ``segmenter.labels(segmenter.raw(image))``: ``raw`` runs the
network (with test-time augmentation and tiling when asked for) and ``labels`` post-processes its output with
thresholds that may be swapped, e.g. while tuning them on ``val``.

Label maps are int32[H, W] of the input image's shape: 0=background, 1..N glands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..config import RunConfig
from ..thresholds import Post
from .tiling import Tiling


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

    def raw(self, image: np.ndarray) -> Any:
        """The network's output for uint8[H, W, 3] RGB, at the image's size."""
        ...

    def labels(self, raw: Any, post: Post | None = None) -> np.ndarray:
        """int32[H, W] label map (0=background, 1..N glands) of a raw output; ``post`` overrides the thresholds."""
        ...

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """int32[H, W] label map of uint8[H, W, 3] RGB (0=background, 1..N glands)."""
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
