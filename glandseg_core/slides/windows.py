"""One slide window -> its glands as box-cropped :class:`segment.instances.Instances` in window coordinates.

Both models give instances, so windows are stitched the same way (``stitch.py``):

* Mask R-CNN: :func:`maskrcnn_instances` runs the network on the whole window at the scale the model was trained
  at (windows larger than a GlaS image are not shrunk to GlaS size), pasting each detection's 28x28 mask into its
  own box only (torchvision would paste every mask into a full-window array: N x window bytes); then the window
  is painted on its own (:func:`instances.survivors`), as the untiled pipeline paints an image.
* U-Net: the window's label map (probabilities and watershed on the whole window, no inner tiling) becomes one
  instance per label (:func:`labels_to_instances`), scored by its mean gland probability.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import resize_boxes

from ..segment import Instances, Segmenter
from ..segment.base import check_image, to_tensor
from ..segment.instances import mask_boxes, survivors
from ..segment.tiling import MASKRCNN_TILE


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


@contextmanager
def _native_scale(model: torch.nn.Module, shape: tuple[int, int], scale: float) -> Iterator[None]:
    """Set the detector to resize an image of ``shape`` by ``scale`` (the training images' factor) and to keep
    as many proposals and detections per pixel as on a GlaS image; restored on exit."""
    t, rpn, heads = model.transform, model.rpn, model.roi_heads
    saved = (
        t.min_size,
        t.max_size,
        dict(rpn._pre_nms_top_n),
        dict(rpn._post_nms_top_n),
        heads.detections_per_img,
    )
    area = max(1.0, shape[0] * shape[1] / (MASKRCNN_TILE[0] * MASKRCNN_TILE[1]))
    try:
        t.min_size, t.max_size = (min(shape) * scale,), max(shape) * scale
        for d in (rpn._pre_nms_top_n, rpn._post_nms_top_n):
            d["testing"] = math.ceil(d["testing"] * area)
        heads.detections_per_img = math.ceil(heads.detections_per_img * area)
        yield
    finally:
        t.min_size, t.max_size, rpn._pre_nms_top_n, rpn._post_nms_top_n, heads.detections_per_img = saved


def maskrcnn_instances(segmenter: Segmenter, image: np.ndarray) -> Instances:
    """Mask R-CNN detections of a window of any size, at the scale its training images were resized by.

    How it works: torchvision resizes a GlaS image (522x775) by ``s = min(min_size / 522, max_size / 775)``;
    a window is resized by the same ``s`` (not fitted into ``min_size``), with proposal and detection caps
    grown with its area. Each 28x28 mask is pasted into its own box exactly as torchvision's
    ``paste_masks_in_image`` does (padding 1, bilinear), thresholded and cropped to its pixels.

    Returns:
        Detections scoring at least ``post.score_thresh`` with a non-empty mask, as box-cropped instances.
    """
    model, cfg, post = segmenter.model, segmenter.cfg, segmenter.post
    h, w = image.shape[:2]
    scale = min(cfg.maskrcnn_min_size / MASKRCNN_TILE[0], cfg.maskrcnn_max_size / MASKRCNN_TILE[1])
    x = to_tensor(image).to(segmenter.device)[0]
    with torch.inference_mode(), _native_scale(model, (h, w), scale):
        images, _ = model.transform([x])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        det = model.roi_heads(features, proposals, images.image_sizes)[0][0]
        boxes = resize_boxes(det["boxes"], images.image_sizes[0], [h, w])
        keep = det["scores"] >= post.score_thresh
        masks, pad = expand_masks(det["masks"][keep].float(), padding=1)
        boxes = expand_boxes(boxes[keep], pad).to(torch.int64).tolist()
        scores = det["scores"][keep].float().cpu().numpy()
        crops, out_boxes, out_scores = [], [], []
        for m, (x0, y0, x1, y1), s in zip(masks, boxes, scores):
            bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
            full = F.interpolate(m[None], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            binary = (full[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > post.mask_thresh).cpu().numpy()
            if not binary.any():
                continue
            a, c, b, d = mask_boxes(binary[None])[0]
            crops.append(np.ascontiguousarray(binary[a:b, c:d]))
            out_boxes.append([cy0 + a, cx0 + c, cy0 + b, cx0 + d])
            out_scores.append(s)
    if not crops:
        return dataclasses.replace(Instances.empty(), shape=(h, w))
    return Instances(
        np.asarray(out_scores, np.float32),
        np.asarray(out_boxes, np.int64),
        crops,
        np.zeros(len(crops), bool),
        (h, w),
    )
