"""Tests for glandseg_core.export: tables, QuPath GeoJSON and overlays."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from glandseg_core.export import (
    DISAGREEMENT_COLOURS,
    GLAND_COLUMNS,
    OUTCOME_COLOURS,
    colour_for,
    disagreement_map,
    gland_table,
    highlight,
    outcome_overlay,
    overlay,
    to_geojson,
)


def shoelace(ring: list[list[int]]) -> float:
    """Signed area of a closed ring of [x, y] points (positive = counter-clockwise in x/y order)."""
    pts = np.asarray(ring, dtype=float)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def polygons_of(feature: dict) -> list[list[list[list[int]]]]:
    geometry = feature["geometry"]
    if geometry["type"] == "Polygon":
        return [geometry["coordinates"]]
    assert geometry["type"] == "MultiPolygon"
    return geometry["coordinates"]


def check_geometry(feature: dict, mask: np.ndarray) -> None:
    """Closed rings, CCW shells, CW holes, no repeated vertex, area = pixels, one polygon per piece."""
    total = 0.0
    polygons = polygons_of(feature)
    for polygon in polygons:
        for k, ring in enumerate(polygon):
            assert ring[0] == ring[-1] and len(ring) >= 5
            assert len({tuple(p) for p in ring[:-1]}) == len(ring) - 1
            area = shoelace(ring)
            assert area > 0 if k == 0 else area < 0
            total += area
    assert total == pytest.approx(mask.sum())
    assert len(polygons) == ndimage.label(mask)[1]


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


# ----------------------------------------------------------------------------------------------- table


def test_gland_table_columns_and_areas(scene: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = scene
    table = gland_table(labels)
    assert list(table.columns) == GLAND_COLUMNS
    assert table["id"].tolist() == [2, 5, 9]
    assert table["area"].tolist() == [200, 150, 36]
    row = table.iloc[0]
    assert (row["centroid_row"], row["centroid_col"]) == pytest.approx((9.5, 19.5))
    bbox = ["bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col"]
    assert row[bbox].tolist() == [5, 10, 15, 30]
    assert table["solidity"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert (table["eccentricity"] < 1).all() and (table["perimeter"] > 0).all()


def test_gland_table_empty_map() -> None:
    table = gland_table(np.zeros((10, 10), np.int32))
    assert table.empty and list(table.columns) == GLAND_COLUMNS


# --------------------------------------------------------------------------------------------- GeoJSON


def test_geojson_square_is_traced_on_pixel_corners() -> None:
    labels = np.zeros((10, 12), np.int32)
    labels[2:5, 5:8] = 4
    collection = to_geojson(labels)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 1
    feature = collection["features"][0]
    assert feature["geometry"] == {
        "type": "Polygon",
        "coordinates": [[[5, 2], [8, 2], [8, 5], [5, 5], [5, 2]]],
    }
    check_geometry(feature, labels == 4)


def test_geojson_properties_for_qupath(scene: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = scene
    collection = json.loads(json.dumps(to_geojson(labels, name="Tumour gland")))  # JSON-serialisable
    features = collection["features"]
    assert [f["properties"]["gland_id"] for f in features] == [2, 5, 9]
    props = features[1]["properties"]
    assert props["objectType"] == "annotation"
    assert props["name"] == "gland 5"
    assert props["classification"]["name"] == "Tumour gland"
    assert len(props["classification"]["color"]) == 3
    assert props["area"] == 150
    for feature in features:
        check_geometry(feature, labels == feature["properties"]["gland_id"])


def test_geojson_l_shape_and_hole() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[2:12, 2:5] = 1
    labels[9:12, 5:10] = 1  # an L: 30 + 15 = 45 px
    labels[13:19, 3:9] = 2
    labels[15:17, 5:7] = 0  # a ring with a 2×2 hole: 36 - 4 = 32 px
    features = to_geojson(labels)["features"]
    l_shape, ring = features
    assert l_shape["geometry"]["type"] == "Polygon"
    assert len(l_shape["geometry"]["coordinates"][0]) == 7  # 6 corners + closing point
    assert shoelace(l_shape["geometry"]["coordinates"][0]) == 45
    assert len(ring["geometry"]["coordinates"]) == 2  # shell + hole
    assert shoelace(ring["geometry"]["coordinates"][1]) == -4
    check_geometry(l_shape, labels == 1)
    check_geometry(ring, labels == 2)


def test_geojson_split_id_is_a_multipolygon() -> None:
    labels = np.zeros((12, 12), np.int32)
    labels[1:4, 1:4] = 3
    labels[7:11, 6:11] = 3
    feature = to_geojson(labels)["features"][0]
    assert feature["geometry"]["type"] == "MultiPolygon"
    assert sorted(shoelace(p[0]) for p in feature["geometry"]["coordinates"]) == [9, 20]
    assert feature["properties"]["area"] == 29


def test_geojson_diagonal_touches() -> None:
    checker = np.zeros((4, 4), np.int32)
    checker[1, 1] = checker[2, 2] = 1  # two pixels touching at one corner: two polygons
    feature = to_geojson(checker)["features"][0]
    assert feature["geometry"]["type"] == "MultiPolygon"
    check_geometry(feature, checker == 1)
    pocket = np.zeros((6, 6), np.int32)
    pocket[1:5, 1:5] = 1
    pocket[2, 2] = pocket[3, 3] = 0  # background pocket closed only at a corner: a hole touching itself
    feature = to_geojson(pocket)["features"][0]
    assert feature["geometry"]["type"] == "Polygon"
    check_geometry(feature, pocket == 1)


@settings(max_examples=150, deadline=None)
@given(mask=arrays(np.bool_, st.tuples(st.integers(1, 9), st.integers(1, 9))))
def test_geojson_area_matches_pixels_for_any_mask(mask: np.ndarray) -> None:
    features = to_geojson(mask.astype(np.int32) * 7)["features"]
    assert len(features) == int(mask.any())
    if features:
        check_geometry(features[0], mask)


def test_geojson_empty_map() -> None:
    assert to_geojson(np.zeros((5, 5), np.int32)) == {"type": "FeatureCollection", "features": []}


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
