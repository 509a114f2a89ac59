"""Tests for glandseg_core.outputs.export: tables and QuPath GeoJSON (overlays: tests/test_overlays.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from glandseg_core.outputs import export, overlays
from glandseg_core.outputs.export import GLAND_COLUMNS, gland_table, to_geojson


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


def test_overlay_names_are_re_exported() -> None:
    for name in (
        "overlay",
        "outcome_overlay",
        "disagreement_map",
        "highlight",
        "colour_for",
        "OUTCOME_COLOURS",
    ):
        assert getattr(export, name) is getattr(overlays, name)
