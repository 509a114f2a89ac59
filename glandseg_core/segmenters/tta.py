"""Test-time augmentation (TTA): wrappers that run any segmenter's forward pass on flipped and rotated views.

Views are the identity, the horizontal flip, and both turned by 90, 180 and 270 degrees (:data:`VIEWS_8`), or
the 4 flips (:data:`VIEWS_4`). This module never imports a segmenter (they import it).

* Dense outputs (the U-Net's probabilities): :func:`mean_of_views` averages the forward pass over the views,
  each mapped back to the image.
* Instances (Mask R-CNN): :func:`merged_views` maps every detected mask back to the image and groups the
  detections of the views into glands by mask IoU. Each gland's mask is the mean of its views' masks (views that
  missed it count as zeros, so a gland found by few views fades below the mask threshold) and its score is the
  mean score of the views that found it.

Measured on trained models with ``glandseg tta --model trained_models/X --out DIR`` (without and with TTA, side
by side) or ``glandseg evaluate --model trained_models/X --split val --tta``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..thresholds import MaskRCNNPost
from .instances import mask_boxes, mask_iou

Outputs = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # image -> (scores[N], masks[N, H, W])

VIEWS_8 = ((False, 0), (True, 0), (False, 1), (True, 1), (False, 2), (True, 2), (False, 3), (True, 3))
VIEWS_4 = (
    (False, 0),
    (True, 0),
    (False, 2),
    (True, 2),
)  # identity, h-flip, 180 degrees (= both flips), v-flip

MATCH_IOU = 0.5  # detections of two views are the same gland above this mask IoU


def view_image(image: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """The augmented view: horizontal flip (if ``flip``), then ``k`` counter-clockwise quarter turns."""
    return np.ascontiguousarray(np.rot90(image[:, ::-1] if flip else image, k))


def unview(
    box: np.ndarray, crop: np.ndarray, flip: bool, k: int, view_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Map a box-cropped mask from view coordinates back to the image's (the inverse of :func:`view_image`).

    How it works: one clockwise quarter turn of an (h, w) array moves pixel (r, c) to (c, h - 1 - r), so box
    rows [y0, y1) and columns [x0, x1) become rows [x0, x1) and columns [h - y1, h - y0); a horizontal flip of
    width w maps columns [x0, x1) to [w - x1, w - x0).

    Args:
        box: (y0, x0, y1, x1), end-exclusive, in the view. crop: the mask inside the box.
        view_shape: (h, w) of the view.

    Returns:
        (box, crop) in image coordinates.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = view_shape
    for _ in range(k % 4):
        y0, x0, y1, x1 = x0, h - y1, x1, h - y0
        h, w = w, h
    crop = np.rot90(crop, -k)
    if flip:
        x0, x1 = w - x1, w - x0
        crop = crop[:, ::-1]
    return np.array([y0, x0, y1, x1], np.int64), np.ascontiguousarray(crop)


def mean_of_views(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    views: Sequence[tuple[bool, int]] = VIEWS_8,
) -> torch.Tensor:
    """The mean of a dense forward pass over flipped and rotated views, each mapped back to the input.

    Args:
        forward: maps float32[1, C, h, w] to float32[1, K, h, w] (any h, w; rotated views swap them).
        x: float32[1, C, H, W].

    Returns:
        float32[1, K, H, W].
    """
    acc: torch.Tensor | None = None
    for flip, k in views:
        xt = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
        pt = torch.rot90(forward(xt), -k, dims=(-2, -1))
        pt = pt.flip(-1) if flip else pt
        acc = pt if acc is None else acc.add_(pt)
    assert acc is not None, "no views"
    return acc.div_(len(views))


def _detections(
    outputs: Outputs, image: np.ndarray, views: Sequence[tuple[bool, int]], mask_thresh: float
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Every view's detections with a mask above ``mask_thresh``: scores float32[N], boxes int64[N, 4] and
    float mask crops in image coordinates, and the index of the view of each."""
    scores, boxes, crops, view_ids = [], [], [], []
    for v, (flip, k) in enumerate(views):
        s, m = outputs(view_image(image, flip, k))
        keep = np.flatnonzero(m.max(axis=(1, 2), initial=0.0) > mask_thresh)
        if len(keep):
            m = m[keep]
            for b, mask in zip(
                mask_boxes(m > 0), m, strict=True
            ):  # pasted masks are exactly 0 outside their box
                box, crop = unview(b, mask[b[0] : b[2], b[1] : b[3]], flip, k, m.shape[1:])
                boxes.append(box)
                crops.append(crop)
            scores.append(s[keep])
            view_ids.append(np.full(len(keep), v))
        del s, m
    if not crops:
        return np.zeros(0, np.float32), np.zeros((0, 4), np.int64), [], np.zeros(0, np.int64)
    return np.concatenate(scores).astype(np.float32), np.stack(boxes), crops, np.concatenate(view_ids)


