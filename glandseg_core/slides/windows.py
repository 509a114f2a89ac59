"""One slide window -> its glands as box-cropped :class:`segmenters.instances.Instances` in window coordinates.

Each segmenter class knows how it segments a window (``window_instances``) and what that runs
(``window_plan``); both models give instances, so windows are stitched the same way (``stitch.py``):

* Mask R-CNN: the whole window at the scale the model was trained at (:func:`segmenters.native.maskrcnn_instances`:
  windows larger than a GlaS image are not shrunk to GlaS size), painted on its own (:func:`instances.survivors`),
  as the untiled pipeline paints an image.
* U-Net: the window's label map (probabilities and watershed on the whole window, no inner tiling) becomes one
  instance per label (:func:`segmenters.instances.labels_to_instances`), scored by its mean gland probability.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import numpy as np

from ..progress import ProgressFn
from ..segmenters.base import WindowSegmenter, check_image
from ..segmenters.instances import Instances, labels_to_instances

__all__ = ["labels_to_instances", "window_instances"]


def window_instances(
    segmenter: WindowSegmenter, image: np.ndarray, progress: ProgressFn | None = None
) -> Instances:
    """The glands of one window, as the segmenter would find them in an image of that size.

    Args:
        segmenter: a segmenter with ``window_instances`` (the U-Net and Mask R-CNN segmenters).
        image: uint8[h, w, 3] RGB window at the model's pixel size.
        progress: gets the segmenter's ``segment`` steps (``total = segmenter.window_plan(shape).passes``).

    Returns:
        Non-overlapping instances in window coordinates (``cut`` all False; ``stitch`` sets it).
    """
    check_image(image)
    return segmenter.window_instances(image, progress)
