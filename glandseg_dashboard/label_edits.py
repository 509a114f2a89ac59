"""Corrections of a label map on the Annotate page (erase, merge, add drawn glands, split along a cut line); saving
lives in :mod:`.annotation_sets`. Pure functions: each returns a new int32 map (0 = background, 1..N glands). No streamlit here.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy import ndimage
from skimage import draw

# ---------------------------------------------------------------------------------- label-map corrections


def ids_at(labels: np.ndarray, points: np.ndarray) -> list[int]:
    """Gland ids under (row, col) points, each once, in click order (background and outside skipped)."""
    rc = np.rint(np.asarray(points, float).reshape(-1, 2)).astype(int)
    rc = rc[(rc >= 0).all(1) & (rc[:, 0] < labels.shape[0]) & (rc[:, 1] < labels.shape[1])]
    return list(dict.fromkeys(int(v) for v in labels[rc[:, 0], rc[:, 1]] if v))


def erase_ids(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    """int32 label map without the glands ``ids`` (their pixels become background)."""
    return np.where(np.isin(labels, ids), 0, labels).astype(np.int32)


def merge_ids(labels: np.ndarray, ids: list[int]) -> np.ndarray:
    """int32 label map where the glands ``ids`` are one gland, with the smallest of their ids."""
    ids = [i for i in ids if i]
    return np.where(np.isin(labels, ids), min(ids), labels).astype(np.int32) if ids else labels.copy()


def add_labels(labels: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """``drawn`` glands (a label map of new shapes) painted over ``labels`` with new ids (above the largest)."""
    out = labels.astype(np.int32, copy=True)
    out[drawn > 0] = drawn[drawn > 0] + int(labels.max(initial=0))
    return out


def split_along(labels: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Cut every gland the polyline crosses: each 4-connected piece left of a crossed gland becomes its own
    gland (the largest keeps the id), and the cut pixels go to the nearest piece. A line that does not cut
    a gland through leaves it whole.

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        polyline: float[N, 2] (row, col) points of the cut, in image pixel coordinates.
    """
    pts = np.rint(np.asarray(polyline, float).reshape(-1, 2)).astype(int)
    cut = np.zeros(labels.shape, bool)
    for (r0, c0), (r1, c1) in pairwise(pts):
        rr, cc = draw.line(r0, c0, r1, c1)
        keep = (rr >= 0) & (rr < labels.shape[0]) & (cc >= 0) & (cc < labels.shape[1])
        cut[rr[keep], cc[keep]] = True
    out = labels.astype(np.int32, copy=True)
    next_id = int(labels.max(initial=0)) + 1
    for gid in np.unique(labels[cut & (labels > 0)]):
        gland = labels == gid
        pieces, n = ndimage.label(gland & ~cut)  # 4-connected: an 8-connected cut line separates them
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        idx = ndimage.distance_transform_edt(pieces == 0, return_distances=False, return_indices=True)
        nearest = pieces[idx[0], idx[1]]  # every pixel's nearest piece
        new_ids = np.array([0, *[gid if k == sizes.argmax() else next_id + k for k in range(n)]])
        out[gland] = new_ids[nearest[gland]]
        next_id += n
    return out
