"""Tests for glandseg_core.outputs.overlays: colours (and their check against H&E and colour-blind vision), overlays,
the merge / split classification, outcome and disagreement maps, highlight."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from glandseg_core.metrics import object_outcomes
from glandseg_core.outputs.overlays import (
    DISAGREEMENT_COLOURS,
    GLAND_PALETTE,
    MODEL_COLOURS,
    OUTCOME_COLOURS,
    colour_for,
    compact_ids,
    disagreement_map,
    gland_colours,
    gland_outcomes,
    highlight,
    outcome_legend,
    outcome_overlay,
    overlay,
    palette,
)
from glandseg_core.outputs.overlays.palette import OUTLINE_DARK, TRUE_OUTLINE


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


def test_colours_are_stable_and_neighbours_differ() -> None:
    """Without its label map a gland's colour cycles by id (the map's own colouring: test_gland_identity)."""
    first = [colour_for(i) for i in range(1, 41)]
    assert first == [colour_for(i) for i in range(1, 41)]
    assert colour_for(8) == GLAND_PALETTE[1] == (75, 60, 0)  # a change of palette is deliberate
    assert set(first) == set(GLAND_PALETTE)
    for a, b in itertools.pairwise(first):
        assert a != b
    with pytest.raises(ValueError):
        colour_for(-1)


# ------------------------------------------------------------------------------ colours on H&E, colour-blind
# Thresholds (CIEDE2000): every colour >= 25 from haematoxylin, eosin and white as seen with normal vision and
# >= 15 as simulated for deuteranopia / protanopia; every two colours of a set >= 15 apart in all three visions,
# except two identity colours (olive and khaki) 14.6 apart for deuteranopes: identity colours only tell
# neighbours apart, and a dark line always separates touching glands. Between sets: test_gland_identity.py.

COLOUR_SETS = {
    **palette.colour_sets(),
    "model": MODEL_COLOURS,
    "disagreement": DISAGREEMENT_COLOURS,
}


@pytest.mark.parametrize("name", list(COLOUR_SETS))
def test_colours_stay_legible_on_he_and_for_colour_blind_readers(name: str) -> None:
    worst = palette.check(COLOUR_SETS[name])
    assert worst["stain normal"] >= 25, worst
    assert worst["stain deuteranopia"] >= 15 and worst["stain protanopia"] >= 15, worst
    for vision in palette.VISIONS:
        assert worst.get(f"pair {vision}", 99) >= (14.5 if name == "gland" else 15), (vision, worst)


def test_no_colour_is_red_pink_or_purple() -> None:
    """The hues that vanish on eosin (issue #14): hue angle in CIELAB outside 300..40 degrees (magenta
    through red), unless the colour is dark enough to read as brown."""
    from skimage.color import rgb2lab

    for colours in COLOUR_SETS.values():
        for c in colours.values():
            lightness, a, b = rgb2lab(np.float64(c).reshape(1, 1, 3) / 255)[0, 0]
            hue = np.degrees(np.arctan2(b, a)) % 360
            assert 40 <= hue <= 300 or lightness < 45, (c, hue)


def test_delta_e_and_simulation_agree_with_known_values() -> None:
    assert palette.delta_e((255, 255, 255), (255, 255, 255)) == 0.0
    assert palette.delta_e((0, 0, 0), (255, 255, 255)) == pytest.approx(100.0, abs=0.01)
    red, green = (255, 0, 0), (0, 128, 0)
    assert palette.delta_e(red, green) > 60  # far apart with normal vision ...
    assert (
        palette.delta_e(red, green, "deuteranopia") < palette.delta_e(red, green) / 2
    )  # ... not for all
    np.testing.assert_allclose(palette.simulate((255, 255, 255), "protanopia"), 1.0, atol=0.01)
    assert palette.hex_colour((30, 130, 255)) == "#1e82ff"
    assert "| gland | gland 1 |" in palette.report()


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
    assert tuple(out[5, 10]) == OUTLINE_DARK  # corner of gland 2: the dark outer ring
    assert tuple(out[6, 11]) == (1, 2, 3)  # then its own colour
    assert tuple(out[9, 20]) == tuple(image[9, 20])  # inside, no fill at alpha 0
    assert tuple(out[20, 40]) == OUTLINE_DARK and tuple(out[21, 41]) == colour_for(5, labels)
    full = overlay(image, labels, alpha=1.0, outlines=False)
    assert tuple(full[9, 20]) == colour_for(2, labels) == gland_colours(labels)[2]


def test_touching_glands_are_separated_by_a_dark_line() -> None:
    image = np.full((20, 40, 3), 200, np.uint8)
    labels = np.zeros((20, 40), np.int32)
    labels[2:18, 2:20], labels[2:18, 20:38] = 1, 7  # same colour by id (7 = 1 + 6), touching at col 20
    out = overlay(image, labels, alpha=0.4, outlines=True)
    assert colour_for(1) == colour_for(7)
    assert tuple(out[10, 19]) == tuple(out[10, 20]) == OUTLINE_DARK
    assert tuple(out[10, 18]) == colour_for(1, labels) != tuple(out[10, 21]) == colour_for(7, labels)


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
    old = SimpleNamespace(
        tp=(2,), fp=(5, 9), fn=(2,)
    )  # an old metrics.Outcomes: recomputed, same answer
    for outcomes in (None, old, gland_outcomes(pred, gt)):
        out = outcome_overlay(image, pred, gt, outcomes, alpha=1.0, outlines=False)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert tuple(out[9, 20]) == OUTCOME_COLOURS["TP"]
        assert tuple(out[30, 42]) == OUTCOME_COLOURS["FP"]
    missed = out[35, 67].astype(int)
    assert tuple(missed) != tuple(image[35, 67]) and missed[2] > missed[0]
    outlined = outcome_overlay(image, pred, gt, alpha=0.4, outlines=True)
    assert tuple(outlined[30, 60]) == OUTLINE_DARK and tuple(outlined[31, 61]) == OUTCOME_COLOURS["FN"]
    np.testing.assert_array_equal(outlined[(pred == 0) & (gt == 0)], image[(pred == 0) & (gt == 0)])


def _merge_and_split() -> tuple[np.ndarray, np.ndarray]:
    """GT glands 1 and 2 side by side, both covered by prediction 5 (a merge); GT gland 3 cut 60 / 40 into
    predictions 7 and 8 (a split); GT gland 4 with nothing on it; prediction 9 on background."""
    gt = np.zeros((30, 40), np.int32)
    gt[2:8, 2:8], gt[2:8, 9:15] = 1, 2
    gt[12:22, 2:12] = 3
    gt[2:8, 30:36] = 4
    pred = np.zeros_like(gt)
    pred[2:8, 2:15] = 5
    pred[12:22, 2:8], pred[12:22, 8:12] = 7, 8
    pred[25:28, 30:33] = 9
    return pred, gt


def test_gland_outcomes_name_merges_and_splits() -> None:
    pred, gt = _merge_and_split()
    k = gland_outcomes(pred, gt)
    assert k.pred == {5: "merge", 7: "split", 8: "split", 9: "FP"}
    assert k.merges == {5: (1, 2)} and k.splits == {3: (7, 8)}
    assert k.tp == (5, 7)  # the merge is a TP for its partner, the 60% piece for gland 3
    assert k.missed == (2, 4) and k.missed == object_outcomes(pred, gt).fn  # the GlaS FN, unchanged
    assert k.counts() == {"TP": 0, "merge": 1, "split": 2, "FP": 1, "FN": 2}
    assert k.merged_or_split_gt() == (1, 2, 3)


def test_gland_outcomes_edge_cases() -> None:
    gt = np.zeros((10, 10), np.int32)
    gt[0:10, 0:10] = 1
    halves = np.zeros_like(gt)
    halves[:, :5], halves[:, 5:] = 1, 2  # 50 / 50: neither piece covers more than half
    k = gland_outcomes(halves, gt)
    assert k.pred == {1: "split", 2: "split"} and k.missed == (1,) and k.tp == ()
    k = gland_outcomes(gt, gt)
    assert k.pred == {1: "TP"} and not (k.missed or k.merges or k.splits)
    k = gland_outcomes(np.zeros_like(gt), gt)
    assert k.pred == {} and k.missed == (1,)
    two = np.zeros_like(gt)
    two[0:4, :], two[6:10, :] = 3, 4
    assert gland_outcomes(np.where(gt > 0, 9, 0), two).pred == {9: "merge"}  # covers both glands whole
    half = np.zeros_like(gt)
    half[2:8, :] = 9  # exactly half of each of the two glands: no merge (each needs > 50%), and no TP
    assert gland_outcomes(half, two).pred == {9: "FP"}
    with pytest.raises(ValueError):
        gland_outcomes(gt[:5], gt)


def test_outcome_overlay_shows_merges_splits_and_ids() -> None:
    pred, gt = _merge_and_split()
    image = np.full((*gt.shape, 3), 200, np.uint8)
    out = outcome_overlay(image, pred, gt, alpha=1.0, outlines=False)
    assert tuple(out[4, 11]) == OUTCOME_COLOURS["merge"]
    assert tuple(out[16, 5]) == tuple(out[16, 10]) == OUTCOME_COLOURS["split"]
    assert tuple(out[26, 31]) == OUTCOME_COLOURS["FP"]
    lined = outcome_overlay(image, pred, gt, alpha=0.4, outlines=True)
    assert tuple(lined[4, 7]) == tuple(lined[4, 9]) == TRUE_OUTLINE  # the two glands inside the merge
    assert tuple(lined[12, 5]) == TRUE_OUTLINE  # the split gland's outline over its pieces
    assert tuple(lined[4, 31]) == OUTCOME_COLOURS["FN"]  # gland 4: missed, outside any merge / split
    with_ids = outcome_overlay(image, pred, gt, alpha=0.4, outlines=True, ids=True)
    assert (with_ids != lined).any()  # "Gland ids" works in outcome mode too
    legend = outcome_legend(gland_outcomes(pred, gt))
    assert list(legend.values()) == list(OUTCOME_COLOURS.values())
    assert any(name.startswith("merge") and name.endswith("×1") for name in legend)


def test_disagreement_map(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, a = scene
    b = np.zeros_like(a)
    b[5:15, 20:40] = 1  # overlaps the right half of gland 2 in a
    out = disagreement_map(image, a, b)
    assert out.shape == image.shape and out.dtype == np.uint8
    orange, cyan = (
        np.float32(DISAGREEMENT_COLOURS[k]) for k in ("A only", "B only")
    )  # the models' colours
    assert {"A only": MODEL_COLOURS["unet"], "B only": MODEL_COLOURS["maskrcnn"]} == DISAGREEMENT_COLOURS
    np.testing.assert_allclose(out[9, 12], np.rint(image[9, 12] * 0.15 + orange * 0.85), atol=1)
    np.testing.assert_allclose(out[9, 35], np.rint(image[9, 35] * 0.15 + cyan * 0.85), atol=1)
    # both: lightened, so that the darker model colour stands out against agreed glands too
    np.testing.assert_allclose(out[9, 25], np.rint(image[9, 25] * 0.45 + 255 * 0.55), atol=1)
    assert tuple(out[0, 0]) == tuple(image[0, 0])  # neither: unchanged


def test_highlight(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = scene
    out = highlight(image, labels, 5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[30, 42]) == tuple(image[30, 42])  # inside gland 5, off the outline
    assert (out[0, 0] < image[0, 0]).all()  # elsewhere dimmed
    assert tuple(out[20, 40]) == TRUE_OUTLINE and tuple(out[21, 41]) == OUTLINE_DARK  # outline
    with pytest.raises(ValueError, match="gland 4"):
        highlight(image, labels, 4)
