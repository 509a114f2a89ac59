"""The models shipped in trained_models/ load and segment the bundled samples into plausible glands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.imaging.io import read_image, read_label_map
from glandseg_core.metrics import score_image
from glandseg_core.segmenters import load_segmenter

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "trained_models"
SAMPLES = ROOT / "samples"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "maskrcnn"])
def test_shipped_model_segments_the_samples(name: str) -> None:
    """Every bundled sample gets a sensible segmentation; the gland count over the three is plausible.

    The count is checked over all samples together: on one image a model may merge a few touching glands
    (the U-Net finds 4 of testA_1's 9, the Mask R-CNN 4 of testA_13's 8), as the metrics report.
    """
    model_dir = MODELS / name
    assert (model_dir / "weights.pt").is_file(), f"{model_dir} is not shipped"
    segmenter = load_segmenter(model_dir, device="cpu")
    assert segmenter.kind == name
    n_pred = n_gt = 0
    for path in sorted(SAMPLES.glob("test*_[0-9]*.png")):
        if path.stem.endswith("_anno"):
            continue
        image = read_image(path)
        gt = read_label_map(path.with_name(f"{path.stem}_anno.png"), shape=image.shape[:2])
        labels = segmenter(image)
        assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
        assert score_image(labels, gt).f1 > 0.5, path.name
        n_pred += len(np.unique(labels)) - 1
        n_gt += len(np.unique(gt)) - 1
    assert n_gt >= 20, "the three bundled samples hold 24 annotated glands"
    assert 0.5 * n_gt <= n_pred <= 2 * n_gt, (n_pred, n_gt)


@pytest.mark.parametrize("name", ["unet", "maskrcnn"])
def test_shipped_model_folder_is_complete(name: str) -> None:
    model_dir = MODELS / name
    for f in (
        "weights.pt",
        "config.json",
        "postprocess.json",
        "metrics.json",
        "per_image.csv",
        "MODEL_CARD.md",
    ):
        assert (model_dir / f).is_file(), f
    assert (model_dir / "weights.pt").stat().st_size < 100 * 2**20
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert {"testA", "testB"} <= set(metrics)
    assert metrics["testA"]["n_images"] == 60 and metrics["testB"]["n_images"] == 20


def test_poster_recipe_folder_holds_scores_predictions_and_card() -> None:
    """The poster's recipe ships scores only (its R50 weights could not come back from the GPU)."""
    import pandas as pd

    model_dir = MODELS / "poster-maskrcnn"
    assert not (model_dir / "weights.pt").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["name"] == "poster-maskrcnn" and config["maskrcnn_backbone"] == "resnet50"
    assert (
        config["train_optimizer"] == "sgd"
        and config["train_lr"] == 0.005
        and config["train_lr_step_epochs"] == 3
    )
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["testA"]["n_images"] == 60 and metrics["testB"]["n_images"] == 20
    per_image = pd.read_csv(model_dir / "per_image.csv")
    assert len(per_image) == 80
    assert int(per_image.loc[per_image["split"] == "testA", "tp"].sum()) == metrics["testA"]["tp"]
    assert len(list((model_dir / "predictions").glob("test*_labels.png"))) == 80
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "Weights: not shipped" in card and "JPEG" in card
