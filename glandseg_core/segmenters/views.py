"""Merging the views of one gland seen by several windows (tiled images and whole slides alike).

A window sees a gland whole, or cut by one of its inner borders (``Instances.cut``, set by
:func:`instances.shift`). :func:`merge_views` keeps a whole view over the cut ones and joins the cut views of a
gland no window saw whole. Two cut views are compared only inside the area both windows saw, where each shows
its part of the gland completely: comparing whole masks instead would leave a gland much larger than the
overlap in pieces, with a straight cut at the window border.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from .instances import CUT_MARGIN, Instances

DUP_OVERLAP = 0.5  # two views are one gland when they share more than this part of the smaller one

Box = np.ndarray  # int64[4]: (y0, x0, y1, x1), end-exclusive, image pixels


def overlap_slices(b1: Box, b2: Box) -> tuple[slice, slice, slice, slice] | None:
    """Slices of the shared part of two boxes, in the first box's and the second box's coordinates."""
    y0, x0, y1, x1 = max(b1[0], b2[0]), max(b1[1], b2[1]), min(b1[2], b2[2]), min(b1[3], b2[3])
    if y0 >= y1 or x0 >= x1:
        return None
    return (
        slice(y0 - b1[0], y1 - b1[0]),
        slice(x0 - b1[1], x1 - b1[1]),
        slice(y0 - b2[0], y1 - b2[0]),
        slice(x0 - b2[1], x1 - b2[1]),
    )


def _shared(b1: Box, m1: np.ndarray, b2: Box, m2: np.ndarray) -> int:
    sl = overlap_slices(b1, b2)
    return 0 if sl is None else int(np.count_nonzero(m1[sl[0], sl[1]] & m2[sl[2], sl[3]]))


def _inside(b: Box, m: np.ndarray, region: Box) -> int:
    """Pixels of a box-cropped mask inside ``region``."""
    sl = overlap_slices(b, region)
    return 0 if sl is None else int(np.count_nonzero(m[sl[0], sl[1]]))


def _union(b1: Box, m1: np.ndarray, b2: Box, m2: np.ndarray) -> tuple[Box, np.ndarray]:
    """The union of two box-cropped masks, cropped to the union box."""
    box = _hull(b1, b2)
    out = np.zeros((box[2] - box[0], box[3] - box[1]), bool)
    for b, m in ((b1, m1), (b2, m2)):
        out[b[0] - box[0] : b[2] - box[0], b[1] - box[1] : b[3] - box[1]] |= m
    return box, out


def _hull(w1: Box, w2: Box) -> Box:
    return np.array(
        [min(w1[0], w2[0]), min(w1[1], w2[1]), max(w1[2], w2[2]), max(w1[3], w2[3])], np.int64
    )


def _same_cut(inter: int, v1: tuple, v2: tuple) -> bool:
    """Whether two cut views (box, mask, window) sharing ``inter`` pixels show one gland: they share more
    than ``DUP_OVERLAP`` of the smaller one's part inside the area both windows saw."""
    (b1, m1, w1), (b2, m2, w2) = v1, v2
    region = np.r_[np.maximum(w1[:2], w2[:2]), np.minimum(w1[2:], w2[2:])]
    return inter > DUP_OVERLAP * max(1, min(_inside(b1, m1, region), _inside(b2, m2, region)))


class _Kept:
    """The glands kept so far: box, mask, window box, input index, alive."""

    def __init__(self) -> None:
        self.boxes: list[Box] = []
        self.masks: list[np.ndarray] = []
        self.wins: list[Box] = []
        self.src: list[int] = []
        self.alive: list[bool] = []

    def add(self, b: Box, m: np.ndarray, w: Box, i: int) -> None:
        self.boxes.append(b)
        self.masks.append(m)
        self.wins.append(w)
        self.src.append(i)
        self.alive.append(True)

    def join(self, j: int, b: Box, m: np.ndarray, w: Box) -> None:
        self.boxes[j], self.masks[j] = _union(self.boxes[j], self.masks[j], b, m)
        self.wins[j] = _hull(self.wins[j], w)

    def fold(self, into: int, j: int) -> None:
        """Join kept gland ``j`` into kept gland ``into`` (a view bridged them)."""
        self.join(into, self.boxes[j], self.masks[j], self.wins[j])
        self.alive[j] = False


