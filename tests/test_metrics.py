"""Tests of glandseg_core.metrics against hand-computed GlaS cases (docs/METRICS.md).

Most cases use one-row maps (1, W): there an object is a set of columns, and for two intervals [a1, a2]
and [b1, b2] the Hausdorff distance is max(|a1 - b1|, |a2 - b2|), which keeps the expected values
checkable by hand.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import directed_hausdorff

from glandseg_core.metrics import (
    ImageScores,
    Outcomes,
    SplitScores,
    glas_f1,
    object_dice,
    object_hausdorff,
    object_outcomes,
    per_object_scores,
    pool_scores,
    score_image,
)
from glandseg_core.metrics.hausdorff import HausdorffCache
from glandseg_core.metrics.overlap import overlap
from tests.helpers import real_glas


def row(width: int, *objects: tuple[int, int, int]) -> np.ndarray:
    """A (1, width) int32 label map; each object is (id, first column, last column), inclusive."""
    out = np.zeros((1, width), np.int32)
    for k, a, b in objects:
        out[0, a : b + 1] = k
    return out


def square_case(pred_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A 10x10 ground-truth square in a 20x20 image; the prediction is its left `pred_cols` columns."""
    gt = np.zeros((20, 20), np.int32)
    gt[5:15, 5:15] = 1
    pred = np.zeros_like(gt)
    pred[5:15, 5 : 5 + pred_cols] = 1
    return pred, gt


# -------------------------------------------------------------- the docs/METRICS.md "Test cases" section


def test_identical_maps_are_perfect() -> None:
    gt = row(30, (1, 0, 4), (2, 10, 19), (7, 25, 27))
    s = score_image(gt, gt)
    assert (s.tp, s.fp, s.fn, s.n_gt, s.n_pred) == (3, 0, 0, 3, 3)
    assert (s.f1, s.object_dice, s.object_hausdorff) == (1.0, 1.0, 0.0)
    assert (s.pixel_iou, s.pixel_dice, s.count_score, s.precision, s.recall, s.f2) == (1, 1, 1, 1, 1, 1)


def test_left_six_columns_is_a_true_positive() -> None:
    pred, gt = square_case(6)
    s = score_image(pred, gt)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert s.f1 == 1.0
    assert s.object_dice == pytest.approx(0.75)  # 2 * 60 / (60 + 100) on both sides
    assert s.object_hausdorff == pytest.approx(4.0)  # GT column 14 is 4 columns from predicted column 10
    assert s.pixel_iou == pytest.approx(0.6)
    assert s.pixel_dice == pytest.approx(0.75)


def test_left_five_columns_is_exactly_half_so_not_a_true_positive() -> None:
    pred, gt = square_case(5)
    s = score_image(pred, gt)
    # The paper's FN = n_gt - TP = 1; the circulated F1score.m would count FN = 0 (G is S_1's partner).
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)
    assert s.f1 == 0.0
    assert glas_f1(pred, gt) == 0.0
    assert s.object_dice == pytest.approx(2 * 50 / 150)  # the partners still exist for Dice
    assert s.object_hausdorff == pytest.approx(5.0)
    assert object_outcomes(pred, gt) == Outcomes(tp=(), fp=(1,), fn=(1,))


def test_prediction_on_background_with_no_ground_truth() -> None:
    pred = row(30, (1, 3, 8))
    gt = np.zeros_like(pred)
    s = score_image(pred, gt)
    assert (s.tp, s.fp, s.fn, s.f1, s.object_dice) == (0, 1, 0, 0.0, 0.0)
    assert s.object_hausdorff == pytest.approx(math.sqrt(1 + 30**2))


def test_prediction_on_background_beside_ground_truth() -> None:
    pred, gt = row(30, (1, 20, 25)), row(30, (1, 0, 9))
    s = score_image(pred, gt)
    assert (s.tp, s.fp, s.fn, s.f1, s.object_dice) == (0, 1, 1, 0.0, 0.0)
    assert s.object_hausdorff == pytest.approx(20.0)  # nearest object on both sides: max(20, 16)


