"""Tiled inference for large images (whole-slide crops): bounded memory, no seams, no duplicated glands.

Images with a side above :data:`TILE_ABOVE` native pixels are cut into overlapping windows.

* U-Net: windows of :data:`UNET_TILE` pixels at the U-Net's input scale, starting on the network's pooling
  grid (:func:`aligned_spans`); the window probabilities are blended with a cosine ramp across each overlap,
  so the full probability map has no seams, and the usual post-processing (:func:`postprocess.unet_to_labels`)
  then runs once on the whole map: glands are never cut at window borders.
* Mask R-CNN: windows of :data:`MASKRCNN_TILE` native pixels (the GlaS image size, so torchvision resizes each
  window exactly as it resized the training images) overlapping by :data:`MASKRCNN_OVERLAP` (at least the
  largest gland). Each window is painted on its own first (:func:`survivors`); its surviving detections are
  kept as crops of their masks inside their boxes (never a full-image mask) and moved to image coordinates;
  duplicates across windows are merged (:func:`merge_duplicates`), and the instances are painted by score as
  :func:`postprocess.maskrcnn_to_labels` paints them.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .postprocess import MaskRCNNPost

if TYPE_CHECKING:
    from .infer import Run

TILE_ABOVE = 1024  # tile when either side of the image exceeds this many native pixels
UNET_TILE = 768  # U-Net window side, in pixels at the U-Net's input scale (cfg.unet_scale)
UNET_OVERLAP = 256  # at the U-Net's scale; with 768, tiled and whole probabilities differ by < 0.05
MASKRCNN_TILE = (522, 775)  # (height, width), native pixels: the GlaS image size the models trained on
MASKRCNN_OVERLAP = 256  # native pixels; >= the largest gland, so every gland is whole in some window
CUT_MARGIN = 2  # a mask within this many pixels of an inner window border counts as cut by it
DUP_OVERLAP = 0.5  # two masks are one gland when they share more than this part of the smaller one


def needs_tiling(shape: tuple[int, ...], limit: int | None = None) -> bool:
    """Whether an image of ``shape`` (H, W[, C]) is above the tiling threshold (default :data:`TILE_ABOVE`)."""
    limit = TILE_ABOVE if limit is None else limit
    return max(shape[0], shape[1]) > limit


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of size ``min(tile, n)`` covering ``[0, n)``, neighbours overlapping by at least
    ``overlap``; the last window ends at ``n``.

    Raises:
        ValueError: when ``overlap`` is not smaller than ``tile``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if n <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((n - tile) / stride) + 1
    return [min(i * stride, n - tile) for i in range(count)]


def tiles(shape: tuple[int, ...], tile: tuple[int, int], overlap: int) -> list[tuple[slice, slice]]:
    """Windows ``(rows, cols)`` covering an image of ``shape`` (H, W[, C]) with windows of ``tile`` (h, w)."""
    h, w = shape[0], shape[1]
    th, tw = min(tile[0], h), min(tile[1], w)
    return [
        (slice(y, y + th), slice(x, x + tw))
        for y in tile_starts(h, th, min(overlap, th - 1))
        for x in tile_starts(w, tw, min(overlap, tw - 1))
    ]


def aligned_spans(n: int, tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """Windows ``(start, end)`` covering ``[0, n)`` whose starts are multiples of ``align``, neighbours
    overlapping by at least ``overlap``; the last window runs to ``n`` (so it may be up to ``align - 1`` longer).

    A U-Net pools on a grid of ``align = 2**depth`` pixels: a window starting off that grid would see the
    image through a shifted grid and predict differently from the whole image, not only near its borders.
    """
    tile = max(align, tile - tile % align)
    if n <= tile:
        return [(0, n)]
    stride = max(align, (tile - overlap) // align * align)
    last = (n - tile) // align * align
    starts = [*range(0, last, stride), last]
    return [(s, s + tile) for s in starts[:-1]] + [(last, n)]


def ramp(size: int, start: int, n: int, overlap: int) -> np.ndarray:
    """Blending weight along one axis of a window at ``start`` (of ``size``) in an axis of length ``n``.

    How it works: a raised-cosine ramp ``0.5 - 0.5 cos(pi (i + 0.5) / overlap)`` over the first and last
    ``overlap`` pixels, on sides that border another window (image borders keep weight 1). Two mirrored ramps
    sum to 1, and the caller divides by the summed weights anyway, so uneven overlaps blend correctly too.

    Returns:
        float32[size], all values in (0, 1].
    """
    w = np.ones(size, np.float32)
    k = min(overlap, size // 2)
    if k > 0:
        r = (0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)).astype(np.float32)
        if start > 0:
            w[:k] = r
        if start + size < n:
            w[size - k :] = np.minimum(w[size - k :], r[::-1])
    return w


def unet_tiled(
    run: Run, x: torch.Tensor, tta: bool = False, tile: int | None = None, overlap: int | None = None
) -> torch.Tensor:
    """U-Net probabilities of a large input, window by window, blended without seams.

    Args:
        run: a loaded U-Net (:func:`infer.load_run`).
        x: float32[1, 3, h, w], normalised and at the U-Net's scale (:func:`infer.unet_input`).
        tta: test-time augmentation inside each window.
        tile, overlap: window side and overlap in pixels of ``x`` (default :data:`UNET_TILE`,
            :data:`UNET_OVERLAP`).

    Returns:
        float32[1, 2, h, w] gland and contour probabilities.
    """
    from .infer import unet_tensor_probs

    tile = UNET_TILE if tile is None else tile
    overlap = UNET_OVERLAP if overlap is None else overlap
    align = int(getattr(run.model, "multiple", 1))
    h, w = x.shape[-2:]
    acc = torch.zeros((1, 2, h, w), dtype=torch.float32, device=x.device)
    wsum = torch.zeros((h, w), dtype=torch.float32, device=x.device)
    for y0, y1 in aligned_spans(h, tile, overlap, align):
        wy = ramp(y1 - y0, y0, h, overlap)
        for x0, x1 in aligned_spans(w, tile, overlap, align):
            p = unet_tensor_probs(run, x[..., y0:y1, x0:x1], tta=tta)
            weight = torch.from_numpy(np.outer(wy, ramp(x1 - x0, x0, w, overlap))).to(x.device)
            acc[..., y0:y1, x0:x1] += p * weight
            wsum[y0:y1, x0:x1] += weight
    return acc.div_(wsum)


@dataclass
class Instances:
    """Mask R-CNN detections kept compactly: each mask is cropped to its box.

    Attributes:
        scores: float32[N]. boxes: int64[N, 4] as (y0, x0, y1, x1), end-exclusive, in image pixels.
        masks: N bool arrays, ``masks[i].shape == (y1 - y0, x1 - x0)`` (the thresholded mask inside its box).
        cut: bool[N], True when the mask touches a border between windows (the gland may extend beyond it).
    """

    scores: np.ndarray
    boxes: np.ndarray
    masks: list[np.ndarray]
    cut: np.ndarray

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
    rows, cols = masks.any(axis=2), masks.any(axis=1)
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
    crops = [np.ascontiguousarray(m[a:b, c:d]) for m, (a, c, b, d) in zip(binary, boxes)]
    return Instances(scores[keep].astype(np.float32), boxes, crops, np.zeros(len(crops), bool))


def _shift(inst: Instances, rows: slice, cols: slice, shape: tuple[int, int]) -> Instances:
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


def _concat(parts: list[Instances]) -> Instances:
    if not parts:
        return Instances.empty()
    return Instances(
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.boxes for p in parts]),
        [m for p in parts for m in p.masks],
        np.concatenate([p.cut for p in parts]),
    )


def _intersection(b1: np.ndarray, m1: np.ndarray, b2: np.ndarray, m2: np.ndarray) -> int:
    """Pixels shared by two box-cropped masks."""
    y0, x0, y1, x1 = max(b1[0], b2[0]), max(b1[1], b2[1]), min(b1[2], b2[2]), min(b1[3], b2[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    a = m1[y0 - b1[0] : y1 - b1[0], x0 - b1[1] : x1 - b1[1]]
    b = m2[y0 - b2[0] : y1 - b2[0], x0 - b2[1] : x1 - b2[1]]
    return int(np.count_nonzero(a & b))


def _union(
    b1: np.ndarray, m1: np.ndarray, b2: np.ndarray, m2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The union of two box-cropped masks, cropped to the union box."""
    box = np.array(
        [min(b1[0], b2[0]), min(b1[1], b2[1]), max(b1[2], b2[2]), max(b1[3], b2[3])], np.int64
    )
    out = np.zeros((box[2] - box[0], box[3] - box[1]), bool)
    for b, m in ((b1, m1), (b2, m2)):
        out[b[0] - box[0] : b[2] - box[0], b[1] - box[1] : b[3] - box[1]] |= m
    return box, out