def merge_views(inst: Instances, windows: np.ndarray) -> tuple[Instances, np.ndarray]:
    """Merge the views of one gland seen by several windows.

    How it works: views are visited whole-before-cut, then by decreasing score. A view sharing more than
    ``DUP_OVERLAP`` of the smaller mask with a kept gland is that gland: dropped when either is whole (a window
    saw the gland whole), joined into their union when both are cut. Two cut views are compared only inside
    the area both their windows saw (where each shows its part of the gland completely), so a gland much larger
    than the window overlap, which no window sees whole, is joined however little of it lies in the overlap.
    A cut view matching several kept cut glands joins them all.

    Args:
        inst: views in image coordinates with ``cut`` flags. windows: int64[N, 4], each view's window box.

    Returns:
        The merged instances (cut flags of joined glands stay True) and their windows (a joined gland gets the
        box around its views' windows).
    """
    kept = _Kept()
    for i in np.lexsort((-inst.scores, inst.cut)):
        b, m, w, cut = inst.boxes[i], inst.masks[i], windows[i], bool(inst.cut[i])
        area = int(np.count_nonzero(m))
        joined, dropped = -1, False
        for j in range(len(kept.boxes)):
            if not kept.alive[j] or overlap_slices(b, kept.boxes[j]) is None:
                continue
            inter = _shared(b, m, kept.boxes[j], kept.masks[j])
            if inter == 0:
                continue
            if cut and inst.cut[kept.src[j]]:
                if _same_cut(inter, (b, m, w), (kept.boxes[j], kept.masks[j], kept.wins[j])):
                    if joined < 0:
                        kept.join(j, b, m, w)
                        joined = j
                    else:
                        kept.fold(joined, j)
            elif inter > DUP_OVERLAP * max(1, min(area, int(np.count_nonzero(kept.masks[j])))):
                dropped = True
                break
        if joined < 0 and not dropped:
            kept.add(b, m, w, int(i))
    idx = [k for k, a in enumerate(kept.alive) if a]
    src = np.asarray([kept.src[k] for k in idx], np.int64)
    out = Instances(
        inst.scores[src],
        np.asarray([kept.boxes[k] for k in idx], np.int64).reshape(-1, 4),
        [kept.masks[k] for k in idx],
        inst.cut[src],
    )
    return out, np.asarray([kept.wins[k] for k in idx], np.int64).reshape(-1, 4)


def seen_whole(boxes: np.ndarray, windows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which boxes some window holds entirely, at least ``CUT_MARGIN`` pixels from its inner borders (so a
    gland there would not have been cut by that window).

    Args:
        boxes: int64[N, 4]. windows: int64[M, 4], all the windows the image was cut into. shape: (H, W).

    Returns:
        bool[N].
    """
    h, w = shape
    win = windows[:, None, :]
    b = boxes[None, :, :]
    inner = (
        np.stack([win[..., 0] > 0, win[..., 1] > 0, win[..., 2] < h, win[..., 3] < w], axis=-1).astype(
            np.int64
        )
        * CUT_MARGIN
    )
    inside = (
        (b[..., 0] >= win[..., 0] + inner[..., 0])
        & (b[..., 1] >= win[..., 1] + inner[..., 1])
        & (b[..., 2] <= win[..., 2] - inner[..., 2])
        & (b[..., 3] <= win[..., 3] - inner[..., 3])
    )
    return cast(np.ndarray, inside.any(axis=0)) if len(windows) else np.zeros(len(boxes), bool)


def drop_unconfirmed(
    inst: Instances, windows: np.ndarray, all_windows: np.ndarray, shape: tuple[int, int]
) -> tuple[Instances, np.ndarray]:
    """Drop the cut glands that a window saw whole without finding them there.

    A cut gland left after :func:`merge_views` matched no view of the window that saw its whole area with
    context on every side; that window's reading wins over the partial one (which would otherwise show as a
    gland cut straight at the border).

    Args:
        inst, windows: the output of :func:`merge_views`. all_windows: int64[M, 4], every window. shape: (H, W).
    """
    drop = inst.cut & seen_whole(inst.boxes, all_windows, shape)
    idx = np.flatnonzero(~drop)
    kept = Instances(inst.scores[idx], inst.boxes[idx], [inst.masks[i] for i in idx], inst.cut[idx])
    return kept, windows[idx]
