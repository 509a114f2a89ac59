"""One slide window -> its glands as box-cropped :class:`segment.instances.Instances` in window coordinates.

Both models give instances, so windows are stitched the same way (``stitch.py``):

* Mask R-CNN: :func:`segment.native.maskrcnn_instances` runs the network on the whole window at the scale the
  model was trained at (windows larger than a GlaS image are not shrunk to GlaS size); then the window is painted
  on its own (:func:`instances.survivors`), as the untiled pipeline paints an image.
* U-Net: the window's label map (probabilities and watershed on the whole window, no inner tiling) becomes one
  instance per label (:func:`labels_to_instances`), scored by its mean gland probability.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi

from ..segment import Instances, Segmenter
from ..segment.base import check_image
from ..segment.instances import survivors
from ..segment.native import maskrcnn_instances


def window_instances(segmenter: Segmenter, image: np.ndarray) -> Instances:
    """The glands of one window, as the segmenter would find them in an image of that size.

    Args:
        segmenter: a U-Net or Mask R-CNN segmenter.
        image: uint8[h, w, 3] RGB window at the model's pixel size.

    Returns:
        Non-overlapping instances in window coordinates (``cut`` all False; ``stitch`` sets it).
    """
    check_image(image)
    shape = image.shape[:2]
    if segmenter.kind == "maskrcnn":
        inst = segmenter.raw(image) if segmenter.tta else maskrcnn_instances(segmenter, image)
        return survivors(inst, segmenter.post, shape)
    whole = _untiled(segmenter, max(shape))
    prob = whole.raw(image)
    return labels_to_instances(whole.labels(prob), prob[0])


def _untiled(segmenter: Segmenter, side: int) -> Segmenter:
    """The segmenter with its own tiling off up to ``side`` pixels (a window is already a tile)."""
    if dataclasses.is_dataclass(segmenter) and segmenter.tiling.tile_above < side:
        return dataclasses.replace(
            segmenter, tiling=dataclasses.replace(segmenter.tiling, tile_above=side)
        )
    return segmenter


def labels_to_instances(labels: np.ndarray, score_map: np.ndarray | None = None) -> Instances:
    """Box-cropped instances of a label map.

    Args:
        labels: int[H, W], 0=background, 1..N glands (ids need not be consecutive).
        score_map: float[H, W]; each instance's score is its mean over the gland (1.0 when None).

    Returns:
        One instance per id, in id order, ``cut`` all False.
    """
    boxes, masks, scores = [], [], []
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        m = labels[box] == k
        boxes.append([box[0].start, box[1].start, box[0].stop, box[1].stop])
        masks.append(m)
        scores.append(1.0 if score_map is None else float(score_map[box][m].mean()))
    if not masks:
        return Instances.empty()
    return Instances(
        np.asarray(scores, np.float32), np.asarray(boxes, np.int64), masks, np.zeros(len(masks), bool)
    )
