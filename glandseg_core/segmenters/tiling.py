"""Tiled inference for large images (whole-slide crops): bounded memory, no seams, no duplicated glands.

Wrappers around any segmenter's forward pass; this module never imports a segmenter (they import it).

* Dense outputs (the U-Net's probabilities): :func:`blend_windows` runs a forward function on windows that
  start on the network's pooling grid (:func:`aligned_spans`) and blends them with a cosine ramp across each
  overlap, so the full map has no seams and post-processing then runs once on it: glands are never cut at
  window borders.
* Instances (Mask R-CNN): :func:`tiled_instances` runs a detector on windows of :attr:`Tiling.maskrcnn_tile`
  native pixels (the GlaS image size, so torchvision resizes each window exactly as it resized the training
  images) overlapping by at least the largest gland. Each window is painted on its own first
  (:func:`instances.survivors`); its survivors move to image coordinates as box-cropped masks, and the views
  of one gland in several windows are merged (:func:`views.merge_views`: cut views compared only inside the
  area both windows saw, so a gland larger than the overlap is joined, not cut straight at a border).

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..thresholds import MaskRCNNPost
from .instances import Instances, concat, shift, survivors
from .views import drop_unconfirmed, merge_views

TILE_ABOVE = 1024  # tile when either side of the image exceeds this many native pixels
UNET_TILE = 768  # U-Net window side, in pixels at the U-Net's input scale (cfg.params.scale)
UNET_OVERLAP = 256  # at the U-Net's scale; with 768, tiled and whole probabilities differ by < 0.05
MASKRCNN_TILE = (522, 775)  # (height, width), native pixels: the GlaS image size the models trained on
MASKRCNN_OVERLAP = 256  # native pixels; >= the largest gland, so every gland is whole in some window
MASKRCNN_WINDOW = (
    2048  # native pixels: windows run at the training scale (segmenters/native.py), so they can be
)
# large and the overlap costs little (2048-px windows cover a 4000-px image 1.15x per side, not 2.9x in all)


@dataclass(frozen=True)
class Tiling:
    """When and how a segmenter cuts an image into windows.

    Attributes:
        tile_above: tile when either side of the image exceeds this many native pixels.
        unet_tile, unet_overlap: U-Net window side and overlap, in pixels at the U-Net's input scale.
        maskrcnn_tile: Mask R-CNN window (height, width) in native pixels with test-time augmentation (whose views
            go through torchvision's own resizing, so they stay GlaS-sized).
        maskrcnn_window: Mask R-CNN window side otherwise (run at the training scale, evenly spaced).
        maskrcnn_overlap: Mask R-CNN window overlap in native pixels (at least the largest gland).
    """

    tile_above: int = TILE_ABOVE
    unet_tile: int = UNET_TILE
    unet_overlap: int = UNET_OVERLAP
    maskrcnn_tile: tuple[int, int] = MASKRCNN_TILE
    maskrcnn_overlap: int = MASKRCNN_OVERLAP
    maskrcnn_window: int = MASKRCNN_WINDOW

    def needed(self, shape: tuple[int, ...]) -> bool:
        """Whether an image of ``shape`` (H, W[, C]) is cut into windows."""
        return needs_tiling(shape, self.tile_above)


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


def even_spans(n: int, window: int, overlap: int) -> tuple[list[int], int]:
    """As few windows of one size as cover ``[0, n)`` with neighbours overlapping by at least ``overlap``,
    evenly spaced: (starts, size), size at most ``window``.

    Evenly spaced windows shrink to just what covers the axis, instead of a last window overlapping its
    neighbour by most of its side: on the 20,000-pixel benchmark slide, 1.26x the slide's area is segmented
    instead of 1.55x.
    """
    if n <= window:
        return [0], n
    overlap = min(overlap, window - 1)
    k = math.ceil((n - overlap) / (window - overlap))
    size = min(window, math.ceil((n + (k - 1) * overlap) / k) + 1)
    return [i * (n - size) // (k - 1) for i in range(k)], size


def even_tiles(shape: tuple[int, ...], side: int, overlap: int) -> list[tuple[slice, slice]]:
    """Windows ``(rows, cols)`` of at most ``side`` pixels covering an image of ``shape``, as few as the overlap
    allows and evenly spaced (:func:`even_spans`)."""
    ys, th = even_spans(shape[0], side, overlap)
    xs, tw = even_spans(shape[1], side, overlap)
    return [(slice(y, y + th), slice(x, x + tw)) for y in ys for x in xs]


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


def blend_windows(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    align: int,
) -> torch.Tensor:
    """A dense forward pass over a large input, window by window, blended without seams.

    Args:
        forward: maps float32[1, C, h, w] windows to float32[1, K, h, w] outputs of the same size.
        x: float32[1, C, H, W], at the network's scale.
        tile, overlap: window side and overlap in pixels of ``x``.
        align: window starts are multiples of this (the network's pooling grid, ``2**depth``).

    Returns:
        float32[1, K, H, W].
    """
    h, w = x.shape[-2:]
    acc: torch.Tensor | None = None
    wsum = torch.zeros((h, w), dtype=torch.float32, device=x.device)
    for y0, y1 in aligned_spans(h, tile, overlap, align):
        wy = ramp(y1 - y0, y0, h, overlap)
        for x0, x1 in aligned_spans(w, tile, overlap, align):
            p = forward(x[..., y0:y1, x0:x1])
            if acc is None:
                acc = torch.zeros((1, p.shape[1], h, w), dtype=torch.float32, device=x.device)
            weight = torch.from_numpy(np.outer(wy, ramp(x1 - x0, x0, w, overlap))).to(x.device)
            acc[..., y0:y1, x0:x1] += p * weight
            wsum[y0:y1, x0:x1] += weight
    assert acc is not None  # aligned_spans always yields at least one window
    return acc.div_(wsum)


def tiled_instances(
    detect: Callable[[np.ndarray], Instances],
    image: np.ndarray,
    post: MaskRCNNPost,
    *,
    tile: tuple[int, int],
    overlap: int,
    even: bool = False,
) -> Instances:
    """Detections of a large image, window by window: each window's :func:`instances.survivors`, in image
    coordinates, merged across windows (:func:`views.merge_views`).

    Args:
        detect: maps a uint8[h, w, 3] window to its compact detections (:class:`Instances`).
        image: uint8[H, W, 3] RGB.
        post: the thresholds each window is painted with.
        tile: window (height, width) in native pixels. overlap: at least the largest gland.
        even: windows of at most ``tile[0]`` pixels a side, evenly spaced (:func:`even_tiles`), instead of
            windows of exactly ``tile`` with the last one clamped to the edge.
    """
    shape = image.shape[:2]
    parts, windows = [], []
    grid = even_tiles(shape, tile[0], overlap) if even else tiles(shape, tile, overlap)
    for rows, cols in grid:
        window = image[rows, cols]
        window_inst = survivors(detect(window), post, window.shape[:2])
        parts.append(shift(window_inst, rows, cols, shape))
        windows += [[rows.start, cols.start, rows.stop, cols.stop]] * len(window_inst)
    merged, wins = merge_views(concat(parts), np.asarray(windows, np.int64).reshape(-1, 4))
    every = np.asarray([[r.start, c.start, r.stop, c.stop] for r, c in grid], np.int64)
    return drop_unconfirmed(merged, wins, every, shape)[0]