def test_empty_prediction() -> None:
    gt = np.zeros((30, 40), np.int32)
    gt[3:9, 4:12] = 5
    s = score_image(np.zeros_like(gt), gt)
    assert (s.tp, s.fp, s.fn, s.f1, s.object_dice) == (0, 0, 1, 0.0, 0.0)
    assert s.object_hausdorff == pytest.approx(50.0)  # the diagonal of a 30 x 40 image
    assert (s.precision, s.recall, s.f2, s.pixel_iou, s.pixel_dice, s.count_score) == (0, 0, 0, 0, 0, 0)


def test_one_object_split_sixty_forty() -> None:
    pred, gt = square_case(6)
    pred[5:15, 11:15] = 2
    s = score_image(pred, gt)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.f1 == pytest.approx(2 / 3)
    assert (s.precision, s.recall) == (0.5, 1.0)
    assert s.f2 == pytest.approx(5 / 6)  # 5 TP / (5 TP + 4 FN + FP)
    assert s.count_score == 0.5
    # pred side: S1 (60 px) Dice 0.75, S2 (40 px) Dice 80/140; gt side: G's partner S1, Dice 0.75
    assert s.object_dice == pytest.approx(0.5 * ((60 * 0.75 + 40 * 80 / 140) / 100 + 0.75))
    # H(S1, G) = 4, H(S2, G) = 6 (G's column 5 is 6 from S2's column 11)
    assert s.object_hausdorff == pytest.approx(0.5 * ((60 * 4 + 40 * 6) / 100 + 4))


# ------------------------------------------------------------------------------- empty-map conventions


def test_both_empty() -> None:
    z = np.zeros((7, 9), np.uint8)
    s = score_image(z, z)
    assert (s.n_gt, s.n_pred, s.tp, s.fp, s.fn) == (0, 0, 0, 0, 0)
    assert (s.f1, s.precision, s.recall, s.f2) == (1.0, 1.0, 1.0, 1.0)
    assert (s.object_dice, s.object_hausdorff) == (1.0, 0.0)
    assert (s.pixel_iou, s.pixel_dice, s.count_score) == (1.0, 1.0, 1.0)
    assert (glas_f1(z, z), object_dice(z, z), object_hausdorff(z, z)) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("pred_empty", [True, False])
def test_exactly_one_empty_both_ways(pred_empty: bool) -> None:
    full = np.zeros((6, 8), np.int32)
    full[1:3, 1:3], full[4:6, 5:8] = 3, 9
    pred, gt = (np.zeros_like(full), full) if pred_empty else (full, np.zeros_like(full))
    s = score_image(pred, gt)
    assert (s.f1, s.object_dice, s.pixel_iou, s.pixel_dice, s.count_score) == (0, 0, 0, 0, 0)
    assert s.object_hausdorff == pytest.approx(10.0)  # sqrt(6^2 + 8^2)
    assert object_hausdorff(pred, gt) == pytest.approx(10.0)
    assert (s.tp, s.fp, s.fn) == ((0, 0, 2) if pred_empty else (0, 2, 0))


# ---------------------------------------------------------------------------------- matching semantics


def test_partner_ties_go_to_the_smallest_label() -> None:
    # S_1 covers 3 px of G_7 and 3 px of G_3: its partner is G_3 (2 * 3 > 4, so a TP).
    pred, gt = row(20, (1, 2, 7)), row(20, (7, 0, 4), (3, 5, 8))
    rows = per_object_scores(pred, gt)
    assert rows[0]["partner"] == 3 and rows[0]["outcome"] == "TP"
    assert object_outcomes(pred, gt) == Outcomes(tp=(1,), fp=(), fn=(7,))
    # G_1 is covered by 3 px of S_9 and 3 px of S_4: its partner is S_4.
    rows = per_object_scores(row(20, (9, 0, 2), (4, 3, 5)), row(20, (1, 0, 5)))
    assert [(r["id"], r["partner"], r["outcome"]) for r in rows] == [
        (4, 1, "FP"),
        (9, 1, "FP"),
        (1, 4, "missed"),
    ]
    assert rows[-1] == {
        "side": "gt", "id": 1, "area": 6, "partner": 4, "dice": pytest.approx(2 / 3), "hausdorff": 3.0,
        "outcome": "missed",
    }  # fmt: skip


