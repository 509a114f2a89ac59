"""Mask R-CNN instances kept compactly, and the one painter that turns them into a label map.

An :class:`Instances` holds N detections, each mask cropped to its bounding box (never a full-image mask), so
many windows' or views' detections fit in memory. :func:`paint` is the only place where instances become a
label map (int32[H, W]: 0=background, 1..N glands): by decreasing score, a pixel goes to the first instance
claiming it, and an instance left with too little of its own mask is dropped. Window painting
(:func:`survivors`), window merging (``views.py``) and view clustering (:func:`mask_iou`) work on the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

from ..thresholds import MaskRCNNPost

CUT_MARGIN = (
    8  # a mask within this many pixels of an inner window border counts as cut by it (Mask R-CNN
)
# masks of a gland running off a window often stop a few pixels short of its edge)


@dataclass
class Instances:
    """Mask R-CNN detections kept compactly: each mask is cropped to its box.

    Attributes:
        scores: float32[N]. boxes: int64[N, 4] as (y0, x0, y1, x1), end-exclusive, in image pixels.
        masks: N bool arrays, ``masks[i].shape == (y1 - y0, x1 - x0)`` (the thresholded mask inside its box).
        cut: bool[N], True when the mask touches a border between windows (the gland may extend beyond it).
        shape: (H, W) of the image they were found in, when known (a segmenter's ``raw`` sets it).
    """

    scores: np.ndarray
    boxes: np.ndarray
    masks: list[np.ndarray]
    cut: np.ndarray
    shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.masks)

    @staticmethod
    def empty() -> Instances:
        return Instances(np.zeros(0, np.float32), np.zeros((0, 4), np.int64), [], np.zeros(0, bool))


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Bounding boxes of the non-zero pixels of masks[N, H, W] (each non-empty).

    Returns:
        int64[N, 4] as (y0, x0, y1, x1), end-exclusive.
    """
    rows, cols = cast(np.ndarray, masks.any(axis=2)), cast(np.ndarray, masks.any(axis=1))
    y0, y1 = rows.argmax(axis=1), rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    return np.stack([y0, x0, y1, x1], axis=1).astype(np.int64).reshape(-1, 4)


def compact(scores: np.ndarray, masks: np.ndarray, post: MaskRCNNPost) -> Instances:
    """Keep the detections that painting could use (score >= ``post.score_thresh``, a non-empty mask above
    ``post.mask_thresh``), each thresholded and cropped to its mask's bounding box.

    Args:
        scores: float[N]. masks: float[N, H, W] mask probabilities.
    """
    keep = np.flatnonzero(scores >= post.score_thresh)
    binary = (masks if keep.size == len(masks) else masks[keep]) > post.mask_thresh
    ok = binary.any(axis=(1, 2))
    keep, binary = keep[ok], binary[ok]
    boxes = mask_boxes(binary)
    crops = [np.ascontiguousarray(m[a:b, c:d]) for m, (a, c, b, d) in zip(binary, boxes, strict=True)]
    return Instances(scores[keep].astype(np.float32), boxes, crops, np.zeros(len(crops), bool))


def shift(inst: Instances, rows: slice, cols: slice, shape: tuple[int, int]) -> Instances:
    """Move a window's instances to image coordinates and flag those touching an inner window border."""
    h, w = shape
    th, tw = rows.stop - rows.start, cols.stop - cols.start
    b = inst.boxes
    cut = (
        ((b[:, 0] < CUT_MARGIN) & (rows.start > 0))
        | ((b[:, 2] > th - CUT_MARGIN) & (rows.stop < h))
        | ((b[:, 1] < CUT_MARGIN) & (cols.start > 0))
        | ((b[:, 3] > tw - CUT_MARGIN) & (cols.stop < w))
    )
    boxes = b + np.array([rows.start, cols.start, rows.start, cols.start], np.int64)
    return Instances(inst.scores, boxes, inst.masks, cut)


def concat(parts: list[Instances]) -> Instances:
    if not parts:
        return Instances.empty()
    return Instances(
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.boxes for p in parts]),
        [m for p in parts for m in p.masks],
        np.concatenate([p.cut for p in parts]),
    )


