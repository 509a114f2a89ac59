"""Post-processing of each segmenter: U-Net probabilities (``segmenters.unet.probs_to_labels``) and Mask
R-CNN detections (``segmenters.instances.masks_to_labels``) -> label maps. Settings: test_thresholds.py."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import relabel_sequential

from glandseg_core.segmenters.instances import masks_to_labels
from glandseg_core.segmenters.unet import number_kept, probs_to_labels, remove_small
from glandseg_core.thresholds import MaskRCNNPost, UNetPost
from glandseg_core.transforms import unet_targets

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"min_marker_area": 5, "min_area": 20}


def disc(shape: tuple[int, int], centre: tuple[float, float], r: float) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= r**2


def touching_discs() -> np.ndarray:
    """Two overlapping discs (ids 1, 2; the overlap split down the middle) on a 64×80 map."""
    a, b = disc((64, 80), (32, 26), 14), disc((64, 80), (32, 52), 14)
    labels = np.zeros((64, 80), np.int32)
    labels[a] = 1
    labels[b & (np.arange(80)[None] >= 39)] = 2
    labels[b & ~a] = 2
    return labels


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------ U-Net


def test_touching_discs_are_separated_by_the_contour_channel() -> None:
    gt = touching_discs()
    prob = unet_targets(gt, 2)  # a perfect network: gland = 1 on both discs, contour = 1 on the rims
    assert prob[0][32, 36:43].all()  # the discs really touch
    labels = probs_to_labels(prob, UNetPost(**SMALL))
    assert labels.dtype == np.int32 and labels.shape == gt.shape
    assert sorted(np.unique(labels)) == [0, 1, 2]
    np.testing.assert_array_equal(
        labels > 0, gt > 0
    )  # the watershed grows the markers back to the full mask
    for k in (1, 2):
        best = max(iou(labels == j, gt == k) for j in (1, 2))
        assert best > 0.9


def test_semantic_mode_merges_touching_discs() -> None:
    prob = unet_targets(touching_discs(), 2)
    labels = probs_to_labels(prob, UNetPost(instance=False, **SMALL))
    assert sorted(np.unique(labels)) == [0, 1]
    np.testing.assert_array_equal(labels > 0, touching_discs() > 0)


def test_without_a_contour_the_discs_merge_in_instance_mode() -> None:
    prob = unet_targets(touching_discs(), 2)
    prob[1] = 0
    assert probs_to_labels(prob, UNetPost(**SMALL)).max() == 1


def test_small_objects_are_removed_and_ids_are_consecutive() -> None:
    gt = np.zeros((64, 80), np.int32)
    gt[disc(gt.shape, (20, 20), 10)] = 1
    gt[disc(gt.shape, (45, 60), 3)] = 2  # ~29 px
    gt[disc(gt.shape, (50, 20), 9)] = 3
    prob = unet_targets(gt, 1)
    for instance in (True, False):
        post = UNetPost(instance=instance, min_marker_area=5, min_area=60)
        labels = probs_to_labels(prob, post)
        assert sorted(np.unique(labels)) == [0, 1, 2]
        assert not labels[gt == 2].any()
        kept = probs_to_labels(prob, UNetPost(instance=instance, min_marker_area=1, min_area=10))
        assert kept.max() == 3


def test_holes_are_filled() -> None:
    gt = np.zeros((40, 40), np.int32)
    gt[disc(gt.shape, (20, 20), 12)] = 1
    prob = unet_targets(gt, 2)
    prob[0][18:22, 18:22] = 0  # a lumen the network missed
    labels = probs_to_labels(prob, UNetPost(**SMALL))
    assert labels.max() == 1 and labels[20, 20] == 1


def test_gland_made_only_of_contour_is_kept() -> None:
    prob = np.zeros((2, 40, 40), np.float32)
    prob[0][5:30, 5:30] = 1
    prob[1][5:30, 5:30] = 1  # no marker at all
    labels = probs_to_labels(prob, UNetPost(**SMALL))
    assert labels.max() == 1 and (labels == 1).sum() == 25 * 25


def test_unet_empty_and_bad_shape() -> None:
    labels = probs_to_labels(np.zeros((2, 17, 23), np.float32), UNetPost())
    assert labels.shape == (17, 23) and labels.dtype == np.int32 and not labels.any()
    with pytest.raises(ValueError, match=r"\[2, H, W\]"):
        probs_to_labels(np.zeros((17, 23), np.float32), UNetPost())


# ------------------------------------------------------------------------------------------ Mask R-CNN


def square_masks(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """float32[N, H, W] probability masks: 0.9 inside (r0, r1, c0, c1), 0.1 outside."""
    masks = np.full((len(boxes), *shape), 0.1, np.float32)
    for m, (r0, r1, c0, c1) in zip(masks, boxes, strict=True):
        m[r0:r1, c0:c1] = 0.9
    return masks


def test_higher_score_wins_overlaps() -> None:
    masks = square_masks((50, 60), (5, 25, 5, 25), (15, 35, 15, 35))
    scores = np.array([0.7, 0.95], np.float32)
    labels = masks_to_labels(scores, masks, MaskRCNNPost(min_area=10))
    assert labels.dtype == np.int32 and labels.shape == (50, 60)
    assert labels[20, 20] == 1  # the overlap goes to the 0.95 instance, which gets id 1
    assert (labels == 1).sum() == 400 and (labels == 2).sum() == 400 - 100
    assert labels[10, 10] == 2


def test_min_visible_drops_mostly_hidden_instances() -> None:
    masks = square_masks((50, 60), (5, 25, 5, 25), (7, 27, 7, 27))  # 2nd: 400 px, 324 hidden by the 1st
    scores = np.array([0.9, 0.8], np.float32)
    assert masks_to_labels(scores, masks, MaskRCNNPost(min_area=10, min_visible=0.5)).max() == 1
    kept = masks_to_labels(scores, masks, MaskRCNNPost(min_area=10, min_visible=0.05))
    assert kept.max() == 2 and (kept == 2).sum() == 400 - 324


def test_score_threshold_and_min_area() -> None:
    masks = square_masks((50, 60), (0, 20, 0, 20), (30, 40, 30, 40), (25, 45, 40, 60))
    scores = np.array([0.9, 0.8, 0.3], np.float32)
    labels = masks_to_labels(scores, masks, MaskRCNNPost(score_thresh=0.5, min_area=150))
    assert labels.max() == 1  # the 100-px square is too small, the 0.3 one is below the threshold
    labels = masks_to_labels(scores, masks, MaskRCNNPost(score_thresh=0.2, min_area=50))
    assert labels.max() == 3 and labels[35, 50] == 3


def test_mask_threshold() -> None:
    masks = square_masks((30, 30), (5, 20, 5, 20))
    assert masks_to_labels(np.array([0.9]), masks, MaskRCNNPost(min_area=1, mask_thresh=0.95)).max() == 0
    assert (masks_to_labels(np.array([0.9]), masks, MaskRCNNPost(min_area=1)) == 1).sum() == 225


def test_four_dimensional_masks() -> None:
    masks = square_masks((30, 30), (5, 20, 5, 20))[:, None]
    assert masks_to_labels(np.array([0.9]), masks, MaskRCNNPost(min_area=1)).shape == (30, 30)


@pytest.mark.parametrize(
    "masks", [np.zeros((0, 33, 47), np.float32), np.zeros((0, 1, 33, 47), np.float32)]
)
def test_empty_detections_give_zeros_of_the_shape(masks: np.ndarray) -> None:
    labels = masks_to_labels(np.zeros(0, np.float32), masks, MaskRCNNPost(), shape=(33, 47))
    assert labels.shape == (33, 47) and labels.dtype == np.int32 and not labels.any()


def test_remove_small_keeps_ids_and_leaves_the_input_alone() -> None:
    labels = np.zeros((10, 10), np.int32)
    labels[:2, :2] = 1  # 4 px
    labels[5:, 5:] = 3  # 25 px
    out = remove_small(labels, 5)
    assert sorted(np.unique(out)) == [0, 3] and (out == 3).sum() == 25
    assert (labels == 1).sum() == 4  # not modified in place
    assert remove_small(labels, 0) is labels


@pytest.mark.parametrize("min_area", [0, 1, 4, 9, 30])
def test_number_kept_equals_remove_small_then_relabel_sequential(min_area: int) -> None:
    labels = np.zeros((12, 12), np.int32)  # ids 2, 5, 9 of 4, 9 and 16 pixels; no 1, 3, 4 ...
    labels[:2, :2], labels[4:7, :3], labels[8:, 8:] = 9, 5, 2
    expected = relabel_sequential(remove_small(labels, min_area))[0].astype(np.int32)
    areas = np.bincount(labels.ravel())
    for got in (number_kept(labels, min_area), number_kept(labels, min_area, areas)):
        assert got.dtype == np.int32 and np.array_equal(got, expected), min_area
    assert np.array_equal(number_kept(labels, 9), np.where(labels == 2, 1, np.where(labels == 5, 2, 0)))