def test_prediction_covering_two_objects_partners_the_larger_overlap() -> None:
    pred, gt = row(30, (1, 0, 19)), row(30, (1, 0, 5), (2, 8, 19))
    s = score_image(pred, gt)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)  # partner G_2 (12 px), fully covered
    rows = per_object_scores(pred, gt)
    assert [r["partner"] for r in rows] == [2, 1, 1]
    assert rows[0]["dice"] == pytest.approx(24 / 32)
    # pred side: Dice(S1, G2) = 24/32; gt side: Dice(G1, S1) = 12/26 (6 px), Dice(G2, S1) = 24/32 (12 px)
    assert s.object_dice == pytest.approx(0.5 * (24 / 32 + (6 * 12 / 26 + 12 * 24 / 32) / 18))
    # H(S1, G2) = 8, H(G1, S1) = 14
    assert s.object_hausdorff == pytest.approx(0.5 * (8 + (6 * 14 + 12 * 8) / 18))


def test_fn_is_n_gt_minus_tp_not_unpartnered_gt() -> None:
    # G_1 (10 px) is S_1's partner but only 4/10 covered; G_2 is matched by S_2.
    # F1score.m would say FN = 0.
    pred, gt = row(40, (1, 0, 3), (2, 20, 29)), row(40, (1, 0, 9), (2, 20, 29))
    s = score_image(pred, gt)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.f1 == pytest.approx(0.5)
    assert object_outcomes(pred, gt) == Outcomes(tp=(2,), fp=(1,), fn=(1,))


def test_disconnected_pieces_sharing_an_id_are_one_object() -> None:
    gt = row(30, (5, 0, 4), (5, 20, 24))  # one gland id in two pieces
    pred = row(30, (1, 0, 4), (2, 20, 23))
    s = score_image(pred, gt)
    assert (s.n_gt, s.n_pred, s.tp, s.fp, s.fn) == (1, 2, 0, 2, 1)  # each piece covers at most half
    # one prediction covering both pieces is a perfect match
    joined = score_image(np.where(gt > 0, 1, 0), gt)
    assert (joined.tp, joined.f1, joined.object_dice, joined.object_hausdorff) == (1, 1.0, 1.0, 0.0)
    # H(S_1, G_5) = 24 - 4 = 20 across the gap; H(S_2, G_5) = 20 (G's column 0 to S_2's column 20)
    assert per_object_scores(pred, gt)[0]["hausdorff"] == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("dtype", "big"),
    [(np.int32, 2_000_000_000), (np.uint32, 4_000_000_000), (np.int64, 2**40), (np.uint64, 2**63 + 5)],
)
def test_large_ids(dtype: type[np.generic], big: int) -> None:
    small_pred, small_gt = row(40, (1, 0, 5), (2, 10, 12)), row(40, (1, 0, 9), (2, 30, 35))
    lut_pred: np.ndarray = np.array([0, 300, 70000], dtype)
    lut_gt: np.ndarray = np.array([0, 1000, big], dtype)
    pred, gt = lut_pred[small_pred], lut_gt[small_gt]
    assert score_image(pred, gt) == score_image(small_pred, small_gt)
    out = object_outcomes(pred, gt)
    assert out == Outcomes(tp=(300,), fp=(70000,), fn=(int(lut_gt[2]),))
    assert {r["id"] for r in per_object_scores(pred, gt)} == {300, 70000, 1000, int(lut_gt[2])}


def test_uint16_ids_above_255_are_not_truncated() -> None:
    gt = row(20, (256, 0, 4), (512, 10, 14)).astype(np.uint16)  # both would be 0 if cast to 8 bits
    s = score_image(gt, gt)
    assert (s.n_gt, s.tp) == (2, 2)