def _first_duplicate(
    b: np.ndarray,
    m: np.ndarray,
    area: int,
    boxes: np.ndarray,
    masks: list,
    areas: np.ndarray,
    share: float,
) -> int:
    """Index of the first kept instance sharing more than ``share`` of the smaller mask with (b, m), or -1."""
    near = (boxes[:, 0] < b[2]) & (boxes[:, 2] > b[0]) & (boxes[:, 1] < b[3]) & (boxes[:, 3] > b[1])
    for j in np.flatnonzero(near):
        if _intersection(b, m, boxes[j], masks[j]) > share * max(1, min(area, int(areas[j]))):
            return int(j)
    return -1


def merge_duplicates(inst: Instances, dup_overlap: float = DUP_OVERLAP) -> Instances:
    """Merge the views of one gland seen by several windows.

    How it works: instances are visited whole-before-cut, then by decreasing score. One whose mask shares more
    than ``dup_overlap`` of the smaller mask with a kept instance is the same gland: a cut view of a gland that
    some window saw whole is dropped; two cut views of a gland larger than the overlap (no window saw it whole)
    are joined into their union. Only pairs whose boxes intersect are compared.

    Returns:
        The merged instances (cut flags of joined glands stay True).
    """
    order = np.lexsort((-inst.scores, inst.cut))
    boxes = np.zeros((len(order), 4), np.int64)  # kept instances occupy the first n rows
    masks: list[np.ndarray] = []
    areas = np.zeros(len(order), np.int64)
    keep_of = np.zeros(len(order), np.int64)  # input index of each kept instance
    n = 0
    for i in order:
        b, m = inst.boxes[i], inst.masks[i]
        area = int(np.count_nonzero(m))
        dup = _first_duplicate(b, m, area, boxes[:n], masks, areas, dup_overlap)
        if dup < 0:
            boxes[n], areas[n], keep_of[n] = b, area, i
            masks.append(m)
            n += 1
        elif inst.cut[i] and inst.cut[keep_of[dup]]:
            boxes[dup], masks[dup] = _union(boxes[dup], masks[dup], b, m)
            areas[dup] = int(np.count_nonzero(masks[dup]))
    kept = keep_of[:n]
    return Instances(inst.scores[kept], boxes[:n].copy(), masks, inst.cut[kept])


