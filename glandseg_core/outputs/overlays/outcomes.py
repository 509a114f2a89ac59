"""What happened to every gland of one image: found, false, missed, merged or split (pure numpy).

Built on the GlaS matching of :mod:`glandseg_core.metrics` (docs/METRICS.md): an object's *partner* is
the object on the other map that covers most of its pixels, and a prediction is a true positive when it
covers more than 50% of its partner. On top of that, two ways of going wrong are named as such:

- **merge**: one prediction covers more than 50% of each of two or more ground-truth glands. GlaS counts it
  once as a TP (for its partner) and the other glands as missed.
- **split**: two or more predictions have the same ground-truth gland as partner (the gland is cut into
  pieces). At most one piece is a TP; the others are FP, and when no piece covers more than half of the
  gland it is missed as well.

Label maps are 2-D integer arrays, 0 = background, 1, 2, ... glands (ids need not be consecutive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...metrics import object_outcomes, overlap


@dataclass(frozen=True)
class GlandOutcomes:
    """Outcome of every gland of one image.

    Attributes:
        pred: Predicted id -> "TP", "FP", "merge" or "split" (merge wins over split, split over TP / FP).
        missed: Ground-truth ids no true positive has as partner (the GlaS FN; ``metrics.Outcomes.fn``).
        merges: Merge prediction id -> the ground-truth ids it covers more than half of (two or more).
        splits: Split ground-truth id -> the predicted ids whose partner it is (two or more).
        tp: Predicted ids that are GlaS true positives (merges and split pieces included).
    """

    pred: dict[int, str]
    missed: tuple[int, ...]
    merges: dict[int, tuple[int, ...]]
    splits: dict[int, tuple[int, ...]]
    tp: tuple[int, ...]

    def counts(self) -> dict[str, int]:
        """How many glands fall in each class: predictions per "TP" / "merge" / "split" / "FP", and "FN"
        (missed ground-truth glands)."""
        out = {k: 0 for k in ("TP", "merge", "split", "FP")}
        for kind in self.pred.values():
            out[kind] += 1
        return {**out, "FN": len(self.missed)}

    def merged_or_split_gt(self) -> tuple[int, ...]:
        """Ground-truth ids inside a merge or cut by a split, increasing."""
        ids = {g for gts in self.merges.values() for g in gts} | set(self.splits)
        return tuple(sorted(ids))


def gland_outcomes(pred: np.ndarray, gt: np.ndarray) -> GlandOutcomes:
    """Classifies every predicted gland as TP, FP, merge or split, and lists the missed ground truth.

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... glands.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        The `GlandOutcomes` of the image (original ids).

    Raises:
        ValueError: If a map is invalid or the shapes differ.
    """
    ov = overlap(pred, gt)
    base = object_outcomes(pred, gt)
    pred_ids, gt_ids = ov.pred_ids.tolist(), ov.gt_ids.tolist()
    covers = 2 * ov.pair_count > ov.gt_area[ov.pair_gt]  # prediction covers > 50% of that GT gland
    merges: dict[int, tuple[int, ...]] = {}
    for p in np.unique(ov.pair_pred[covers]):
        covered = ov.pair_gt[covers & (ov.pair_pred == p)]
        if covered.size >= 2:
            merges[pred_ids[p]] = tuple(sorted(gt_ids[g] for g in covered))
    splits: dict[int, tuple[int, ...]] = {}
    partners = ov.pred_partner
    for g in np.unique(partners[partners >= 0]):
        pieces = np.flatnonzero(partners == g)
        if pieces.size >= 2:
            splits[gt_ids[g]] = tuple(pred_ids[p] for p in pieces)
    in_split = {p for ps in splits.values() for p in ps}
    tp = set(base.tp)
    kinds = {
        pid: "merge" if pid in merges else "split" if pid in in_split else "TP" if pid in tp else "FP"
        for pid in pred_ids
    }
    return GlandOutcomes(kinds, tuple(base.fn), merges, splits, tuple(base.tp))
