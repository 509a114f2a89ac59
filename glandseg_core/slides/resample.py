"""Segment a plain image at the model's pixel size, and give the label map back at the image's size.

One implementation, in ``segmenters/scale.py``: a segmenter's own call does the same (``segmenter(image, mpp=...)``);
:func:`segment_at_mpp` serves any callable segmenter with a ``cfg.data_mpp`` (stand-ins included).

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import numpy as np

from ..segmenters import Segmenter
from ..segmenters.scale import at_model_scale


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
    if mpp is None:
        raise ValueError("mpp must be a positive number of micrometres per pixel, got None")
    return at_model_scale(segmenter, image, mpp, float(segmenter.cfg.data_mpp))
