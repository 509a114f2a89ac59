"""One-to-one IoU matching of instances (for AP and panoptic quality), after stardist's matching.py.

This is *not* the GlaS object F1 (see `glandseg_core.metrics.glas_f1`): matching here is one-to-one by
the Hungarian algorithm on IoU, and a pair counts when IoU >= `iou_thresh` (and IoU > 0). Pure numpy +
scipy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .overlap import overlap
from .overlap import safe_divide as _safe_divide  # 0.0 when the denominator is 0 (stardist convention)


@dataclass(frozen=True)
class MatchResult:
    """Counts and scores of one-to-one IoU matching (one image, or summed over a dataset).

    Attributes:
        iou_thresh: The threshold used; a matched pair counts when IoU >= iou_thresh (and IoU > 0).
        n_true: Ground-truth objects. n_pred: Predicted objects.
        tp: Matched pairs with IoU >= iou_thresh; fp = n_pred - tp; fn = n_true - tp.
        sum_matched_iou: Sum of the IoU of the tp pairs (sum it over images to pool).
        mean_matched_iou: sum_matched_iou / tp (0.0 when tp = 0).
        panoptic_quality: sum_matched_iou / (tp + fp / 2 + fn / 2) (0.0 when both maps are empty).
    """

    iou_thresh: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    sum_matched_iou: float
    mean_matched_iou: float
    panoptic_quality: float

    @property
    def precision(self) -> float:
        """tp / n_pred (0.0 when there are no predictions)."""
        return _safe_divide(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / n_true (0.0 when there is no ground truth)."""
        return _safe_divide(self.tp, self.tp + self.fn)

    @property
    def average_precision(self) -> float:
        """tp / (tp + fp + fn), the "AP" of stardist / the DSB 2018 at this threshold."""
        return _safe_divide(self.tp, self.tp + self.fp + self.fn)

    def as_dict(self) -> dict[str, float | int]:
        """Plain-Python dict of the fields plus precision, recall and average_precision."""
        d: dict[str, float | int] = asdict(self)
        d.update(precision=self.precision, recall=self.recall, average_precision=self.average_precision)
        return d


def _result(thresh: float, n_true: int, n_pred: int, tp: int, sum_iou: float) -> MatchResult:
    """Builds a MatchResult from counts."""
    fp, fn = n_pred - tp, n_true - tp
    return MatchResult(
        iou_thresh=float(thresh),
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        sum_matched_iou=float(sum_iou),
        mean_matched_iou=_safe_divide(sum_iou, tp),
        panoptic_quality=_safe_divide(sum_iou, tp + fp / 2 + fn / 2),
    )


def match_instances(y_true: np.ndarray, y_pred: np.ndarray, iou_thresh: float = 0.5) -> MatchResult:
    """Matches ground-truth and predicted instances one-to-one by IoU (Hungarian algorithm).

    How it works (stardist's matching.py): the cost of a pair is
    -(IoU >= thresh) - IoU / (2 * n_matched), with n_matched = min(n_true, n_pred). The first term makes
    the assignment maximise the number of pairs over the threshold; the second, always smaller than one
    such pair, breaks ties toward higher total IoU.

    Args:
        y_true: Ground-truth label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        y_pred: Predicted label map (H, W), same conventions. Ids need not be consecutive.
        iou_thresh: IoU a matched pair needs to count as a true positive (IoU >= iou_thresh), in [0, 1].
            Pairs that do not overlap at all never count, even with iou_thresh = 0.

    Returns:
        A `MatchResult` with tp, fp, fn, mean_matched_iou and panoptic_quality.

    Raises:
        ValueError: If a map is invalid, the shapes differ, or iou_thresh is outside [0, 1].
    """
    if not 0.0 <= iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in [0, 1], got {iou_thresh}")
    ov = overlap(y_pred, y_true)
    n_true, n_pred = ov.n_gt, ov.n_pred
    if ov.pair_count.size == 0:
        return _result(iou_thresh, n_true, n_pred, 0, 0.0)
    iou = np.zeros((n_true, n_pred))
    inter = ov.pair_count.astype(np.float64)
    union = ov.gt_area[ov.pair_gt] + ov.pred_area[ov.pair_pred] - inter
    iou[ov.pair_gt, ov.pair_pred] = inter / union
    over = iou >= iou_thresh
    if iou_thresh == 0.0:
        over &= iou > 0  # a pair with no overlap is never a match
    if not over.any():
        return _result(iou_thresh, n_true, n_pred, 0, 0.0)
    costs = -over.astype(np.float64) - iou / (2 * min(n_true, n_pred))
    rows, cols = linear_sum_assignment(costs)
    ok = over[rows, cols]
    return _result(iou_thresh, n_true, n_pred, int(ok.sum()), float(iou[rows, cols][ok].sum()))


def pool_matches(results: Sequence[MatchResult]) -> MatchResult:
    """Sums per-image match counts into one dataset-level result.

    As stardist's `matching_dataset(by_image=False)`: counts and matched IoU are summed, then divided.

    Args:
        results: Per-image results, all with the same iou_thresh.

    Returns:
        The pooled `MatchResult`.

    Raises:
        ValueError: If `results` is empty or the thresholds differ.
    """
    if not results:
        raise ValueError("pool_matches needs at least one MatchResult, got 0")
    thresholds = {r.iou_thresh for r in results}
    if len(thresholds) != 1:
        raise ValueError(f"all results must share one iou_thresh, got {sorted(thresholds)}")
    return _result(
        results[0].iou_thresh,
        sum(r.n_true for r in results),
        sum(r.n_pred for r in results),
        sum(r.tp for r in results),
        sum(r.sum_matched_iou for r in results),
    )
