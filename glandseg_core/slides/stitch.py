"""Stitch windows' glands into whole, non-overlapping glands, one row of windows at a time (bounded memory).

How it works: windows are visited row by row. A row's instances, moved to slide coordinates with their ``cut``
flags (:func:`instances.shift`: touching an inner window border), join the glands still pending from earlier
rows and are merged (:func:`segmenters.views.merge_views`): a gland some window saw whole keeps that view and its cut views are
dropped; the cut views of a gland no window saw whole are joined into one. A gland whose box ends above the next
row's first pixel row cannot meet any later window: it is final and leaves memory. Final glands are made
disjoint as the untiled painter does (:func:`instances.paint`): by decreasing score, a gland keeps the pixels no
earlier gland holds, and is dropped when that leaves fewer than ``min_area`` pixels or less than
``min_visible`` of its mask. Glands finalised in an earlier row hold their pixels against later ones. Memory:
the pending glands of one row of windows plus the final glands of the last row that still reach into it.
"""

from __future__ import annotations

import numpy as np

from ..segmenters import Instances
from ..segmenters.instances import concat, mask_boxes
from ..segmenters.views import Box, drop_unconfirmed, merge_views, overlap_slices


def select(inst: Instances, keep: np.ndarray) -> Instances:
    """The instances where ``keep`` (bool[N]) is True."""
    idx = np.flatnonzero(keep)
    return Instances(inst.scores[idx], inst.boxes[idx], [inst.masks[i] for i in idx], inst.cut[idx])


class Stitcher:
    """Collects rows of windows' instances and hands out final glands (see the module docstring).

    Args:
        min_area: a final gland keeps at least this many pixels. min_visible: and at least this share of its
            mask (0 for the U-Net, whose window labels never overlap). shape: (H, W) of the slide in model
            pixels; when given, a cut gland that a segmented window held whole without finding it is dropped
            (:func:`segmenters.views.drop_unconfirmed`).
    """

    def __init__(self, min_area: int, min_visible: float, shape: tuple[int, int] | None = None) -> None:
        self.min_area, self.min_visible, self.shape = min_area, min_visible, shape
        self.windows = np.zeros((0, 4), np.int64)  # every window segmented so far
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
        self.windows = np.concatenate([self.windows, *(w[None] for _, w in parts)]).reshape(-1, 4)
        ready = select(merged, done)
        if (
            self.shape is not None
        ):  # every window that could hold a final gland whole is segmented by now
            ready = drop_unconfirmed(ready, wins[done], self.windows, self.shape)[0]
        final = self._disjoint(ready)
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
                sl = overlap_slices(b, hb)
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
