"""Tests for glandseg_core.transforms: image and labels move together; targets for both models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.color import hed2rgb, rgb2hed

from glandseg_core.transforms import (
    POLICIES,
    augment,
    maskrcnn_target,
    shift_stains,
    unet_targets,
)
from tests.helpers import make_glands

pytestmark = pytest.mark.usefixtures("one_thread")


def colour_coded(h: int = 48, w: int = 72) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A label map of 12 blocks (ids 3, 6, 9, ...) and an image whose colour is a function of the id."""
    labels = np.zeros((h, w), np.int32)
    k = 0
    for r in range(0, h, 16):
        for c in range(0, w, 18):
            k += 1
            labels[r + 2 : r + 14, c + 1 : c + 15 - (k % 3)] = 3 * k
    palette = np.zeros((labels.max() + 1, 3), np.uint8)
    palette[:, 0] = np.arange(len(palette)) * 7 % 256
    palette[:, 1] = 255 - np.arange(len(palette)) * 5 % 256
    palette[:, 2] = np.arange(len(palette)) * 11 % 256
    return palette[labels], labels, palette


@pytest.mark.parametrize("policy", ["none", "flip"])
@pytest.mark.parametrize("crop", [0, 32, 48])
def test_exact_policies_keep_image_and_labels_aligned(policy: str, crop: int) -> None:
    image, labels, palette = colour_coded()
    seen_flip = False
    for seed in range(12):
        im2, lab2 = augment(image, labels, policy, np.random.default_rng(seed), crop=crop)
        assert im2.dtype == np.uint8 and lab2.dtype == np.int32
        assert im2.shape == ((crop, crop, 3) if crop else image.shape)
        assert lab2.shape == im2.shape[:2]
        assert im2.flags.c_contiguous and lab2.flags.c_contiguous
        np.testing.assert_array_equal(im2, palette[lab2])  # every pixel's colour still names its id
        if not crop:
            seen_flip |= np.array_equal(lab2, labels[:, ::-1])
            if policy == "none":
                np.testing.assert_array_equal(lab2, labels)
    if policy == "flip" and not crop:
        assert seen_flip


def test_crop_is_a_window_of_the_original() -> None:
    image, labels, _ = colour_coded()
    _, lab2 = augment(image, labels, "none", np.random.default_rng(5), crop=32)
    windows = [
        (r, c)
        for r in range(labels.shape[0] - 31)
        for c in range(labels.shape[1] - 31)
        if np.array_equal(labels[r : r + 32, c : c + 32], lab2)
    ]
    assert windows


def test_input_is_not_modified() -> None:
    image, labels = make_glands(64, 96, seed=1)
    im0, lab0 = image.copy(), labels.copy()
    for policy in POLICIES:
        augment(image, labels, policy, np.random.default_rng(0), crop=48)
    np.testing.assert_array_equal(image, im0)
    np.testing.assert_array_equal(labels, lab0)


@pytest.mark.parametrize("crop", [0, 64, 96])
def test_strong_policy(crop: int) -> None:
    image, labels = make_glands(128, 160, n=5, seed=3)
    ids = set(np.unique(labels))
    for seed in range(6):
        im2, lab2 = augment(image, labels, "strong", np.random.default_rng(seed), crop=crop)
        assert im2.dtype == np.uint8 and lab2.dtype == np.int32
        assert im2.shape == ((crop, crop, 3) if crop else image.shape)
        assert lab2.shape == im2.shape[:2]
        assert set(np.unique(lab2)) <= ids  # nearest-neighbour labels: ids never blend into new values
        # Alignment: gland interiors stay dark purple, stroma interiors stay light (colour jitter is mild).
        grey = im2.astype(np.float32).mean(axis=-1)
        inside = ndi.binary_erosion(lab2 > 0, iterations=2)
        outside = ndi.binary_erosion(lab2 == 0, iterations=2)
        if inside.any():
            assert (grey[inside] < 150).mean() > 0.98
        if outside.any():
            assert (grey[outside] > 150).mean() > 0.98


