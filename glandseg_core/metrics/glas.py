"""GlaS challenge metrics (object F1, object Dice, object Hausdorff) and the figures glandseg reports.

Semantics follow docs/METRICS.md to the letter (Sirinukunwattana et al., MedIA 2017; F1score.m,
ObjectDice.m, ObjectHausdorff.m), with FN = n_gt - TP as in the paper. Inputs are label maps: 2-D integer
arrays (H, W), 0 = background, 1, 2, ... are object ids; ids need not be consecutive, may exceed 255, and
one id may cover several disconnected pieces (still one object). Nothing is relabelled by connectivity.
Pure numpy + scipy, no torch, no file I/O. The package ``glandseg_core.metrics`` re-exports every public
name of this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .hausdorff import hausdorff_terms
from .overlap import Overlap, Terms, overlap, terms
from .overlap import detection_scores as _detection
from .overlap import safe_divide as _safe_divide


def _weighted(
    ov: Overlap, pred_vals: np.ndarray, gt_vals: np.ndarray
) -> tuple[float, float, float, float]:
    """Area-weighted sums (sum |S_i| v_i, sum |S_i|, sum |G_j| w_j, sum |G_j|) of per-object values."""
    pa, ga = ov.pred_area.astype(np.float64), ov.gt_area.astype(np.float64)
    return float(pa @ pred_vals), float(pa.sum()), float(ga @ gt_vals), float(ga.sum())


def _two_sided(pred_num: float, pred_den: float, gt_num: float, gt_den: float, empty: float) -> float:
    """Mean of the two area-weighted sides; a side without objects takes the other's; none: `empty`."""
    if pred_den == 0 and gt_den == 0:
        return float(empty)
    pred_side = pred_num / pred_den if pred_den else gt_num / gt_den
    gt_side = gt_num / gt_den if gt_den else pred_side
    return 0.5 * (pred_side + gt_side)


@dataclass(frozen=True)
class ImageScores:
    """All scores of one image, plus the sums needed to pool object Dice / Hausdorff over a split.

    Attributes:
        n_gt, n_pred: Object counts.
        tp, fp, fn: GlaS detection counts (fp = n_pred - tp, fn = n_gt - tp).
        f1, precision, recall, f2: Detection scores (all 1.0 when both maps are empty).
        object_dice, object_hausdorff: The GlaS two-sided, area-weighted scores of this image.
        pixel_iou, pixel_dice: Of the foreground masks (both empty: 1.0).
        count_score: min(n_pred, n_gt) / max(n_pred, n_gt) (both zero: 1.0).
        dice_pred_num, dice_pred_den: sum_i |S_i| * Dice_i and sum_i |S_i| over predicted objects;
        dice_gt_num, dice_gt_den: the same over ground-truth objects; haus_*: the same for Hausdorff.
    """

    n_gt: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    f1: float
    precision: float
    recall: float
    f2: float
    object_dice: float
    object_hausdorff: float
    pixel_iou: float
    pixel_dice: float
    count_score: float
    dice_pred_num: float
    dice_pred_den: float
    dice_gt_num: float
    dice_gt_den: float
    haus_pred_num: float
    haus_pred_den: float
    haus_gt_num: float
    haus_gt_den: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain-Python dict of every field (ints and floats, no numpy scalars)."""
        return asdict(self)


@dataclass(frozen=True)
class SplitScores:
    """Scores of a split (Test A, Test B, or any set of images).

    Attributes:
        n_images: Images scored. tp, fp, fn: Summed over images.
        pooled_f1, pooled_object_dice, pooled_object_hausdorff: The official GlaS figures (counts and
            weights pooled over every object of the split; matching never crosses images).
        mean_*: Per-image means of each image's score.
        precision, recall, f2: From the pooled counts.
    """

    n_images: int
    tp: int
    fp: int
    fn: int
    pooled_f1: float
    pooled_object_dice: float
    pooled_object_hausdorff: float
    mean_f1: float
    mean_object_dice: float
    mean_object_hausdorff: float
    mean_pixel_iou: float
    mean_pixel_dice: float
    mean_count_score: float
    precision: float
    recall: float
    f2: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain-Python dict of every field (ints and floats, no numpy scalars)."""
        return asdict(self)


#: A split's headline figures, in report order (fields of :class:`SplitScores`): the official GlaS scores pooled
#: over the split, then the per-image means. Summaries, the test history and the GPU run's ``val.json`` use them.
HEADLINE_FIGURES: tuple[str, ...] = (
    "pooled_f1",
    "pooled_object_dice",
    "pooled_object_hausdorff",
    "mean_f1",
    "mean_object_dice",
    "mean_object_hausdorff",
)


