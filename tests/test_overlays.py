"""Tests for glandseg_core.overlays: colours, overlays, outcome and disagreement maps, highlight."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from glandseg_core.overlays import (
    DISAGREEMENT_COLOURS,
    OUTCOME_COLOURS,
    colour_for,
    compact_ids,
    disagreement_map,
    highlight,
    outcome_overlay,
    overlay,
)


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A pinkish 60×80 image with three rectangular glands (ids 2, 5 and 9)."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal((220, 160, 200), 10, (60, 80, 3)), 0, 255).astype(np.uint8)
    labels = np.zeros((60, 80), np.int32)
    labels[5:15, 10:30] = 2  # 10 × 20 = 200 px
    labels[20:50, 40:45] = 5  # 30 × 5 = 150 px
    labels[52:58, 2:8] = 9  # 6 × 6 = 36 px
    return image, labels


def test_compact_ids_keeps_id_order() -> None:
    labels = np.array([[0, 70000, 5], [3, 3, 0]], np.int64)
    ids, compact = compact_ids(labels)
    assert ids.tolist() == [3, 5, 70000] and compact.dtype == np.int32
    assert compact.tolist() == [[0, 3, 2], [1, 1, 0]]
    ids, compact = compact_ids(np.array([[2, 2], [7, 2]], np.uint16))  # no background at all
    assert ids.tolist() == [2, 7] and compact.tolist() == [[1, 1], [2, 1]]
    ids, compact = compact_ids(np.zeros((0, 4), np.int32))
    assert ids.size == 0 and compact.shape == (0, 4)


# -------------------------------------------------------------------------------------------- overlays


def test_colours_are_stable_distinct_and_bright() -> None:
    first = [colour_for(i) for i in range(1, 41)]
    assert first == [colour_for(i) for i in range(1, 41)]
    assert colour_for(7) == (89, 255, 192)  # a change of palette is deliberate, not accidental
    assert len(set(first)) == 40
    assert all(max(c) == 255 and all(0 <= v <= 255 for v in c) for c in first)
    for a, b in itertools.pairwise(first):
        assert sum(abs(x - y) for x, y in zip(a, b, strict=True)) > 60
    with pytest.raises(ValueError):
        colour_for(-1)


def test_overlay_shape_dtype_and_untouched_background(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = scene
    original = image.copy()
    for outlines in (False, True):
        out = overlay(image, labels, alpha=0.5, outlines=outlines)
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out[labels == 0], image[labels == 0])
        assert (out[labels > 0] != image[labels > 0]).any(axis=1).mean() > 0.9
    np.testing.assert_array_equal(image, original)  # the input is not modified
    np.testing.assert_array_equal(overlay(image, labels, alpha=0.0, outlines=False), image)


def test_overlay_outlines_and_custom_colours(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = scene
    out = overlay(image, labels, alpha=0.0, outlines=True, colours={2: (1, 2, 3)})
    assert tuple(out[5, 10]) == (1, 2, 3)  # corner of gland 2 is on its outline
    assert tuple(out[9, 20]) == tuple(image[9, 20])  # inside, no fill at alpha 0
    assert tuple(out[20, 40]) == colour_for(5)
    full = overlay(image, labels, alpha=1.0, outlines=False)
    assert tuple(full[9, 20]) == (colour_for(2))


def test_overlay_ids_draws_text(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = scene
    plain = overlay(image, labels)
    with_ids = overlay(image, labels, ids=True)
    assert with_ids.shape == plain.shape and with_ids.dtype == np.uint8
    assert (with_ids != plain).any()


def test_overlay_rejects_mismatched_shapes(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = scene
    with pytest.raises(ValueError):
        overlay(image, labels[:-1])
    with pytest.raises(ValueError):
        overlay(image.astype(np.float32), labels)
    with pytest.raises(ValueError):
        overlay(image, labels.astype(np.float32))


def test_outcome_overlay_colours(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, pred = scene
    gt = np.zeros_like(pred)
    gt[5:15, 10:30] = 1  # found by pred 2
    gt[30:40, 60:75] = 2  # missed
    outcomes = SimpleNamespace(tp=(2,), fp=(5, 9), fn=(2,))
    out = outcome_overlay(image, pred, gt, outcomes, alpha=1.0, outlines=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[9, 20]) == OUTCOME_COLOURS["TP"]
    assert tuple(out[30, 42]) == OUTCOME_COLOURS["FP"]
    missed = out[35, 67].astype(int)
    assert tuple(missed) != tuple(image[35, 67]) and missed[2] > missed[0]
    outlined = outcome_overlay(image, pred, gt, outcomes, alpha=0.4, outlines=True)
    assert tuple(outlined[30, 60]) == OUTCOME_COLOURS["FN"]
    np.testing.assert_array_equal(outlined[(pred == 0) & (gt == 0)], image[(pred == 0) & (gt == 0)])


def test_disagreement_map(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, a = scene
    b = np.zeros_like(a)
    b[5:15, 20:40] = 1  # overlaps the right half of gland 2 in a
    out = disagreement_map(image, a, b)
    assert out.shape == image.shape and out.dtype == np.uint8
    orange, cyan = (np.float32(DISAGREEMENT_COLOURS[k]) for k in ("A only", "B only"))
    np.testing.assert_allclose(out[9, 12], np.rint(image[9, 12] * 0.35 + orange * 0.65), atol=1)
    np.testing.assert_allclose(out[9, 35], np.rint(image[9, 35] * 0.35 + cyan * 0.65), atol=1)
    assert (out[9, 25] <= image[9, 25]).all() and (out[9, 25] < image[9, 25]).any()  # both: dimmed
    assert tuple(out[0, 0]) == tuple(image[0, 0])  # neither: unchanged


def test_highlight(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = scene
    out = highlight(image, labels, 5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[30, 42]) == tuple(image[30, 42])  # inside gland 5, off the outline
    assert (out[0, 0] < image[0, 0]).all()  # elsewhere dimmed
    assert tuple(out[20, 40]) != tuple(image[20, 40])  # outline
    with pytest.raises(ValueError, match="gland 4"):
        highlight(image, labels, 4)