def test_strong_is_reproducible_with_the_same_seed() -> None:
    image, labels = make_glands(96, 128, n=5, seed=4)
    a = augment(image, labels, "strong", np.random.default_rng(42), crop=64)
    b = augment(image, labels, "strong", np.random.default_rng(42), crop=64)
    c = augment(image, labels, "strong", np.random.default_rng(43), crop=64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_unknown_policy_lists_the_valid_ones() -> None:
    image, labels = make_glands()
    with pytest.raises(ValueError, match="none, flip, strong"):
        augment(image, labels, "heavy", np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- targets


def test_unet_targets_band_width_and_touching_glands() -> None:
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:30] = 1  # 20x20 square
    labels[10:30, 30:50] = 7  # touches gland 1 along column 29|30
    t1 = unet_targets(labels, 1)
    assert t1.dtype == np.float32 and t1.shape == (2, 40, 60)
    np.testing.assert_array_equal(t1[0], labels > 0)
    assert not (t1[1] > t1[0]).any()  # contour lies inside the glands
    # The touching columns are contour on both sides, so gland interiors do not touch.
    assert t1[1][10:30, 29].all() and t1[1][10:30, 30].all()
    interior = (t1[0] > 0) & (t1[1] == 0)
    assert ndi.label(interior)[1] == 2
    assert t1[1][labels == 1].sum() == 20 * 20 - 18 * 18  # a 1-pixel ring
    t2 = unet_targets(labels, 2)
    assert t2[1][labels == 1].sum() == 20 * 20 - 16 * 16  # a 2-pixel ring
    assert not (t2[1] > t2[0]).any()


def test_unet_targets_empty() -> None:
    t = unet_targets(np.zeros((8, 9), np.int32), 2)
    assert t.shape == (2, 8, 9) and not t.any()


def test_maskrcnn_target_boxes_and_masks() -> None:
    labels = np.zeros((30, 40), np.int32)
    labels[2:10, 5:15] = 4  # box x1=5, y1=2, x2=15, y2=10
    labels[20:25, 30:33] = 9
    labels[20:22, 2:4] = 9  # a second piece of gland 9: one object, one box around both
    labels[15, 10:20] = 12  # one pixel high: dropped
    t = maskrcnn_target(labels)
    assert t["masks"].dtype == np.uint8 and t["masks"].shape == (2, 30, 40)
    assert t["boxes"].dtype == np.float32 and t["labels"].dtype == np.int64
    np.testing.assert_array_equal(t["boxes"], [[5, 2, 15, 10], [2, 20, 33, 25]])
    np.testing.assert_array_equal(t["labels"], [1, 1])
    np.testing.assert_array_equal(t["masks"][0], labels == 4)
    np.testing.assert_array_equal(t["masks"][1], labels == 9)


def test_maskrcnn_target_empty() -> None:
    t = maskrcnn_target(np.zeros((16, 20), np.int32))
    assert t["masks"].shape == (0, 16, 20) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_maskrcnn_target_matches_torchvision_masks_to_boxes(
    synthetic_glands: tuple[np.ndarray, np.ndarray],
) -> None:
    import torch
    from torchvision.ops import masks_to_boxes

    _, labels = synthetic_glands
    t = maskrcnn_target(labels)
    ref = masks_to_boxes(torch.from_numpy(t["masks"]).bool()).numpy()
    # torchvision's boxes use the last pixel (inclusive); ours end one past it, like slicing.
    np.testing.assert_array_equal(t["boxes"][:, :2], ref[:, :2])
    np.testing.assert_array_equal(t["boxes"][:, 2:], ref[:, 2:] + 1)


def test_shift_stains_scales_and_offsets_each_stain_density() -> None:
    rng = np.random.default_rng(0)
    hed = rng.uniform(0.01, 0.05, (16, 16, 3)) * [1, 1, 0]  # haematoxylin and eosin, no DAB
    image = hed2rgb(hed)
    same = shift_stains(image, np.ones(3), np.zeros(3))
    assert same.shape == image.shape and np.allclose(same, image, atol=1e-6)
    scale, offset = np.array([0.5, 1.6, 1.0]), np.array([0.0, 0.01, 0.0])
    out = shift_stains(image, scale, offset)
    assert np.allclose(rgb2hed(out), hed * scale + offset, atol=1e-4)
    relative = shift_stains(image, np.ones(3), offset, relative=True)
    assert np.allclose(rgb2hed(relative), hed + offset * hed.max(axis=(0, 1)), atol=1e-4)
    as_uint8 = shift_stains(np.rint(image * 255).astype(np.uint8), scale, offset)
    assert as_uint8.min() >= 0 and as_uint8.max() <= 1 and np.abs(as_uint8 - out).max() < 0.02


def test_a_mirrored_copy_is_a_gland_of_its_own_and_an_edge_gland_keeps_its_id() -> None:
    from glandseg_core.transforms import mirrored_apart

    labels = np.zeros((10, 16), np.int32)
    inside = np.zeros_like(labels, bool)
    inside[:, 4:] = True  # columns 0..3 are the mirror
    labels[2:5, 1:3] = 1  # a copy of gland 1, not touching the inside
    labels[2:5, 6:8] = 1  # gland 1 itself
    labels[6:9, 2:7] = 2  # gland 2 cut by the edge, with its mirror half
    out = mirrored_apart(labels, inside)
    assert set(np.unique(out[2:5, 1:3])) == {3} and set(np.unique(out[2:5, 6:8])) == {1}
    assert set(np.unique(out[6:9, 2:7])) == {2}
    assert np.array_equal(out > 0, labels > 0)
    assert np.array_equal(mirrored_apart(labels, np.ones_like(inside)), labels)


def test_strong_mirror_crops_reflect_the_image_where_they_reach_past_its_edge() -> None:
    from glandseg_core.transforms import POLICIES, augment

    image, labels = make_glands(96, 128, n=6, seed=3)
    rng = np.random.default_rng(0)
    whites = mirrors = 0
    for _ in range(12):
        img_w, _lab = augment(image, labels, "strong", rng, crop=96)
        img_m, _lab = augment(image, labels, "strong-mirror", rng, crop=96)
        whites += int((img_w == 255).all(axis=2).sum())
        mirrors += int((img_m == 255).all(axis=2).sum())
    assert whites > 1000 and mirrors == 0
    assert POLICIES["strong-mirror"].outside == "mirror" and POLICIES["strong"].outside == "white"