def test_unpartnered_object_uses_the_nearest_object_by_hausdorff() -> None:
    # S_1 (cols 10-13) overlaps nothing. G_1 (cols 0-9) touches it, but H(S_1, G_1) = max(10, 4) = 10;
    # G_2 (cols 16-19) is 2 columns away and H(S_1, G_2) = 6. The nearest by Hausdorff is G_2.
    pred, gt = row(30, (1, 10, 13)), row(30, (1, 0, 9), (2, 16, 19))
    rows = per_object_scores(pred, gt)
    assert [r["hausdorff"] for r in rows] == [6.0, 10.0, 6.0]
    assert [r["partner"] for r in rows] == [0, 0, 0]
    assert object_hausdorff(pred, gt) == pytest.approx(0.5 * (6 + (10 * 10 + 4 * 6) / 14))
    assert score_image(pred, gt).object_dice == 0.0


def test_nearest_ties_go_to_the_smallest_label() -> None:
    pred, gt = row(30, (1, 10, 12)), row(30, (7, 4, 6), (3, 16, 18))
    ov = overlap(pred, gt)
    cache = HausdorffCache(ov)
    j, h = cache.nearest_gt(0)
    assert (int(ov.gt_ids[j]), h) == (3, 6.0)


def test_hausdorff_is_euclidean_on_rows_and_columns() -> None:
    pred, gt = np.zeros((10, 10), np.int32), np.zeros((10, 10), np.int32)
    pred[0, 0], gt[3, 4] = 1, 1
    assert object_hausdorff(pred, gt) == pytest.approx(5.0)


def test_hausdorff_uses_interior_pixels_not_only_contours() -> None:
    # A disk inside a ring: the disk pixel farthest from the ring is its centre, an interior pixel.
    yy, xx = np.mgrid[:41, :41]
    r = np.hypot(yy - 20, xx - 20)
    gt = ((r >= 15) & (r <= 18)).astype(np.int32)
    pred = (r <= 8).astype(np.int32)
    a, b = np.argwhere(pred > 0), np.argwhere(gt > 0)
    expected = max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])
    assert object_hausdorff(pred, gt) == pytest.approx(expected)
    assert expected == pytest.approx(15.0)  # from the centre to the ring's inner edge


def test_hausdorff_matches_brute_force_on_random_objects() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        h, w = rng.integers(1, 30, 2)
        pred = rng.integers(0, 4, (h, w)) * (rng.random((h, w)) < rng.random())
        gt = rng.integers(0, 4, (h, w)) * (rng.random((h, w)) < rng.random())
        ov = overlap(pred, gt)
        cache = HausdorffCache(ov)
        for i in range(ov.n_pred):
            for j in range(ov.n_gt):
                a, b = np.argwhere(ov.pred_map == i + 1), np.argwhere(ov.gt_map == j + 1)
                ref = max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])
                assert cache.distance(i, j) == pytest.approx(ref, abs=1e-9)


@pytest.mark.skipif(
    not (real_glas() / "testA_1_anno.bmp").exists(),
    reason="GlaS data not available",
)
def test_hausdorff_matches_scipy_on_real_glands() -> None:
    # The reason we keep our own pruned search (metrics/hausdorff.py): same values as scipy's
    # directed_hausdorff on real gland shapes, every partner pair of an annotation and a moved copy.
    from PIL import Image
    from scipy import ndimage as ndi

    root = real_glas()
    gt = np.asarray(Image.open(root / "testA_1_anno.bmp")).astype(np.int32)
    pred = ndi.grey_erosion(np.roll(gt, (6, -4), (0, 1)), size=(7, 7))
    ov = overlap(pred, gt)
    cache = HausdorffCache(ov)
    pairs = [(i, int(j)) for i, j in enumerate(ov.pred_partner) if j >= 0]
    assert len(pairs) >= 5
    for i, j in pairs:
        a, b = np.argwhere(ov.pred_map == i + 1), np.argwhere(ov.gt_map == j + 1)
        assert cache.distance(i, j) == max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])


# ------------------------------------------------------------------------------------- split aggregation


