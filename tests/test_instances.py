"""Tests for glandseg_core.segmenters.instances (compact instances, the one painter, mask IoU) and
glandseg_core.segmenters.views (merging the views of one gland)."""

from __future__ import annotations

import numpy as np

from glandseg_core.segmenters.instances import (
    Instances,
    compact,
    concat,
    mask_boxes,
    mask_iou,
    masks_to_labels,
    paint,
    shift,
    survivors,
)
from glandseg_core.segmenters.views import merge_views
from glandseg_core.thresholds import MaskRCNNPost


def test_duplicates_keep_the_whole_view_and_paint_respects_min_visible() -> None:
    whole = np.ones((40, 40), bool)
    cut = np.ones((40, 15), bool)
    inst = Instances(
        scores=np.array([0.6, 0.95, 0.8], np.float32),
        boxes=np.array([[10, 10, 50, 50], [10, 10, 50, 25], [10, 45, 50, 85]], np.int64),
        masks=[whole, cut, whole.copy()],
        cut=np.array([False, True, False]),
    )
    windows = np.array([[0, 0, 60, 100], [0, 0, 60, 25], [0, 0, 60, 100]], np.int64)
    merged = merge_views(inst, windows)[0]
    assert len(merged) == 2  # the higher-scoring cut view of gland 1 is dropped for its whole view
    np.testing.assert_array_equal(np.sort(merged.scores), np.array([0.6, 0.8], np.float32))
    labels = paint(merged, MaskRCNNPost(score_thresh=0.5, min_area=10, min_visible=0.5), (60, 100))
    assert labels.max() == 2
    assert (labels == 1).sum() == 1600 and (labels == 2).sum() == 1600 - 5 * 40  # id 1: the higher score


def test_paint_matches_postprocess_on_full_masks() -> None:
    rng = np.random.default_rng(1)
    h, w, n = 80, 120, 12
    masks = np.zeros((n, h, w), np.float32)
    for i in range(n):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        masks[i, y : y + rng.integers(5, 30), x : x + rng.integers(5, 30)] = rng.uniform(0.3, 1.0)
    scores = rng.uniform(0.2, 1.0, n).astype(np.float32)
    post = MaskRCNNPost(score_thresh=0.4, mask_thresh=0.5, min_area=20, min_visible=0.6)
    expected = masks_to_labels(scores, masks, post, shape=(h, w))
    got = paint(compact(scores, masks, post), post, (h, w))
    np.testing.assert_array_equal(got, expected)


def test_each_window_keeps_only_what_painting_keeps() -> None:
    big = np.ones((50, 50), bool)
    inst = Instances(
        scores=np.array([0.9, 0.8, 0.7, 0.6], np.float32),
        boxes=np.array(
            [[0, 0, 50, 50], [5, 5, 55, 55], [0, 60, 50, 110], [100, 100, 102, 102]], np.int64
        ),
        masks=[big, big.copy(), big.copy(), np.ones((2, 2), bool)],
        cut=np.zeros(4, bool),
    )
    kept = survivors(inst, MaskRCNNPost(score_thresh=0.5, min_area=10, min_visible=0.5), (120, 120))
    # the second mostly overlaps the first, the fourth is too small: both never reach the merge
    np.testing.assert_array_equal(kept.scores, np.array([0.9, 0.7], np.float32))
    assert all(
        m.shape == (50, 50) and m.all() for m in kept.masks
    )  # whole masks, not just what they won


def test_mask_iou_matches_dense_computation() -> None:
    rng = np.random.default_rng(0)
    shape = (40, 60)
    boxes, masks, dense = [], [], []
    for _ in range(7):
        y0, x0 = rng.integers(0, 30), rng.integers(0, 45)
        y1, x1 = y0 + rng.integers(1, 10), x0 + rng.integers(1, 15)
        m = rng.random((y1 - y0, x1 - x0)) > 0.4
        full = np.zeros(shape, bool)
        full[y0:y1, x0:x1] = m
        boxes.append([y0, x0, y1, x1])
        masks.append(m)
        dense.append(full)
    d = np.stack(dense).reshape(7, -1).astype(float)
    inter = d @ d.T
    union = d.sum(1)[:, None] + d.sum(1)[None] - inter
    expected = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.testing.assert_allclose(mask_iou(np.array(boxes), masks, shape), expected)
    assert mask_iou(np.zeros((0, 4), np.int64), [], shape).shape == (0, 0)


def test_mask_boxes_are_end_exclusive() -> None:
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    np.testing.assert_array_equal(mask_boxes(masks), [[2, 3, 5, 9], [9, 11, 10, 12]])
    assert mask_boxes(np.zeros((0, 10, 12), bool)).shape == (0, 4)


def test_compact_keeps_what_painting_could_use_cropped_to_the_mask() -> None:
    masks = np.full((3, 20, 30), 0.1, np.float32)
    masks[0, 4:10, 5:15] = 0.9
    masks[1, 0:3, 0:3] = 0.9  # score below the threshold
    scores = np.array([0.8, 0.2, 0.7], np.float32)  # the third has no pixel above mask_thresh
    inst = compact(scores, masks, MaskRCNNPost(score_thresh=0.5, mask_thresh=0.5))
    assert len(inst) == 1 and inst.scores.tolist() == [np.float32(0.8)]
    np.testing.assert_array_equal(inst.boxes, [[4, 5, 10, 15]])
    assert inst.masks[0].shape == (6, 10) and inst.masks[0].all() and not inst.cut.any()


