"""Label-map validation, the per-image overlap (contingency) table, partners, TP and Dice terms, and the
one safe division and the one detection F1 that every glandseg figure uses.

Label maps follow the glandseg contract: 2-D integer arrays, 0 = background, 1, 2, ... are object ids.
Ids need not be consecutive, may exceed 255, and one id may cover several disconnected pieces (it is
still one object). Nothing here relabels by connectivity or casts ids to a narrower type. Pure numpy, no
I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Largest id (or table size) for which a lookup table / dense bincount replaces np.unique.
_DENSE_LIMIT = 1 << 20


def safe_divide(num: float, den: float, empty: float = 0.0) -> float:
    """num / den, or ``empty`` when den is 0 (an empty image or split)."""
    return float(num) / float(den) if den else float(empty)


def detection_scores(tp: int, fp: int, fn: int) -> tuple[float, float, float, float]:
    """(F1, precision, recall, F2) from detection counts, as docs/METRICS.md defines them.

    F1 = 2 TP / (2 TP + FP + FN), F2 = 5 TP / (5 TP + 4 FN + FP). All four are 1.0 when both sides are
    empty (tp = fp = fn = 0); otherwise a zero denominator gives 0.0.
    """
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0, 1.0
    return (
        safe_divide(2 * tp, 2 * tp + fp + fn),
        safe_divide(tp, tp + fp),
        safe_divide(tp, tp + fn),
        safe_divide(5 * tp, 5 * tp + 4 * fn + fp),
    )


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """Detection F1 from (summed) counts: 2 TP / (2 TP + FP + FN); 1.0 when all three are 0."""
    return detection_scores(tp, fp, fn)[0]


def as_label_map(x: np.ndarray, name: str = "label map") -> np.ndarray:
    """Checks one label map and returns it as a non-negative integer array (no copy when already one).

    Args:
        x: Label map (H, W); any integer dtype, bool (True = object 1), or float holding whole numbers.
            0 = background, 1, 2, ... are object ids.
        name: What to call the array in error messages.

    Returns:
        The same values as an integer ndarray (H, W) (bool becomes uint8, float becomes int64).

    Raises:
        ValueError: If the array is not 2-D, is not numeric, holds non-integer floats, or holds
            negative ids.
    """
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) label map, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not (np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(
                f"{name} is a float array with non-integer values; label ids must be integers"
            )
        if a.size and np.abs(a).max() >= 2.0**63:  # the cast would wrap it into a wrong (negative) id
            raise ValueError(f"{name} holds an id out of the integer range ({np.abs(a).max():g})")
        a = a.astype(np.int64)
    elif not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.size and np.issubdtype(a.dtype, np.signedinteger) and a.min() < 0:
        raise ValueError(
            f"{name} holds negative ids (min {a.min()}); 0 = background, objects are 1, 2, ..."
        )
    return a


def check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates a (prediction, ground truth) pair of label maps; see `as_label_map`.

    Raises:
        ValueError: On a bad map, or if the two shapes differ (the message names both shapes).
    """
    p = as_label_map(pred, "pred")
    g = as_label_map(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got pred {p.shape} and gt {g.shape}")
    return p, g


def compact_labels(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renumbers the ids of a validated label map to 1..n in increasing id order.

    The same renumbering as ``skimage.segmentation.relabel_sequential``, kept here because it is on the hot
    path of every score and counts the areas in the same pass: measured on a GlaS annotation (522 x 775)
    6.5 ms against 25.6 ms for ``relabel_sequential`` plus a bincount, and 151 ms against 419 ms on a 4 x 4
    tiling of it. ``glandseg_core.outputs.overlays`` and ``annotations`` use ``relabel_sequential``.

    Returns:
        (compact (H, W) intp with 0 = background and k = the k-th smallest id, ids (n,) original ids in
        increasing order, areas (n,) int64 pixel counts).
    """
    if a.size == 0:
        return np.zeros(a.shape, np.intp), np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(a.max())
    if top < _DENSE_LIMIT:
        flat = a.astype(np.intp, copy=False)
        counts = np.bincount(flat.ravel(), minlength=top + 1)
        ids = np.flatnonzero(counts)
        ids = ids[ids != 0]
        lut = np.zeros(top + 1, np.intp)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat], ids.astype(np.int64), counts[ids].astype(np.int64)
    uniq, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(a.shape).astype(np.intp, copy=False)
    if uniq[0] == 0:
        return inverse, uniq[1:], counts[1:].astype(np.int64)
    return inverse + 1, uniq, counts.astype(np.int64)


def first_by_max(
    rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the column with the largest count (ties: smallest column) and the count; -1 / 0: none."""
    partner = np.full(n_rows, -1, np.intp)
    inter = np.zeros(n_rows, np.int64)
    if rows.size:
        order = np.lexsort((cols, -counts, rows))
        r = rows[order]
        first = np.ones(r.size, bool)
        first[1:] = r[1:] != r[:-1]
        partner[r[first]] = cols[order][first]
        inter[r[first]] = counts[order][first]
    return partner, inter


@dataclass(frozen=True)
class Overlap:
    """Everything the metrics need from one (pred, gt) pair, built in one pass.

    Object indices below are 0-based positions in `pred_ids` / `gt_ids` (the compact maps hold
    index + 1). A partner index of -1 means "no partner" (the object overlaps only background on the
    other map).
    """

    shape: tuple[int, int]
    pred_map: np.ndarray  # (H, W) intp, 0 = background, k = object pred_ids[k - 1]
    gt_map: np.ndarray
    pred_ids: np.ndarray  # (n_pred,) original ids, increasing
    gt_ids: np.ndarray
    pred_area: np.ndarray  # (n_pred,) int64
    gt_area: np.ndarray
    pair_pred: np.ndarray  # (k,) pred index of each overlapping (pred, gt) pair
    pair_gt: np.ndarray  # (k,) gt index
    pair_count: np.ndarray  # (k,) int64 pixels in common
    pred_partner: np.ndarray  # (n_pred,) gt index or -1
    pred_inter: np.ndarray  # (n_pred,) |S_i ∩ partner|
    gt_partner: np.ndarray  # (n_gt,) pred index or -1
    gt_inter: np.ndarray

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return int(self.pred_ids.size)

    @property
    def n_gt(self) -> int:
        """Number of ground-truth objects."""
        return int(self.gt_ids.size)


def overlap(pred: np.ndarray, gt: np.ndarray) -> Overlap:
    """Validates a pair of label maps and builds its contingency table and partners.

    How it works: both maps are renumbered to 1..n, every pixel becomes the code p * (n_gt + 1) + g, and
    one bincount (or np.unique when the table would be huge) counts each overlapping (p, g) pair. The
    partner of an object is the other map's object with the largest count, ties to the smallest id
    (compact numbering keeps id order, so the smallest index is the smallest id).

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        The `Overlap` of the pair.

    Raises:
        ValueError: If either map is invalid or the shapes differ.
    """
    p, g = check_pair(pred, gt)
    pm, pred_ids, pred_area = compact_labels(p)
    gm, gt_ids, gt_area = compact_labels(g)
    n_p, n_g = pred_ids.size, gt_ids.size
    both = (pm > 0) & (gm > 0)
    codes = pm[both].astype(np.int64) * (n_g + 1) + gm[both]
    if (n_p + 1) * (n_g + 1) <= _DENSE_LIMIT:
        table = np.bincount(codes, minlength=(n_p + 1) * (n_g + 1))
        nz = np.flatnonzero(table)
        uniq, cnt = nz, table[nz]
    else:
        uniq, cnt = np.unique(codes, return_counts=True)
    rows = (uniq // (n_g + 1) - 1).astype(np.intp)
    cols = (uniq % (n_g + 1) - 1).astype(np.intp)
    cnt = cnt.astype(np.int64)
    pred_partner, pred_inter = first_by_max(rows, cols, cnt, n_p)
    gt_partner, gt_inter = first_by_max(cols, rows, cnt, n_g)
    return Overlap(
        shape=(int(p.shape[0]), int(p.shape[1])),
        pred_map=pm,
        gt_map=gm,
        pred_ids=pred_ids,
        gt_ids=gt_ids,
        pred_area=pred_area,
        gt_area=gt_area,
        pair_pred=rows,
        pair_gt=cols,
        pair_count=cnt,
        pred_partner=pred_partner,
        pred_inter=pred_inter,
        gt_partner=gt_partner,
        gt_inter=gt_inter,
    )


@dataclass(frozen=True)
class Terms:
    """Per-object detection and Dice terms of one image (docs/METRICS.md), indexed like `Overlap`."""

    ov: Overlap
    pred_tp: np.ndarray  # (n_pred,) bool
    gt_matched: np.ndarray  # (n_gt,) bool: partner of a TP prediction
    pred_dice: np.ndarray  # (n_pred,) float
    gt_dice: np.ndarray


def terms(pred: np.ndarray, gt: np.ndarray) -> Terms:
    """Validates a pair of label maps and computes its `Overlap` and per-object `Terms`.

    Args:
        pred: Predicted label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.
        gt: Ground-truth label map (H, W), same conventions.

    Returns:
        The `Terms`: which predictions are TP (cover > 50% of their partner), which GT objects are the
        partner of a TP, and each object's Dice with its partner (0 without one).

    Raises:
        ValueError: If either map is invalid or the shapes differ.
    """
    ov = overlap(pred, gt)
    has_p, has_g = ov.pred_partner >= 0, ov.gt_partner >= 0
    pp, gp = ov.pred_partner[has_p], ov.gt_partner[has_g]
    # TP: 2 * |S_i ∩ G_j| > |G_j| is "covers strictly more than 50% of its partner", in exact integers.
    pred_tp = np.zeros(ov.n_pred, bool)
    pred_tp[has_p] = 2 * ov.pred_inter[has_p] > ov.gt_area[pp]
    gt_matched = np.zeros(ov.n_gt, bool)
    gt_matched[ov.pred_partner[pred_tp]] = True
    pred_dice = np.zeros(ov.n_pred)
    pred_dice[has_p] = 2 * ov.pred_inter[has_p] / (ov.pred_area[has_p] + ov.gt_area[pp])
    gt_dice = np.zeros(ov.n_gt)
    gt_dice[has_g] = 2 * ov.gt_inter[has_g] / (ov.gt_area[has_g] + ov.pred_area[gp])
    return Terms(ov, pred_tp, gt_matched, pred_dice, gt_dice)