def two_image_split() -> list[ImageScores]:
    """Image A: a 10-px GT predicted by its first 6 px. Image B: a 2-px GT missed, a 10-px GT exact."""
    a = score_image(row(30, (1, 0, 5)), row(30, (1, 0, 9)))
    b = score_image(row(30, (1, 10, 19)), row(30, (1, 0, 1), (2, 10, 19)))
    return [a, b]


def test_two_image_split_per_image_values() -> None:
    a, b = two_image_split()
    assert (a.tp, a.fp, a.fn, a.f1, a.object_dice, a.object_hausdorff) == (1, 0, 0, 1.0, 0.75, 4.0)
    assert (b.tp, b.fp, b.fn) == (1, 0, 1)
    assert b.f1 == pytest.approx(2 / 3)
    assert b.object_dice == pytest.approx(0.5 * (1 + 10 / 12))
    # G_1 has no partner: its nearest object is S_1, at max(10, 18)
    assert b.object_hausdorff == pytest.approx(0.5 * (0 + 2 * 18 / 12))


def test_pooled_versus_mean_aggregation() -> None:
    s = pool_scores(two_image_split())
    assert (s.n_images, s.tp, s.fp, s.fn) == (2, 2, 0, 1)
    assert s.pooled_f1 == pytest.approx(4 / 5)
    assert s.mean_f1 == pytest.approx((1 + 2 / 3) / 2)
    assert (s.precision, s.recall) == (1.0, pytest.approx(2 / 3))
    assert s.f2 == pytest.approx(10 / 14)
    # weights over all objects of the split: pred side 6 + 10 px, gt side 10 + 2 + 10 px
    assert s.pooled_object_dice == pytest.approx(
        0.5 * ((6 * 0.75 + 10) / 16 + (10 * 0.75 + 2 * 0 + 10) / 22)
    )
    assert s.mean_object_dice == pytest.approx((0.75 + 11 / 12) / 2)
    assert s.pooled_object_hausdorff == pytest.approx(0.5 * (6 * 4 / 16 + (10 * 4 + 2 * 18) / 22))
    assert s.mean_object_hausdorff == pytest.approx((4 + 1.5) / 2)
    assert s.mean_pixel_iou == pytest.approx((0.6 + 10 / 12) / 2)
    assert s.mean_count_score == pytest.approx((1 + 0.5) / 2)


def test_split_with_no_predicted_object_takes_the_ground_truth_side() -> None:
    c = score_image(np.zeros((1, 30), np.int32), row(30, (1, 0, 9)))  # pred empty, GT one object
    d = score_image(np.zeros((1, 30), np.int32), np.zeros((1, 30), np.int32))  # both empty
    s = pool_scores([c, d])
    assert (s.tp, s.fp, s.fn, s.pooled_f1, s.mean_f1) == (0, 0, 1, 0.0, 0.5)
    assert s.pooled_object_dice == 0.0  # the empty pred side takes the gt side's 0
    assert s.pooled_object_hausdorff == pytest.approx(math.sqrt(901))  # gt side: image C's diagonal
    assert (s.mean_object_dice, s.mean_object_hausdorff) == (0.5, pytest.approx(math.sqrt(901) / 2))


def test_split_of_empty_images_is_perfect() -> None:
    z = np.zeros((4, 4), np.int32)
    s = pool_scores([score_image(z, z), score_image(z, z)])
    assert (s.pooled_f1, s.pooled_object_dice, s.pooled_object_hausdorff) == (1.0, 1.0, 0.0)


def test_single_image_split_equals_the_image() -> None:
    pred, gt = square_case(6)
    pred[5:15, 11:15] = 2
    i, s = score_image(pred, gt), pool_scores([score_image(pred, gt)])
    assert (s.pooled_f1, s.mean_f1) == (i.f1, i.f1)
    assert s.pooled_object_dice == pytest.approx(i.object_dice) == s.mean_object_dice
    assert s.pooled_object_hausdorff == pytest.approx(i.object_hausdorff) == s.mean_object_hausdorff


def test_pool_scores_rejects_an_empty_list() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pool_scores([])


