"""Tests for glandseg_dashboard.budget: the pixel budget, downsampling, and measurements back in original pixels (#15 item 4)."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.errors import ImageError
from glandseg_core.outputs import export
from glandseg_dashboard import budget
from tests.helpers import make_glands

Memory = namedtuple("Memory", "available total")


def test_the_budget_is_a_share_of_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLANDSEG_MEMORY_BUDGET_MB", raising=False)
    monkeypatch.delenv("GLANDSEG_MEMORY_FRACTION", raising=False)
    monkeypatch.setattr(budget.memory, "available_memory", lambda: 16 * 2**30)
    b = budget.current_budget()
    assert b.bytes == 4 * 2**30 and "25% of the 16.0 GiB available" in b.source
    # the 11000 x 9000 PNG needs more than a 4 GiB budget allows for either model
    assert b.max_pixels("unet") < 11000 * 9000 and b.max_pixels("maskrcnn") < 11000 * 9000
    assert b.max_pixels("unet", tta=True) < b.max_pixels("unet")
    assert budget.estimate_bytes("unet", b.max_pixels("unet")) <= b.bytes
    monkeypatch.setenv("GLANDSEG_MEMORY_BUDGET_MB", "1024")
    assert budget.current_budget().bytes == 2**30
    assert (
        budget.Budget(100 * 2**20, "tiny").max_pixels("maskrcnn") == 0
    )  # below the fixed cost: nothing


def test_fit_size_and_downsampling_keep_the_aspect_and_the_ids() -> None:
    assert budget.fit_size((9000, 11000), 11000 * 9000) == (9000, 11000)
    h, w = budget.fit_size((9000, 11000), 4_000_000)
    assert h * w <= 4_000_000 and abs(w / h - 11000 / 9000) < 0.01
    image, labels = make_glands(64, 96)
    small = budget.downsample(image, (32, 48))
    assert small.shape == (32, 48, 3) and small.dtype == np.uint8
    lab = budget.downsample_labels(labels, (32, 48))
    assert (
        lab.shape == (32, 48) and lab.dtype == np.int32 and set(np.unique(lab)) <= set(np.unique(labels))
    )


def test_measurements_of_a_downsampled_image_are_in_original_pixels() -> None:
    """Areas scale with the square of the factor, lengths and coordinates with the factor."""
    _, labels = make_glands(128, 192)
    small = budget.downsample_labels(labels, (64, 96))
    full, half = export.gland_table(labels), budget.to_original(export.gland_table(small), 2.0)
    merged = full.merge(half, on="id", suffixes=("", "_est"))
    assert np.allclose(merged["area_est"], merged["area"], rtol=0.1)
    assert np.allclose(merged["centroid_row_est"], merged["centroid_row"], atol=2.0)
    assert np.allclose(merged["bbox_max_col_est"], merged["bbox_max_col"], atol=2)
    assert budget.to_original(full, 1.0) is full
    geo = budget.geojson_to_original(export.to_geojson(small), 2.0)
    first = geo["features"][0]
    assert first["properties"]["area"] == half.loc[0, "area"]
    xs = [p[0] for p in first["geometry"]["coordinates"][0]]
    assert max(xs) <= 192 and max(xs) == half.loc[0, "bbox_max_col"]
    json.dumps(geo)  # still serialisable


def test_model_kind_reads_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model": "maskrcnn"}))
    assert budget.model_kind(tmp_path) == "maskrcnn"
    assert budget.model_kind(tmp_path / "missing") == ""


def test_the_dashboard_checks_the_pixel_size_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #23 item 1: testA_1 (0.4 MP) with a pixel size of 10 and a 1536 MB budget was accepted; the check
    now counts the pixels after resampling to the model's 0.62 µm/px, before any worker starts."""
    monkeypatch.setenv("GLANDSEG_MEMORY_BUDGET_MB", "1536")
    unet = Path(__file__).resolve().parents[1] / "trained_models" / "unet"
    assert budget.check_job(unet, (522, 775, 3), None, False, "testA_1") == 1536 * 2**20
    with pytest.raises(ImageError) as e:
        budget.check_job(unet, (522, 775, 3), 10.0, False, "testA_1 with U-Net")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "testA_1 with U-Net: 12500×8419 px at the model's 0.62 µm/px"
    )
    assert "GLANDSEG_MEMORY_BUDGET_MB" in msg and "up to" in msg