def paint(inst: Instances, post: MaskRCNNPost, shape: tuple[int, int]) -> np.ndarray:
    """Paint box-cropped instances into a label map exactly as :func:`postprocess.maskrcnn_to_labels` does:
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


def maskrcnn_tiled_instances(
    run: Run,
    image: np.ndarray,
    tta: bool = False,
    tile: tuple[int, int] | None = None,
    overlap: int | None = None,
) -> Instances:
    """Mask R-CNN detections of a large image, window by window: each window's :func:`survivors`, in image
    coordinates, merged across windows (:func:`merge_duplicates`)."""
    from .infer import maskrcnn_outputs

    post = run.post if isinstance(run.post, MaskRCNNPost) else MaskRCNNPost()
    tile = MASKRCNN_TILE if tile is None else tile
    overlap = MASKRCNN_OVERLAP if overlap is None else overlap
    shape = image.shape[:2]
    parts = []
    for rows, cols in tiles(shape, tile, overlap):
        window = image[rows, cols]
        if tta:
            from .tta import maskrcnn_tta

            scores, masks = maskrcnn_tta(run, window)
        else:
            scores, masks = maskrcnn_outputs(run, window)
        window_inst = survivors(compact(scores, masks, post), post, window.shape[:2])
        parts.append(_shift(window_inst, rows, cols, shape))
        del scores, masks
    return merge_duplicates(_concat(parts))


def maskrcnn_tiled_labels(
    run: Run,
    image: np.ndarray,
    tta: bool = False,
    tile: tuple[int, int] | None = None,
    overlap: int | None = None,
) -> np.ndarray:
    """Segment a large image with Mask R-CNN window by window (memory bounded by one window's detections).

    Args:
        run: a loaded Mask R-CNN (:func:`infer.load_run`).
        image: uint8[H, W, 3] RGB.
        tta: test-time augmentation inside each window (:func:`tta.maskrcnn_tta`).
        tile: window (height, width) in native pixels (default :data:`MASKRCNN_TILE`).
        overlap: at least the largest gland (default :data:`MASKRCNN_OVERLAP`).

    Returns:
        int32[H, W] label map, 0=background, 1..N glands.
    """
    post = run.post if isinstance(run.post, MaskRCNNPost) else MaskRCNNPost()
    return paint(maskrcnn_tiled_instances(run, image, tta, tile, overlap), post, image.shape[:2])