def score_image(pred: np.ndarray, gt: np.ndarray) -> ImageScores:
    """Scores one predicted label map against its ground truth with every GlaS and glandseg metric.

    Args:
        pred: Predicted label map (H, W), any integer dtype or bool; 0 = background, 1, 2, ... are
            object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        The `ImageScores` of the image.

    Raises:
        ValueError: If a map is not 2-D, holds non-integer or negative values, or the shapes differ.
    """
    t = terms(pred, gt)
    return scores_of_terms(t, *hausdorff_terms(t.ov))


def scores_of_terms(t: Terms, pred_haus: np.ndarray, gt_haus: np.ndarray) -> ImageScores:
    """The `ImageScores` of an image from its `Terms` and per-object Hausdorff terms (`hausdorff_terms`)."""
    ov = t.ov
    tp = int(t.pred_tp.sum())
    fp, fn = ov.n_pred - tp, ov.n_gt - tp
    f1, precision, recall, f2 = _detection(tp, fp, fn)
    dice, haus = _weighted(ov, t.pred_dice, t.gt_dice), _weighted(ov, pred_haus, gt_haus)
    fg_p, fg_g = ov.pred_map > 0, ov.gt_map > 0
    inter = int(np.count_nonzero(fg_p & fg_g))
    n_fg_p, n_fg_g = int(np.count_nonzero(fg_p)), int(np.count_nonzero(fg_g))
    return ImageScores(
        n_gt=ov.n_gt,
        n_pred=ov.n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        f1=f1,
        precision=precision,
        recall=recall,
        f2=f2,
        object_dice=_two_sided(*dice, empty=1.0),
        object_hausdorff=_two_sided(*haus, empty=0.0),
        pixel_iou=_safe_divide(inter, n_fg_p + n_fg_g - inter, empty=1.0),
        pixel_dice=_safe_divide(2 * inter, n_fg_p + n_fg_g, empty=1.0),
        count_score=_safe_divide(min(ov.n_pred, ov.n_gt), max(ov.n_pred, ov.n_gt), empty=1.0),
        dice_pred_num=dice[0],
        dice_pred_den=dice[1],
        dice_gt_num=dice[2],
        dice_gt_den=dice[3],
        haus_pred_num=haus[0],
        haus_pred_den=haus[1],
        haus_gt_num=haus[2],
        haus_gt_den=haus[3],
    )


def pool_scores(scores: Sequence[ImageScores]) -> SplitScores:
    """Aggregates per-image scores over a split: pooled (official GlaS) and per-image means.

    How it works: pooled F1 sums TP / FP / FN over images; pooled object Dice and Hausdorff sum each
    side's area-weighted numerator and denominator over images, so the weights run over all objects of
    the split, then take the mean of the two sides (a side with no objects in the whole split takes the
    other's value).

    Args:
        scores: One `ImageScores` per image (from `score_image`).

    Returns:
        The `SplitScores` of the split.

    Raises:
        ValueError: If `scores` is empty.
    """
    if not scores:
        raise ValueError("pool_scores needs at least one ImageScores, got 0")
    n = len(scores)
    tp, fp, fn = (sum(getattr(s, k) for s in scores) for k in ("tp", "fp", "fn"))
    f1, precision, recall, f2 = _detection(tp, fp, fn)

    def total(field: str) -> float:
        return math.fsum(getattr(s, field) for s in scores)

    def mean(field: str) -> float:
        return total(field) / n

    def pooled(kind: str, empty: float) -> float:
        parts = (total(f"{kind}_{k}") for k in ("pred_num", "pred_den", "gt_num", "gt_den"))
        pred_num, pred_den, gt_num, gt_den = parts
        return _two_sided(pred_num, pred_den, gt_num, gt_den, empty)

    return SplitScores(
        n_images=n,
        tp=tp,
        fp=fp,
        fn=fn,
        pooled_f1=f1,
        pooled_object_dice=pooled("dice", empty=1.0),
        pooled_object_hausdorff=pooled("haus", empty=0.0),
        mean_f1=mean("f1"),
        mean_object_dice=mean("object_dice"),
        mean_object_hausdorff=mean("object_hausdorff"),
        mean_pixel_iou=mean("pixel_iou"),
        mean_pixel_dice=mean("pixel_dice"),
        mean_count_score=mean("count_score"),
        precision=precision,
        recall=recall,
        f2=f2,
    )


