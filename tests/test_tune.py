"""Tests for glandseg_core.train.tune: the grid search over post-processing thresholds on ``val``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from glandseg_core.config import PRESETS, RunConfig
from glandseg_core.kinds.maskrcnn import GRID as MASKRCNN_GRID
from glandseg_core.kinds.unet import GRID as UNET_GRID
from glandseg_core.kinds.unet import SEMANTIC_GRID as UNET_SEMANTIC_GRID
from glandseg_core.segmenters import make_segmenter
from glandseg_core.thresholds import MaskRCNNPost, UNetPost
from glandseg_core.train.tune import base_post, tune, tune_run
from tests.helpers import make_glands, tiny_unet_config


def test_base_settings_and_grid_of_each_kind() -> None:
    post, grid = base_post(tiny_unet_config())
    assert (
        post == UNetPost(instance=True) and len(grid) == 3 * 3 * 2 * 3 and set(grid[0]) == set(UNET_GRID)
    )
    post, grid = base_post(tiny_unet_config(unet_instance=False))
    assert (
        post == UNetPost(instance=False) and len(grid) == 9 and set(grid[0]) == set(UNET_SEMANTIC_GRID)
    )
    post, grid = base_post(PRESETS["glandseg-maskrcnn-cpu"])
    # the raw detections must cover the grid's lowest score threshold
    assert post == MaskRCNNPost(score_thresh=min(MASKRCNN_GRID["score_thresh"])) and len(grid) == 24


@dataclasses.dataclass
class _FakeSegmenter:
    """Its raw output is the ground truth; ``labels`` keeps it only with ``min_area == 300``."""

    cfg: RunConfig
    post: UNetPost
    kind: str = "unet"
    raw_calls: int = 0

    def raw(self, image: np.ndarray) -> np.ndarray:
        self.raw_calls += 1
        return make_glands(seed=int(image[0, 0, 0]))[1]

    def labels(self, raw: np.ndarray, post: Any = None) -> np.ndarray:
        return raw if post.min_area == 300 else np.zeros_like(raw)


def test_tune_picks_the_best_point_and_computes_raw_outputs_once() -> None:
    cfg = tiny_unet_config()
    val = []
    for seed in (1, 2, 3):
        image, labels = make_glands(seed=seed)
        image[0, 0, 0] = seed
        val.append((image, labels))
    segmenter = _FakeSegmenter(cfg, base_post(cfg)[0])  # type: ignore[arg-type]
    post, report = tune(segmenter, val)  # type: ignore[arg-type]
    assert segmenter.raw_calls == 3
    assert isinstance(post, UNetPost) and post.min_area == 300 and post.instance
    # ties keep the first grid point that reached the best objective
    assert (post.fg_thresh, post.contour_thresh, post.min_marker_area) == (0.4, 0.3, 20)
    assert report["val_f1"] == pytest.approx(1.0) and report["val_object_dice"] == pytest.approx(1.0)
    assert report["objective"] == pytest.approx(2.0) and report["grid_size"] == 54


class _TwoDetections(torch.nn.Module):
    """Mask R-CNN stand-in: a true gland scoring 0.9 and a false one scoring 0.35 (left and right halves)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        h, w = images[0].shape[-2:]
        masks = torch.zeros(2, 1, h, w)
        masks[0, 0, 10:40, 10:40] = 1.0
        masks[1, 0, 10:40, 60:90] = 1.0
        return [
            {
                "scores": torch.tensor([0.9, 0.35]),
                "masks": masks,
                "labels": torch.ones(2, dtype=torch.int64),
            }
        ]


def test_maskrcnn_raw_keeps_every_candidate_and_tuning_drops_the_false_one() -> None:
    cfg = PRESETS["glandseg-maskrcnn-cpu"]
    segmenter = make_segmenter(_TwoDetections(), cfg, base_post(cfg)[0], torch.device("cpu"))
    image = np.full((64, 100, 3), 200, np.uint8)
    raw = segmenter.raw(image)
    assert len(raw) == 2  # the 0.35 detection is kept for the grid's 0.3 threshold
    assert segmenter.labels(raw, post=MaskRCNNPost(score_thresh=0.3, min_area=100)).max() == 2
    truth = np.zeros((64, 100), np.int32)
    truth[10:40, 10:40] = 1
    post, report = tune(segmenter, [(image, truth)])
    assert isinstance(post, MaskRCNNPost) and post.score_thresh == 0.5  # the first threshold above 0.35
    assert report["val_f1"] == pytest.approx(1.0) and report["grid_size"] == 24


def test_tune_run_writes_postprocess_and_tuning(untrained_unet_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(untrained_unet_run, run_dir)
    val = [make_glands(seed=s) for s in (4, 5)]
    report = tune_run(run_dir, val, torch.device("cpu"))
    post = json.loads((run_dir / "postprocess.json").read_text())
    tuning = json.loads((run_dir / "tuning.json").read_text())
    assert tuning["post"] == post and set(post) == {f.name for f in dataclasses.fields(UNetPost)}
    assert tuning["best_epoch"] == report["best_epoch"] == 1  # best.pt holds epoch 0
    assert {"objective", "val_f1", "val_object_dice", "val_object_hausdorff", "grid_size"} <= set(tuning)
