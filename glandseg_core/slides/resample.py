"""Segment a plain image at the model's pixel size, and give the label map back at the image's size.

An image scanned at 40x (0.25 µm/px) or resized shows glands at another size than the GlaS images the models
learnt (20x, 0.62 µm/px, ``cfg.data_mpp``): the image is resampled to the model's pixel size, segmented, and
its label map is brought back with nearest-neighbour sampling (ids unchanged, no blended ids).

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from skimage.segmentation import relabel_sequential

from ..segment import Segmenter
from ..segment.base import check_image
from .reader import SAME_MPP


def segment_at_mpp(segmenter: Segmenter, image: np.ndarray, mpp: float) -> np.ndarray:
    """Label map of ``image`` (pixel size ``mpp`` µm) segmented at the model's pixel size.

    Args:
        segmenter: any segmenter; its ``cfg.data_mpp`` is the pixel size it was trained at.
        image: uint8[H, W, 3] RGB. mpp: its micrometres per pixel (> 0).

    Returns:
        int32[H, W] at the input's size: 0=background, 1..N glands (ids consecutive: a gland too small to
        survive the way back is dropped).

    Raises:
        ValueError: ``mpp`` not positive and finite, or ``image`` not uint8[H, W, 3].
    """
    check_image(image)
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp}")
    f = mpp / float(segmenter.cfg.data_mpp)  # model pixels per input pixel
    if abs(f - 1.0) <= SAME_MPP:
        return segmenter(image)
    h, w = image.shape[:2]
    size = (max(8, round(w * f)), max(8, round(h * f)))
    small = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))
    labels = segmenter(small).astype(np.int32)
    back = np.array(Image.fromarray(labels).resize((w, h), Image.NEAREST), dtype=np.int32)
    return relabel_sequential(back)[0].astype(np.int32, copy=False)