def glas_f1(pred: np.ndarray, gt: np.ndarray) -> float:
    """GlaS object-level F1 of one image (TP: covers > 50% of its partner; FN = n_gt - TP).

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        F1 in [0, 1]; 1.0 when both maps are empty, 0.0 when exactly one is.

    Raises:
        ValueError: If a map is invalid or the shapes differ.
    """
    t = terms(pred, gt)
    tp = int(t.pred_tp.sum())
    return _detection(tp, t.ov.n_pred - tp, t.ov.n_gt - tp)[0]


def object_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """GlaS object-level Dice of one image (two-sided, area-weighted; unpartnered objects score 0).

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        Object Dice in [0, 1]; 1.0 when both maps are empty, 0.0 when exactly one is.

    Raises:
        ValueError: If a map is invalid or the shapes differ.
    """
    t = terms(pred, gt)
    return _two_sided(*_weighted(t.ov, t.pred_dice, t.gt_dice), empty=1.0)


def object_hausdorff(pred: np.ndarray, gt: np.ndarray) -> float:
    """GlaS object-level Hausdorff distance of one image, in pixels (two-sided, area-weighted).

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        Object Hausdorff >= 0; 0.0 when both maps are empty, the image diagonal sqrt(H^2 + W^2) when
        exactly one is. An object without a partner is paired with the other map's object nearest by
        Hausdorff.

    Raises:
        ValueError: If a map is invalid or the shapes differ.
    """
    ov = overlap(pred, gt)
    return _two_sided(*_weighted(ov, *hausdorff_terms(ov)), empty=0.0)


@dataclass(frozen=True)
class Outcomes:
    """Detection outcome of every object of one image (original ids, increasing).

    Attributes:
        tp: Predicted ids that are true positives. fp: Predicted ids that are not.
        fn: Ground-truth ids that are no true-positive prediction's partner ("missed");
            len(fn) = n_gt - TP.
    """

    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]


def object_outcomes(pred: np.ndarray, gt: np.ndarray) -> Outcomes:
    """Which predicted objects are TP / FP and which ground-truth objects are missed.

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        The `Outcomes` of the image.

    Raises:
        ValueError: If a map is invalid or the shapes differ.
    """
    t = terms(pred, gt)
    ids_p, ids_g = t.ov.pred_ids, t.ov.gt_ids
    return Outcomes(
        tp=tuple(int(x) for x in ids_p[t.pred_tp]),
        fp=tuple(int(x) for x in ids_p[~t.pred_tp]),
        fn=tuple(int(x) for x in ids_g[~t.gt_matched]),
    )


def per_object_scores(pred: np.ndarray, gt: np.ndarray) -> list[dict[str, object]]:
    """One row per object on each side, with its partner and its own Dice / Hausdorff terms.

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        Predicted rows first, then ground-truth rows, each in increasing id order:
        {"side": "pred" | "gt", "id": int, "area": int, "partner": int (0 if none), "dice": float,
        "hausdorff": float, "outcome": "TP" | "FP" (pred) or "matched" | "missed" (gt)}.
        "hausdorff" is to the partner, else to the nearest object by Hausdorff, else the image diagonal.

    Raises:
        ValueError: If a map is invalid or the shapes differ.
    """
    t = terms(pred, gt)
    ov = t.ov
    pred_haus, gt_haus = hausdorff_terms(ov)
    rows: list[dict[str, object]] = []
    sides = (
        ("pred", ("FP", "TP"), ov.pred_ids, ov.pred_area, ov.pred_partner, ov.gt_ids),
        ("gt", ("missed", "matched"), ov.gt_ids, ov.gt_area, ov.gt_partner, ov.pred_ids),
    )
    values = ((t.pred_dice, pred_haus, t.pred_tp), (t.gt_dice, gt_haus, t.gt_matched))
    for (side, labels, ids, area, partner, other_ids), (dice, haus, good) in zip(
        sides, values, strict=True
    ):
        for k in range(ids.size):
            rows.append(
                {
                    "side": side,
                    "id": int(ids[k]),
                    "area": int(area[k]),
                    "partner": int(other_ids[partner[k]]) if partner[k] >= 0 else 0,
                    "dice": float(dice[k]),
                    "hausdorff": float(haus[k]),
                    "outcome": labels[int(good[k])],
                }
            )
    return rows