def cluster(
    scores: np.ndarray, view_ids: np.ndarray, iou: np.ndarray, n_views: int, thresh: float = MATCH_IOU
) -> np.ndarray:
    """Group detections into glands: by decreasing score, each joins the cluster whose seed (its best-scoring
    member) it overlaps most with IoU > ``thresh``, unless that cluster already holds a detection of its view.

    Returns:
        int64[N] cluster index of each detection (0..C-1, in order of the seeds' scores).
    """
    out = np.full(len(scores), -1, np.int64)
    seeds: list[int] = []
    has_view = np.zeros((0, n_views), bool)
    for d in np.argsort(-scores, kind="stable"):
        if seeds:
            ious = iou[d, seeds]
            ok = (ious > thresh) & ~has_view[:, view_ids[d]]
            if ok.any():
                c = int(np.argmax(np.where(ok, ious, -1.0)))
                out[d] = c
                has_view[c, view_ids[d]] = True
                continue
        out[d] = len(seeds)
        seeds.append(int(d))
        has_view = np.vstack([has_view, np.eye(1, n_views, int(view_ids[d]), dtype=bool)])
    return out


def merged_views(
    outputs: Outputs,
    image: np.ndarray,
    post: MaskRCNNPost,
    views: Sequence[tuple[bool, int]] = VIEWS_8,
    min_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask R-CNN detections merged over flipped and rotated views of the image.

    Args:
        outputs: the detector: uint8[h, w, 3] -> (scores float32[N], mask probabilities float32[N, h, w]).
        image: uint8[H, W, 3] RGB.
        post: its thresholds (``mask_thresh``; ``score_thresh`` is the default ``min_score``).
        views: (flip, quarter turns) pairs, :data:`VIEWS_8` (default) or :data:`VIEWS_4`.
        min_score: glands scoring below this are left out (default ``post.score_thresh``: painting would
            skip them anyway); pass 0 to keep every gland, e.g. to tune thresholds.

    Returns:
        scores float32[N] (mean over the views that found the gland, decreasing), masks float32[N, H, W]
        (mean over all views, missed views counting as 0). Glands whose mean mask never exceeds the mask
        threshold (``post.mask_thresh``) are left out. A loaded Mask R-CNN reports only detections scoring at
        least ``post.score_thresh`` (:func:`segmenters.load_segmenter`), so a view that scores a gland lower counts
        as having missed it.
    """
    min_score = post.score_thresh if min_score is None else min_score
    h, w = image.shape[:2]
    scores, boxes, crops, view_ids = _detections(outputs, image, views, post.mask_thresh)
    if not crops:
        return np.zeros(0, np.float32), np.zeros((0, h, w), np.float32)
    iou = mask_iou(boxes, [c > post.mask_thresh for c in crops], (h, w))
    labels = cluster(scores, view_ids, iou, len(views))
    n = int(labels.max()) + 1
    mean_score = (
        np.bincount(labels, weights=scores, minlength=n) / np.bincount(labels, minlength=n)
    ).astype(np.float32)
    keep = [c for c in np.argsort(-mean_score, kind="stable") if mean_score[c] >= min_score]
    masks = np.zeros((len(keep), h, w), np.float32)
    for out_i, c in enumerate(keep):
        for d in np.flatnonzero(labels == c):
            y0, x0, y1, x1 = boxes[d]
            masks[out_i, y0:y1, x0:x1] += crops[d]
    masks /= len(views)
    visible = masks.max(axis=(1, 2), initial=0.0) > post.mask_thresh
    return mean_score[keep][visible], masks[visible]