def test_as_dict_is_plain_python() -> None:
    a = two_image_split()[0]
    for d in (a.as_dict(), pool_scores([a]).as_dict()):
        assert all(type(v) in (int, float) for v in d.values())
    assert set(a.as_dict()) == {f.name for f in ImageScores.__dataclass_fields__.values()}
    assert set(pool_scores([a]).as_dict()) == set(SplitScores.__dataclass_fields__)


# -------------------------------------------------------------------------------------------- validation


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(4, 3\)"):
        score_image(np.zeros((3, 4), np.int32), np.zeros((4, 3), np.int32))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3), ()])
def test_non_2d_input_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        score_image(np.zeros(shape, np.int32), np.zeros(shape, np.int32))


def test_float_input_must_hold_integers() -> None:
    gt = row(10, (1, 0, 4)).astype(np.float32)
    assert score_image(gt, gt).f1 == 1.0
    with pytest.raises(ValueError, match="non-integer"):
        score_image(gt + 0.5, gt)
    with pytest.raises(ValueError, match="non-integer"):
        score_image(np.full((2, 2), np.nan), np.zeros((2, 2)))
    for huge in (1e19, -1e300):  # would wrap into a wrong id when cast to int64
        with pytest.raises(ValueError, match="out of the integer range"):
            score_image(np.full((2, 2), huge), np.zeros((2, 2)))


def test_negative_ids_and_non_numeric_input_are_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        score_image(np.full((2, 2), -1), np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="dtype"):
        score_image(np.full((2, 2), "a"), np.zeros((2, 2), np.int32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, bool])
def test_integer_dtypes_and_bool_agree(dtype: type) -> None:
    pred, gt = square_case(6)
    assert score_image(pred.astype(dtype), gt.astype(dtype)) == score_image(pred, gt)


# -------------------------------------------------------------------------------- property-based tests

label_maps = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda hw: st.tuples(
        arrays(np.int32, hw, elements=st.integers(0, 4)),
        arrays(np.int32, hw, elements=st.integers(0, 4)),
    )
)


def reference_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, float, float]:
    """A deliberately naive second implementation of docs/METRICS.md: (tp, fp, fn, dice, hausdorff)."""
    p_ids, g_ids = [int(i) for i in np.unique(pred) if i], [int(i) for i in np.unique(gt) if i]
    diag = math.hypot(*pred.shape)

    def partner(mask: np.ndarray, other: np.ndarray, ids: list[int]) -> int:
        counts = [(int(np.sum(mask & (other == k))), -k) for k in ids]
        best = max(counts, default=(0, 0))
        return -best[1] if best[0] > 0 else 0

    def haus(a: np.ndarray, b: np.ndarray) -> float:
        pa, pb = np.argwhere(a), np.argwhere(b)
        return max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])

    def side(mine: np.ndarray, my_ids: list[int], other: np.ndarray, other_ids: list[int]):
        dice = haus_sum = area_sum = 0.0
        for k in my_ids:
            m = mine == k
            j = partner(m, other, other_ids)
            area = m.sum()
            area_sum += area
            if j:
                o = other == j
                dice += area * 2 * np.sum(m & o) / (area + o.sum())
                haus_sum += area * haus(m, o)
            elif other_ids:
                haus_sum += area * min((haus(m, other == q), q) for q in other_ids)[0]
            else:
                haus_sum += area * diag
        return (dice / area_sum, haus_sum / area_sum) if my_ids else None

    tp = sum(
        1
        for k in p_ids
        if (j := partner(pred == k, gt, g_ids)) and 2 * np.sum((pred == k) & (gt == j)) > np.sum(gt == j)
    )
    sp, sg = side(pred, p_ids, gt, g_ids), side(gt, g_ids, pred, p_ids)
    if sp is None and sg is None:
        return 0, 0, 0, 1.0, 0.0
    sp, sg = sp or sg, sg or sp
    return tp, len(p_ids) - tp, len(g_ids) - tp, (sp[0] + sg[0]) / 2, (sp[1] + sg[1]) / 2


