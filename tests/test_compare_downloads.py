"""Compare's downloads: glands numbered 1..N in every file, GeoJSON areas in µm² with the pixel size."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from glandseg_core.imaging.io import read_label_map
from glandseg_dashboard import panels


def files(labels: np.ndarray, scale: float, mpp: float | None) -> dict[str, object]:
    view = np.zeros((*labels.shape, 3), np.uint8)
    return {label: make() for label, make, *_ in panels.download_files(labels, view, "x", scale, mpp)}


def test_downloads_number_glands_1_to_n_and_carry_areas_in_square_micrometres() -> None:
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 2:7] = 9  # 20 px
    labels[10:13, 10:20] = 4  # 30 px
    out = files(labels, 1.0, 0.5)
    saved = read_label_map(io.BytesIO(out["Label map"]))
    assert sorted(np.unique(saved)) == [0, 1, 2] and saved[3, 3] == 2 and saved[11, 11] == 1
    geo = json.loads(out["GeoJSON"])
    props = {f["properties"]["gland_id"]: f["properties"] for f in geo["features"]}
    assert set(props) == {1, 2}
    assert props[2]["area"] == 20 and props[2]["area_um2"] == pytest.approx(20 * 0.25)
    assert props[2]["measurements"]["Area µm^2"] == pytest.approx(5.0) and props[2]["mpp"] == 0.5
    assert "area_um2" in out["CSV"]


def test_downsampled_work_reports_the_original_images_pixels_and_pixel_size() -> None:
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 2:7] = 1  # 20 working pixels = 80 original pixels at scale 2
    geo = json.loads(files(labels, 2.0, 0.25)["GeoJSON"])
    props = geo["features"][0]["properties"]
    assert props["area"] == 80 and props["mpp"] == 0.25
    assert props["area_um2"] == pytest.approx(80 * 0.25**2)


def test_without_a_pixel_size_the_geojson_stays_in_pixels() -> None:
    labels = np.zeros((10, 10), np.int32)
    labels[2:5, 2:5] = 3
    props = json.loads(files(labels, 1.0, None)["GeoJSON"])["features"][0]["properties"]
    assert props["gland_id"] == 1 and "area_um2" not in props and "mpp" not in props
    assert Image.open(io.BytesIO(files(labels, 1.0, None)["Label map"])).size == (10, 10)
