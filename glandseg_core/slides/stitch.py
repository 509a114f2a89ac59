"""Stitch windows' glands into whole, non-overlapping glands, one row of windows at a time (bounded memory).

How it works: windows are visited row by row. A row's instances, moved to slide coordinates with their ``cut``
flags (:func:`instances.shift`: touching an inner window border), join the glands still pending from earlier
rows and are merged (:func:`merge_views`): a gland some window saw whole keeps that view and its cut views are
dropped; the cut views of a gland no window saw whole are joined into one. A gland whose box ends above the next
row's first pixel row cannot meet any later window: it is final and leaves memory. Final glands are made
disjoint as the untiled painter does (:func:`instances.paint`): by decreasing score, a gland keeps the pixels no
earlier gland holds, and is dropped when that leaves fewer than ``min_area`` pixels or less than
``min_visible`` of its mask. Glands finalised in an earlier row hold their pixels against later ones. Memory:
the pending glands of one row of windows plus the final glands of the last row that still reach into it.
"""

from __future__ import annotations

import numpy as np

from ..segment import Instances
from ..segment.instances import DUP_OVERLAP, concat, mask_boxes

Box = np.ndarray  # int64[4]: (y0, x0, y1, x1), end-exclusive, slide (model-space) pixels


def select(inst: Instances, keep: np.ndarray) -> Instances:
    """The instances where ``keep`` (bool[N]) is True."""
    idx = np.flatnonzero(keep)
    return Instances(inst.scores[idx], inst.boxes[idx], [inst.masks[i] for i in idx], inst.cut[idx])


def _overlap(b1: Box, b2: Box) -> tuple[slice, slice, slice, slice] | None:
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
    sl = _overlap(b1, b2)
    return 0 if sl is None else int(np.count_nonzero(m1[sl[0], sl[1]] & m2[sl[2], sl[3]]))


def _inside(b: Box, m: np.ndarray, region: Box) -> int:
    """Pixels of a box-cropped mask inside ``region``."""
    sl = _overlap(b, region)
    return 0 if sl is None else int(np.count_nonzero(m[sl[0], sl[1]]))


def _union(b1: Box, m1: np.ndarray, b2: Box, m2: np.ndarray) -> tuple[Box, np.ndarray]:
    box = np.array(
        [min(b1[0], b2[0]), min(b1[1], b2[1]), max(b1[2], b2[2]), max(b1[3], b2[3])], np.int64
    )
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


def merge_views(inst: Instances, windows: np.ndarray) -> tuple[Instances, np.ndarray]:
    """Merge the views of one gland seen by several windows.

    How it works: views are visited whole-before-cut, then by decreasing score. A view sharing more than
    ``DUP_OVERLAP`` of the smaller mask with a kept gland is that gland: dropped when either is whole (a window
    saw the gland whole), joined into their union when both are cut. Two cut views are compared only inside
    the area both their windows saw (where each shows its part of the gland completely), so a gland much larger
    than the window overlap, which no window sees whole, is joined however little of it lies in the overlap.
    A cut view matching several kept cut glands joins them all.

    Args:
        inst: views in slide coordinates with ``cut`` flags. windows: int64[N, 4], each view's window box.

    Returns:
        The merged instances and their windows (a joined gland gets the box around its views' windows).
    """
    order = np.lexsort((-inst.scores, inst.cut))
    boxes: list[Box] = []
    masks: list[np.ndarray] = []
    wins: list[Box] = []
    keep: list[int] = []
    alive: list[bool] = []
    for i in order:
        b, m, w, cut = inst.boxes[i], inst.masks[i], windows[i], bool(inst.cut[i])
        area = int(np.count_nonzero(m))
        joined, dropped = -1, False
        for j in range(len(boxes)):
            if not alive[j] or _overlap(b, boxes[j]) is None:
                continue
            inter = _shared(b, m, boxes[j], masks[j])
            if inter == 0:
                continue
            if cut and inst.cut[keep[j]]:
                if _same_cut(inter, (b, m, w), (boxes[j], masks[j], wins[j])):
                    if joined < 0:
                        boxes[j], masks[j] = _union(boxes[j], masks[j], b, m)
                        wins[j], joined = _hull(wins[j], w), j
                    else:  # this view bridges two kept parts: fold j into the first one
                        boxes[joined], masks[joined] = _union(
                            boxes[joined], masks[joined], boxes[j], masks[j]
                        )
                        wins[joined], alive[j] = _hull(wins[joined], wins[j]), False
            elif inter > DUP_OVERLAP * max(1, min(area, int(np.count_nonzero(masks[j])))):
                dropped = True
                break
        if joined < 0 and not dropped:
            boxes.append(b)
            masks.append(m)
            wins.append(w)
            keep.append(int(i))
            alive.append(True)
    idx = [k for k, a in enumerate(alive) if a]
    src = np.asarray([keep[k] for k in idx], np.int64)
    out = Instances(
        inst.scores[src],
        np.asarray([boxes[k] for k in idx], np.int64).reshape(-1, 4),
        [masks[k] for k in idx],
        inst.cut[src],
    )
    return out, np.asarray([wins[k] for k in idx], np.int64).reshape(-1, 4)


