"""The models shipped in trained_models/ load and segment a bundled sample into a plausible number of glands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.infer import load_run, predict
from glandseg_core.io import read_image, read_label_map
from glandseg_core.metrics import score_image

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "trained_models"
SAMPLE = ROOT / "samples" / "testA_1.png"


@pytest.mark.parametrize("name", ["unet", "maskrcnn"])
def test_shipped_model_segments_a_sample(name: str) -> None:
    model_dir = MODELS / name
    assert (model_dir / "weights.pt").is_file(), f"{model_dir} is not shipped"
    run = load_run(model_dir, device="cpu")
    image = read_image(SAMPLE)
    gt = read_label_map(SAMPLE.with_name("testA_1_anno.png"), shape=image.shape[:2])
    labels = predict(run, image)
    assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
    n_pred, n_gt = len(np.unique(labels)) - 1, len(np.unique(gt)) - 1
    assert 0.5 * n_gt <= n_pred <= 2 * n_gt, (n_pred, n_gt)
    assert score_image(labels, gt).f1 > 0.5


@pytest.mark.parametrize("name", ["unet", "maskrcnn"])
def test_shipped_model_folder_is_complete(name: str) -> None:
    model_dir = MODELS / name
    for f in ("weights.pt", "config.json", "postprocess.json", "metrics.json", "per_image.csv", "MODEL_CARD.md"):
        assert (model_dir / f).is_file(), f
    assert (model_dir / "weights.pt").stat().st_size < 100 * 2**20
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert {"testA", "testB"} <= set(metrics)
    assert metrics["testA"]["n_images"] == 60 and metrics["testB"]["n_images"] == 20
