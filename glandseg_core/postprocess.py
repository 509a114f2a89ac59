"""Model outputs -> label map (int32[H, W]; 0=background, 1..N glands).

U-Net (instance mode): markers are the gland interiors (gland probability high, contour probability low); a
marker-controlled watershed on the gland probability grows them back to the full gland mask, so touching glands
stay apart. Mask R-CNN: instances are painted from the highest score down; a pixel belongs to the first instance that
claims it, and instances left with too little of their own mask are dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed


@dataclass(frozen=True)
class UNetPost:
    """U-Net post-processing thresholds (tuned on ``val``; areas in pixels of the input image)."""

    fg_thresh: float = 0.5
    contour_thresh: float = 0.5
    min_marker_area: int = 40
    min_area: int = 150
    instance: bool = True


@dataclass(frozen=True)
class MaskRCNNPost:
    """Mask R-CNN post-processing thresholds (tuned on ``val``; areas in pixels of the input image)."""

    score_thresh: float = 0.5
    mask_thresh: float = 0.5
    min_area: int = 150
    min_visible: float = 0.5  # drop an instance when less than this share of its mask is still unclaimed


def post_from_dict(kind: str, d: dict) -> UNetPost | MaskRCNNPost:
    """Build the post-processing settings of model ``kind`` from a JSON dict (unknown keys raise)."""
    cls = UNetPost if kind == "unet" else MaskRCNNPost
    known = {f.name for f in fields(cls)}
    if set(d) - known:
        raise ValueError(f"unknown post-processing keys for {kind}: {', '.join(sorted(set(d) - known))}")
    return cls(**d)


def save_post(post: UNetPost | MaskRCNNPost, path: str | Path) -> None:
    """Write the settings as ``postprocess.json``."""
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(asdict(post), indent=2) + "\n")


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1 if ids.size else 1, dtype=np.int32)
    nz = ids[ids != 0]
    lut[nz] = np.arange(1, nz.size + 1, dtype=np.int32)
    return lut[labels]


def _remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 0 or not labels.any():
        return labels
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def unet_to_labels(prob: np.ndarray, post: UNetPost) -> np.ndarray:
    """Turn U-Net probabilities into a label map.

    Args:
        prob: float32[2, H, W]: gland probability and contour probability (sigmoid outputs).
        post: thresholds.

    Returns:
        int32[H, W] label map, 0=background, 1..N glands.
    """
    if prob.ndim != 3 or prob.shape[0] != 2:
        raise ValueError(f"prob must be [2, H, W], got {prob.shape}")
    fg_prob, contour_prob = prob[0], prob[1]
    mask = ndi.binary_fill_holes(fg_prob > post.fg_thresh)
    if not post.instance:
        labels, _ = ndi.label(mask)
        return _relabel_sequential(_remove_small(labels.astype(np.int32), post.min_area))
    markers_mask = (fg_prob > post.fg_thresh) & (contour_prob < post.contour_thresh)
    markers, _ = ndi.label(markers_mask)
    markers = _remove_small(markers.astype(np.int32), post.min_marker_area)
    labels = watershed(-fg_prob, markers, mask=mask).astype(np.int32)
    # Gland pixels that no marker reached (a gland whose interior was all contour) become their own objects.
    orphan, _ = ndi.label(mask & (labels == 0))
    if orphan.any():
        labels = np.where(orphan > 0, orphan + labels.max(), labels).astype(np.int32)
    return _relabel_sequential(_remove_small(labels, post.min_area))


def maskrcnn_to_labels(
    scores: np.ndarray, masks: np.ndarray, post: MaskRCNNPost, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Paint Mask R-CNN instances into one label map.

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
    labels = np.zeros(shape, dtype=np.int32)
    next_id = 1
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] < post.score_thresh:
            break
        m = masks[i] > post.mask_thresh
        area = int(m.sum())
        if area == 0:
            continue
        free = m & (labels == 0)
        n_free = int(free.sum())
        if n_free < post.min_area or n_free < post.min_visible * area:
            continue
        labels[free] = next_id
        next_id += 1
    return labels