def paint(inst: Instances, post: MaskRCNNPost, shape: tuple[int, int]) -> np.ndarray:
    """Paint box-cropped instances into a label map exactly as the untiled pipeline does:
    by decreasing score, a pixel goes to the first instance claiming it, and an instance keeping fewer than
    ``post.min_area`` pixels or less than ``post.min_visible`` of its mask is dropped.

    Returns:
        int32[H, W] label map, 0=background, 1..N glands, ids in order of decreasing score.
    """
    return _paint(inst, post, shape)[0]


def _paint(inst: Instances, post: MaskRCNNPost, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`paint`, also returning the indices of the painted instances (in painting order)."""
    labels = np.zeros(shape, dtype=np.int32)
    painted = []
    for i in np.argsort(-inst.scores, kind="stable"):
        if inst.scores[i] < post.score_thresh:
            break
        y0, x0, y1, x1 = (int(v) for v in inst.boxes[i])
        m = inst.masks[i]
        area = int(np.count_nonzero(m))
        if area == 0:
            continue
        region = labels[y0:y1, x0:x1]
        free = m & (region == 0)
        n_free = int(np.count_nonzero(free))
        if n_free < post.min_area or n_free < post.min_visible * area:
            continue
        painted.append(i)
        region[free] = len(painted)
    return labels, np.asarray(painted, np.int64)


def survivors(inst: Instances, post: MaskRCNNPost, shape: tuple[int, int]) -> Instances:
    """The instances that painting keeps within one window (with their whole masks, not only what they won).

    Each window is first painted on its own, as the untiled pipeline paints a GlaS-sized image, so that
    overlapping low-value detections never reach the merge. This bounds memory: a survivor owns at least
    ``post.min_visible`` of its mask, so a window's survivors hold at most ``window pixels / min_visible``
    mask pixels in all.
    """
    kept = np.sort(_paint(inst, post, shape)[1])
    return Instances(inst.scores[kept], inst.boxes[kept], [inst.masks[i] for i in kept], inst.cut[kept])


def masks_to_labels(
    scores: np.ndarray, masks: np.ndarray, post: MaskRCNNPost, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Paint full-size Mask R-CNN mask probabilities into one label map (:func:`compact`, then :func:`paint`).

    Args:
        scores: float[N] detection scores.
        masks: float[N, H, W] (or [N, 1, H, W]) mask probabilities at image size.
        post: thresholds.
        shape: (H, W) of the output when ``N == 0``.

    Returns:
        int32[H, W] label map, 0=background, 1..N glands, ids in order of decreasing score.
    """
    if masks.ndim == 4:
        masks = masks[:, 0]
    if shape is None:
        shape = masks.shape[1:]
    return paint(compact(scores, masks, post), post, shape)


def mask_iou(boxes: np.ndarray, masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pairwise IoU of N box-cropped binary masks in an image of ``shape``.

    How it works: the masks become the rows of a sparse N x (H*W) 0/1 matrix B; ``B @ B.T`` holds every pairwise
    intersection (its diagonal the areas) at a cost proportional to the overlapping pixels, not N^2 * H * W.

    Returns:
        float64[N, N].
    """
    n, w = len(masks), shape[1]
    if n == 0:
        return np.zeros((0, 0))
    rows, cols = [], []
    for i, (b, m) in enumerate(zip(boxes, masks, strict=True)):
        yy, xx = np.nonzero(m)
        rows.append(np.full(yy.size, i, np.int64))
        cols.append((yy + b[0]) * w + (xx + b[1]))
    r, c = np.concatenate(rows), np.concatenate(cols)
    mat = sparse.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n, shape[0] * w))
    inter = (mat @ mat.T).toarray().astype(np.float64)
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def labels_to_instances(labels: np.ndarray, score_map: np.ndarray | None = None) -> Instances:
    """Box-cropped instances of a label map (a U-Net's slide window becomes instances this way).

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
