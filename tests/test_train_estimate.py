"""Tests for glandseg_core.train.estimate: the time estimate of a run, post-processing tuning included."""

from __future__ import annotations

import math
from pathlib import Path

from glandseg_core.train.estimate import estimate_epoch
from glandseg_core.train.tune import base_post
from tests.helpers import VAL_NAMES, tiny_unet_config


def test_estimate_includes_the_tuning(fake_glas_dir: Path) -> None:
    cfg = tiny_unet_config()
    est = estimate_epoch(cfg, fake_glas_dir, steps=2, device="cpu")
    assert est["val_images"] == len(VAL_NAMES) and est["tune_points"] == len(base_post(cfg)[1])
    assert math.isfinite(est["tune_seconds"]) and est["tune_seconds"] > 0
    assert (
        est["epoch_seconds"] == est["train_seconds"] + est["val_seconds"]
    )  # an epoch, without the tuning
