"""Tests for glandseg_core.train.gpu_run / scripts/gpu_train.py: a CPU dry run of the GPU recipe (tiny U-Net, two
steps, the fake GlaS folder) writes a checkpoint, an fp16 model folder the normal loader reads, and val figures;
and the device augmentation keeps images and targets aligned."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from glandseg_core.evaluation import HISTORY_FIGURES, SUMMARY_KEYS
from glandseg_core.metrics import HEADLINE_FIGURES, SplitScores, pool_scores, score_image
from glandseg_core.segmenters import load_segmenter
from glandseg_core.train.gpu_augment import GpuAugment, augment, random_crops
from glandseg_core.train.gpu_run import GpuRun, _figures, _fit_schedule
from scripts import gpu_train
from tests.helpers import VAL_NAMES, tiny_unet_config

TINY = ["unet_base=4", "unet_depth=2", "train_crop_size=48", "train_batch_size=2", "train_amp=false"]


def test_cpu_dry_run_writes_checkpoint_fp16_model_and_val_figures(
    fake_glas_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(fake_glas_dir), "--out", str(out), "--device", "cpu", "--scale", "1.0"]
    assert gpu_train.main([*argv, "--max-steps", "2", "--set", *TINY]) == 0
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["config"]["unet_base"] == 4 and "optimizer" in ckpt
    weights = torch.load(out / "model" / "weights.pt", map_location="cpu", weights_only=True)["model"]
    convs = [v for k, v in weights.items() if k.endswith("weight") and v.ndim == 4]
    assert convs and all(v.dtype == torch.float16 for v in convs)
    assert all(v.dtype == torch.float32 for k, v in weights.items() if "running_" in k)
    assert (out / "model" / "weights.pt").stat().st_size < 20 * 2**20
    segmenter = load_segmenter(out / "model", device="cpu")
    labels = segmenter(np.full((48, 64, 3), 180, np.uint8))
    assert labels.shape == (48, 64) and labels.dtype == np.int32
    result = json.loads((out / "val.json").read_text())
    assert result["steps"] == 2 and result["images"] == len(VAL_NAMES) and result["device"] == "cpu"
    assert list(result["default"]) == ["post", *HEADLINE_FIGURES]
    for figures in (result["default"], result["tuned_on_val"]):
        values = [figures[k] for k in ("pooled_f1", "pooled_object_dice", "pooled_object_hausdorff")]
        assert all(math.isfinite(v) for v in values) and 0 <= values[0] <= 1
    tuned = json.loads((out / "model" / "postprocess.json").read_text())
    assert tuned == result["tuned_on_val"]["post"]
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]


def test_val_figures_are_the_headline_figures_that_summaries_start_with() -> None:
    gt = np.zeros((20, 20), np.int32)
    gt[2:8, 2:8], gt[10:18, 10:18] = 1, 2
    pred = np.where(gt == 2, 2, 0).astype(np.int32)  # one gland found, one missed
    split = pool_scores([score_image(pred, gt)])
    figures = _figures(split)
    assert tuple(figures) == HEADLINE_FIGURES
    assert figures == {k: float(split.as_dict()[k]) for k in HEADLINE_FIGURES}
    assert figures["pooled_f1"] == pytest.approx(2 / 3)
    assert set(HEADLINE_FIGURES) <= {f for f in SplitScores.__dataclass_fields__}
    assert tuple(SUMMARY_KEYS[: len(HEADLINE_FIGURES)]) == HEADLINE_FIGURES
    assert HISTORY_FIGURES[: len(HEADLINE_FIGURES)] == HEADLINE_FIGURES


def test_bad_set_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_train.main(["--out", str(tmp_path), "--set", "unet_base"]) == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err


def test_augmentation_moves_image_and_targets_together() -> None:
    """The target is the image's own first channel thresholded: after augmentation it must still match the
    image wherever the colour change cannot flip it (geometry shared, nearest sampling keeps 0/1)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.zeros(3, 80, 90, dtype=torch.uint8)
    image[:, 20:50, 10:40] = 255
    target = (image[:1].float() > 0).float()
    x, y = random_crops([image], [target], 6, 64, gen)
    assert x.shape == (6, 3, 64, 64) and y.shape == (6, 1, 64, 64)
    assert torch.equal((x[:, :1] > 0.5).float(), y)
    xa, ya = augment(x, y, GpuAugment(), gen)
    assert set(ya.unique().tolist()) <= {0.0, 1.0} and xa.min() >= 0 and xa.max() <= 1
    agree = ((xa[:, :1] > 0.5).float() == ya).float().mean()
    assert agree > 0.97  # only the resampled edges may differ


def test_schedule_shrinks_to_the_steps_that_fit() -> None:
    cfg = tiny_unet_config(train_epochs=50, train_steps_per_epoch=100)
    spec = GpuRun(minutes=6.0)
    # 30 steps done in 20 s at 0.1 s a step: 3400 more fit in the 340 s left, so 35 epochs of 100
    assert _fit_schedule(cfg, spec, 30, 20.0, 0.1).train_epochs == 35
    assert _fit_schedule(cfg, spec, 30, 20.0, 0.001).train_epochs == 50  # never more than asked
    assert _fit_schedule(cfg, spec, 30, 400.0, 0.1).train_epochs == 1  # out of time: what is done