class Stitcher:
    """Collects rows of windows' instances and hands out final glands (see the module docstring).

    Args:
        min_area: a final gland keeps at least this many pixels. min_visible: and at least this share of its
            mask (0 for the U-Net, whose window labels never overlap).
    """

    def __init__(self, min_area: int, min_visible: float) -> None:
        self.min_area, self.min_visible = min_area, min_visible
        self.pending = Instances.empty()
        self.pending_windows = np.zeros((0, 4), np.int64)
        self.recent = Instances.empty()  # final glands that pending ones may still overlap

    def add_row(self, parts: list[tuple[Instances, Box]], next_row: int | None) -> Instances:
        """Add one row of windows' instances.

        Args:
            parts: (instances in slide coordinates with cut flags, their window's box) per window of the row.
            next_row: first pixel row of the next row of windows (None after the last row).

        Returns:
            The glands made final by this row: disjoint masks, cropped to their pixels.
        """
        views = concat([self.pending, *(p for p, _ in parts)])
        wins = np.concatenate([self.pending_windows, *(np.tile(w, (len(p), 1)) for p, w in parts)])
        merged, wins = merge_views(views, wins.reshape(-1, 4))
        done = np.ones(len(merged), bool) if next_row is None else merged.boxes[:, 2] <= next_row
        self.pending, self.pending_windows = select(merged, ~done), wins[~done]
        final = self._disjoint(select(merged, done))
        self.recent = concat([self.recent, final])
        if len(self.pending):
            top = int(self.pending.boxes[:, 0].min())
            self.recent = select(self.recent, self.recent.boxes[:, 2] > top)
        else:
            self.recent = Instances.empty()
        return final

    def _disjoint(self, inst: Instances) -> Instances:
        """Paint ``inst`` by decreasing score against ``recent`` and each other (see the module docstring)."""
        held = list(zip(self.recent.boxes, self.recent.masks, strict=True))
        scores, boxes, masks = [], [], []
        for i in np.argsort(-inst.scores, kind="stable"):
            b, m = inst.boxes[i], inst.masks[i]
            area = int(np.count_nonzero(m))
            free = m
            for hb, hm in held:
                sl = _overlap(b, hb)
                if sl is not None and hm[sl[2], sl[3]].any():
                    free = free.copy() if free is m else free
                    free[sl[0], sl[1]] &= ~hm[sl[2], sl[3]]
            n_free = int(np.count_nonzero(free))
            if n_free == 0 or n_free < self.min_area or n_free < self.min_visible * area:
                continue
            a, c, e, d = mask_boxes(free[None])[0]
            box = np.array([b[0] + a, b[1] + c, b[0] + e, b[1] + d], np.int64)
            crop = np.ascontiguousarray(free[a:e, c:d])
            held.append((box, crop))
            scores.append(inst.scores[i])
            boxes.append(box)
            masks.append(crop)
        if not masks:
            return Instances.empty()
        return Instances(
            np.asarray(scores, np.float32), np.stack(boxes), masks, np.zeros(len(masks), bool)
        )
