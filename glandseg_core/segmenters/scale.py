"""Pixel size belongs to the call: bring an image to the model's µm/px, segment it, give labels back at its size.

An image scanned at 40x (0.25 µm/px) or resized shows glands at another size than the GlaS images the models
learnt (20x, 0.62 µm/px, ``cfg.data_mpp``): :func:`at_model_scale` resamples it to the model's pixel size
(antialiased bilinear), segments it, and brings the label map back with nearest-neighbour sampling (ids
unchanged, no blended ids). ``mpp=None`` means "already at the model's scale". Every segmenter's
``__call__(image, mpp=...)`` and ``slides.segment_at_mpp`` go through here; :func:`working_shape` is the size
the segmenter then sees (its :meth:`~segmenters.base.Segmenter.plan` starts from it).

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image
from skimage.segmentation import relabel_sequential

from .base import check_image

SAME_MPP = 0.02  # a pixel size within 2% of the model's is used as it is (no resampling)
MIN_SIDE = 8  # a resampled image is at least this many pixels a side


def model_factor(mpp: float | None, data_mpp: float) -> float:
    """Model pixels per input pixel for an image of ``mpp`` µm/px (1.0 for None or within :data:`SAME_MPP`).

    Raises:
        ValueError: ``mpp`` given but not positive and finite.
    """
    if mpp is None:
        return 1.0
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp}")
    f = mpp / float(data_mpp)
    return 1.0 if abs(f - 1.0) <= SAME_MPP else f


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` (H, W[, C]) resampled by ``factor`` (unchanged for 1.0)."""
    if factor == 1.0:
        return int(shape[0]), int(shape[1])
    return max(MIN_SIDE, round(shape[0] * factor)), max(MIN_SIDE, round(shape[1] * factor))


def working_shape(shape: tuple[int, ...], mpp: float | None, data_mpp: float) -> tuple[int, int]:
    """(H, W) a segmenter sees for an image of ``shape`` (H, W[, C]) at ``mpp`` µm/px (None: as it is)."""
    return scaled_shape(shape, model_factor(mpp, data_mpp))


def at_model_scale(
    segment: Callable[[np.ndarray], np.ndarray], image: np.ndarray, mpp: float | None, data_mpp: float
) -> np.ndarray:
    """Label map of ``image`` (pixel size ``mpp`` µm) segmented at the model's pixel size ``data_mpp``.

    Args:
        segment: uint8[h, w, 3] at the model's pixel size -> int32[h, w] label map.
        image: uint8[H, W, 3] RGB. mpp: its micrometres per pixel (> 0), or None: already at ``data_mpp``.
        data_mpp: the model's pixel size (``cfg.data_mpp``).

    Returns:
        int32[H, W] at the input's size: 0=background, 1..N glands. When resampled, ids are consecutive (a
        gland too small to survive the way back is dropped).

    Raises:
        ValueError: ``mpp`` not positive and finite, or ``image`` not uint8[H, W, 3].
    """
    check_image(image)
    f = model_factor(mpp, data_mpp)
    if f == 1.0:
        return segment(image)
    h, w = image.shape[:2]
    sh, sw = scaled_shape(image.shape, f)
    small = np.array(Image.fromarray(image).resize((sw, sh), Image.Resampling.BILINEAR))
    labels = np.asarray(segment(small), dtype=np.int32)
    del small
    back = np.array(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST), dtype=np.int32)
    del labels
    return relabel_sequential(back)[0].astype(np.int32, copy=False)