@settings(max_examples=150, deadline=None)
@given(label_maps)
def test_matches_a_naive_reference_implementation(maps: tuple[np.ndarray, np.ndarray]) -> None:
    pred, gt = maps
    s = score_image(pred, gt)
    tp, fp, fn, dice, haus = reference_scores(pred, gt)
    assert (s.tp, s.fp, s.fn) == (tp, fp, fn)
    assert s.object_dice == pytest.approx(dice, abs=1e-12)
    assert s.object_hausdorff == pytest.approx(haus, abs=1e-9)
    assert (glas_f1(pred, gt), object_dice(pred, gt)) == (s.f1, s.object_dice)
    assert object_hausdorff(pred, gt) == pytest.approx(s.object_hausdorff, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(label_maps)
def test_self_score_is_perfect(maps: tuple[np.ndarray, np.ndarray]) -> None:
    x = maps[0]
    s = score_image(x, x)
    assert (s.f1, s.object_dice, s.object_hausdorff, s.pixel_iou, s.count_score) == (1, 1, 0, 1, 1)
    assert s.tp == s.n_gt == s.n_pred and s.fp == s.fn == 0


def has_partner_ties(pred: np.ndarray, gt: np.ndarray) -> bool:
    """Whether some object has two equally large overlaps on the other map."""
    ov = overlap(pred, gt)
    table = np.zeros((ov.n_pred, ov.n_gt), np.int64)
    table[ov.pair_pred, ov.pair_gt] = ov.pair_count
    return any(
        (t > 0).any() and np.count_nonzero(t == t.max()) > 1 for t in (*table, *table.T)
    )  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(label_maps, st.randoms(use_true_random=False))
def test_invariant_to_relabelling(maps: tuple[np.ndarray, np.ndarray], rnd: random.Random) -> None:
    pred, gt = maps
    new_ids = np.array([0, 70000, 300, 9, 1000], np.int64)
    # increasing relabelling keeps even the tie-breaking: every field is identical
    assert score_image(np.sort(new_ids)[pred], np.sort(new_ids)[gt]) == score_image(pred, gt)
    # any permutation: identical as long as no partner choice is a tie
    assume(not has_partner_ties(pred, gt))
    perm = np.array([0, *rnd.sample(list(new_ids[1:]), 4)])
    assert score_image(perm[pred], new_ids[gt]).as_dict() == pytest.approx(
        score_image(pred, gt).as_dict()
    )


@settings(max_examples=60, deadline=None)
@given(label_maps)
def test_symmetry_under_swapping_pred_and_gt(maps: tuple[np.ndarray, np.ndarray]) -> None:
    pred, gt = maps
    s, t = score_image(pred, gt), score_image(gt, pred)
    assert (s.pixel_iou, s.pixel_dice, s.count_score) == (t.pixel_iou, t.pixel_dice, t.count_score)
    assert s.object_dice == pytest.approx(t.object_dice, abs=1e-15)
    assert s.object_hausdorff == pytest.approx(t.object_hausdorff, abs=1e-12)


# -------------------------------------------------------------------------------------- real GlaS labels

GLAS = real_glas()


@pytest.mark.skipif(not (GLAS / "testA_1_anno.bmp").exists(), reason="GlaS data not available")
def test_real_annotation_self_and_merged() -> None:
    from PIL import Image

    gt = np.asarray(Image.open(GLAS / "testA_1_anno.bmp")).astype(np.int32)
    s = score_image(gt, gt)
    assert (s.f1, s.object_dice, s.object_hausdorff) == (1.0, 1.0, 0.0)
    ids = np.unique(gt)[1:]
    lut = np.zeros(gt.max() + 1, np.int64)
    lut[ids] = 70000 + (ids + 1) // 2  # merge ids in pairs, ids > 255
    m = score_image(lut[gt], gt)
    assert m.n_pred == np.unique(lut[ids]).size and m.pixel_iou == 1.0
    assert m.tp + m.fn == ids.size and m.f1 < 1.0 and m.object_hausdorff > 0.0
