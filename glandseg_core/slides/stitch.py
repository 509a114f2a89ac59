"""Stitch windows' glands into whole, non-overlapping glands, one row of windows at a time (bounded memory).

How it works: windows are visited row by row. A row's instances, moved to slide coordinates with their ``cut``
flags (:func:`instances.shift`: touching an inner window border), join the glands still pending from earlier
rows, and :func:`instances.merge_duplicates` merges them: a gland some window saw whole keeps that view, the
cut views of one gland are joined. A gland whose box ends above the next row's first pixel row cannot meet any
later window: it is final and leaves memory. Final glands are made disjoint as the untiled painter does
(:func:`instances.paint`): by decreasing score, a gland keeps the pixels no earlier gland holds, and is dropped
when that leaves fewer than ``min_area`` pixels or less than ``min_visible`` of its mask. Glands finalised in an
earlier row hold their pixels against later ones. Memory: the pending glands of one row of windows plus the
final glands of the last row that still reach into it.
"""

from __future__ import annotations

import numpy as np

from ..segment import Instances
from ..segment.instances import concat, mask_boxes, merge_duplicates


def select(inst: Instances, keep: np.ndarray) -> Instances:
    """The instances where ``keep`` (bool[N]) is True."""
    idx = np.flatnonzero(keep)
    return Instances(inst.scores[idx], inst.boxes[idx], [inst.masks[i] for i in idx], inst.cut[idx])


def _overlap(b1: np.ndarray, b2: np.ndarray) -> tuple[slice, slice, slice, slice] | None:
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


class Stitcher:
    """Collects rows of windows' instances and hands out final glands (see the module docstring).

    Args:
        min_area: a final gland keeps at least this many pixels. min_visible: and at least this share of its
            mask (0 for the U-Net, whose window labels never overlap).
    """

    def __init__(self, min_area: int, min_visible: float) -> None:
        self.min_area, self.min_visible = min_area, min_visible
        self.pending = Instances.empty()
        self.recent = Instances.empty()  # final glands that pending ones may still overlap

    def add_row(self, parts: list[Instances], next_row: int | None) -> Instances:
        """Add one row of windows' instances (slide coordinates, cut flags set).

        Args:
            parts: the row's windows' instances. next_row: first pixel row of the next row of windows (None
                after the last row).

        Returns:
            The glands made final by this row: disjoint masks, cropped to their pixels.
        """
        merged = merge_duplicates(concat([self.pending, *parts]))
        done = np.ones(len(merged), bool) if next_row is None else merged.boxes[:, 2] <= next_row
        self.pending = select(merged, ~done)
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
        held_boxes = list(self.recent.boxes)
        held_masks = list(self.recent.masks)
        scores, boxes, masks = [], [], []
        for i in np.argsort(-inst.scores, kind="stable"):
            b, m = inst.boxes[i], inst.masks[i]
            area = int(np.count_nonzero(m))
            free = m
            for hb, hm in zip(held_boxes, held_masks):
                sl = _overlap(b, hb)
                if sl is not None and hm[sl[2], sl[3]].any():
                    if free is m:
                        free = m.copy()
                    free[sl[0], sl[1]] &= ~hm[sl[2], sl[3]]
            n_free = int(np.count_nonzero(free))
            if n_free == 0 or n_free < self.min_area or n_free < self.min_visible * area:
                continue
            a, c, e, d = mask_boxes(free[None])[0]
            box = np.array([b[0] + a, b[1] + c, b[0] + e, b[1] + d], np.int64)
            crop = np.ascontiguousarray(free[a:e, c:d])
            held_boxes.append(box)
            held_masks.append(crop)
            scores.append(inst.scores[i])
            boxes.append(box)
            masks.append(crop)
        if not masks:
            return Instances.empty()
        return Instances(
            np.asarray(scores, np.float32), np.stack(boxes), masks, np.zeros(len(masks), bool)
        )