def test_shift_moves_to_image_coordinates_and_flags_inner_borders() -> None:
    inst = Instances(
        np.array([0.9, 0.8], np.float32),
        np.array([[0, 10, 5, 20], [10, 10, 20, 20]], np.int64),
        [np.ones((5, 10), bool), np.ones((10, 10), bool)],
        np.zeros(2, bool),
    )
    # a window at rows 50..100 of a 200-row image: its top row borders another window, its bottom too
    moved = shift(inst, slice(50, 100), slice(0, 40), (200, 40))
    np.testing.assert_array_equal(moved.boxes, [[50, 10, 55, 20], [60, 10, 70, 20]])
    assert moved.cut.tolist() == [True, False]
    # the same window at the image's top: row 0 is the image border, not a cut
    assert not shift(inst, slice(0, 50), slice(0, 40), (50, 40)).cut.any()
    both = concat([moved, inst])
    assert (
        len(both) == 4
        and both.boxes.shape == (4, 4)
        and both.cut.tolist() == [True, False, False, False]
    )
    assert len(concat([])) == 0


def test_two_cut_pieces_of_one_gland_are_joined() -> None:
    piece = np.ones((20, 30), bool)
    inst = Instances(
        np.array([0.9, 0.7], np.float32),
        np.array([[0, 0, 20, 30], [0, 10, 20, 40]], np.int64),  # they share 20 of their 30 columns
        [piece, piece.copy()],
        np.array([True, True]),
    )
    windows = np.array([[0, 0, 20, 30], [0, 10, 20, 40]], np.int64)
    merged, wins = merge_views(inst, windows)
    assert len(merged) == 1 and merged.cut.tolist() == [True]
    np.testing.assert_array_equal(wins, [[0, 0, 20, 40]])
    np.testing.assert_array_equal(merged.boxes, [[0, 0, 20, 40]])
    assert merged.masks[0].shape == (20, 40) and merged.masks[0].all()


def test_masks_to_labels_is_compact_then_paint() -> None:
    rng = np.random.default_rng(7)
    masks = rng.random((5, 30, 40)).astype(np.float32)
    scores = rng.random(5).astype(np.float32)
    post = MaskRCNNPost(score_thresh=0.3, min_area=5, min_visible=0.2)
    np.testing.assert_array_equal(
        masks_to_labels(scores, masks, post), paint(compact(scores, masks, post), post, (30, 40))
    )


def test_a_gland_larger_than_the_overlap_is_joined_not_cut() -> None:
    """A gland 300 px wide seen by two windows overlapping by 40 px: each view holds ~half of it, and they
    share only the 40 overlap columns (~13% of the smaller view). Compared inside the area both windows saw,
    they are the same gland (all of each view's part there is shared), so they are joined."""
    gland = np.zeros((60, 400), bool)
    gland[10:50, 50:350] = True
    left, right = gland[:, 0:220], gland[:, 180:400]
    inst = Instances(
        np.array([0.9, 0.8], np.float32),
        np.array([[10, 50, 50, 220], [10, 180, 50, 350]], np.int64),
        [left[10:50, 50:220], right[10:50, 0:170]],
        np.array([True, True]),
    )
    windows = np.array([[0, 0, 60, 220], [0, 180, 60, 400]], np.int64)
    merged = merge_views(inst, windows)[0]
    assert len(merged) == 1
    np.testing.assert_array_equal(merged.boxes, [[10, 50, 50, 350]])
    assert merged.masks[0].all()


def test_two_glands_meeting_in_the_overlap_stay_two() -> None:
    """Two cut glands that touch along a thin band inside the overlap share little of their overlap parts
    (100 of 1,000 pixels): kept apart."""
    a = np.ones((20, 100), bool)  # rows 0..20, cols 100..200: cut by window 1's right border
    b = np.ones((22, 150), bool)  # rows 18..40, cols 150..300: cut by window 2's left border
    inst = Instances(
        np.array([0.9, 0.8], np.float32),
        np.array([[0, 100, 20, 200], [18, 150, 40, 300]], np.int64),
        [a, b],
        np.array([True, True]),
    )
    windows = np.array([[0, 0, 40, 200], [0, 150, 40, 400]], np.int64)
    merged = merge_views(inst, windows)[0]
    assert len(merged) == 2


def test_a_cut_gland_that_another_window_saw_whole_without_finding_is_dropped() -> None:
    """Window A (cols 0..100) sees a gland cut by its right border; window B (cols 40..200) holds that whole
    area with context and found nothing there: B's reading wins. A cut gland no window holds whole stays."""
    from glandseg_core.segmenters.views import drop_unconfirmed, seen_whole

    inst = Instances(
        np.array([0.9, 0.8], np.float32),
        np.array([[10, 60, 30, 100], [10, 0, 30, 100]], np.int64),
        [np.ones((20, 40), bool), np.ones((20, 100), bool)],
        np.array([True, True]),
    )
    wins = np.array([[0, 0, 40, 100], [0, 0, 40, 100]], np.int64)
    every = np.array([[0, 0, 40, 100], [0, 40, 40, 200]], np.int64)
    assert seen_whole(inst.boxes, every, (40, 200)).tolist() == [True, False]
    kept, kept_wins = drop_unconfirmed(inst, wins, every, (40, 200))
    assert len(kept) == 1 and kept.boxes.tolist() == [[10, 0, 30, 100]] and len(kept_wins) == 1
    # a box reaching B's inner border (within CUT_MARGIN of col 40) is not held whole by B
    assert not seen_whole(np.array([[10, 42, 30, 100]]), every[1:], (40, 200)).any()
