"""The fast tuning search gives exactly what the straightforward loop gives: staged U-Net post-processing
(segmenters/unet_grid.py) against probs_to_labels, ImageScorer against score_image, tune against the reference
loop (benchmarks/bench_tuning.py) for both kinds, and a stopped tuning that continues without re-scoring."""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from benchmarks.bench_tuning import reference_tune
from glandseg_core.config import PRESETS
from glandseg_core.errors import TrainingStopped
from glandseg_core.metrics import ImageScorer, score_image
from glandseg_core.progress import Step
from glandseg_core.segmenters import make_segmenter
from glandseg_core.segmenters.instances import compact
from glandseg_core.segmenters.unet import probs_to_labels
from glandseg_core.segmenters.unet_grid import StagedLabels, applies
from glandseg_core.thresholds import UNetPost
from glandseg_core.train import tune as tune_module
from glandseg_core.train.tune import GRID_UNIT, STATE, base_post, tune, tune_checkpoint
from glandseg_core.train.tune_pool import ScorePool, default_workers
from tests.helpers import garbage_cycle, make_glands, tiny_unet_config


def _probs(seed: int, channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noisy U-Net-like probabilities float32[C, 64, 96] of a synthetic label map, and the label map."""
    _, labels = make_glands(n=6, seed=seed)
    rng = np.random.default_rng(seed)
    fg = ndi.gaussian_filter((labels > 0).astype(np.float32), 1.5) + rng.normal(0, 0.15, labels.shape)
    edge = ndi.morphological_gradient(labels, size=3) > 0
    contour = ndi.gaussian_filter(edge.astype(np.float32), 1.0) * 2 + rng.normal(0, 0.1, labels.shape)
    chans = [fg, contour]
    if channels == 3:
        dist = np.zeros(labels.shape, np.float32)
        for k in range(1, labels.max() + 1):
            d = ndi.distance_transform_edt(labels == k)
            dist = np.maximum(dist, d / max(d.max(), 1))
        chans.append(dist + rng.normal(0, 0.05, labels.shape))
    return np.clip(np.stack(chans), 0, 1).astype(np.float32), labels


def _grid(channels: int, instance: bool = True) -> list[UNetPost]:
    """The kind's grid; with the separation head's channel, its marker threshold second (grid order)."""
    cfg = tiny_unet_config(unet_instance=instance)
    base, grid = base_post(cfg)
    if channels == 3:
        values = itertools.product((0.4, 0.6), (0.3, 0.5), (20, 80), (100, 300, 600))
        keys = ("fg_thresh", "marker_dist", "min_marker_area", "min_area")
        grid = [dict(zip(keys, v, strict=True)) for v in values]
    return [dataclasses.replace(base, **g) for g in grid]


@pytest.mark.parametrize(("channels", "instance"), [(2, True), (2, False), (3, True)])
def test_staged_labels_equal_probs_to_labels_on_every_grid_point(channels: int, instance: bool) -> None:
    if channels == 3 and "marker_dist" not in {f.name for f in dataclasses.fields(UNetPost)}:
        pytest.skip("no separation head in this UNetPost")
    prob, _ = _probs(seed=3, channels=channels)
    staged = StagedLabels(prob)
    posts = _grid(channels, instance)
    for post in posts:
        expected = probs_to_labels(prob, post)
        got = staged(post)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), post
    if instance:  # one watershed per (fg, markers) group at most, not one per grid point
        assert 0 < staged.watersheds <= len(posts) // 3


def test_image_scorer_equals_score_image_and_scores_repeats_once() -> None:
    _, gt = make_glands(n=6, seed=1)
    scorer = ImageScorer(gt)
    preds = [gt, np.zeros_like(gt), np.roll(gt, 3, axis=1), np.where(gt == 2, 0, gt), gt * 7, gt]
    preds.append(np.where(np.roll(gt, 5, axis=0) > 0, 1, 0))  # merged glands, shifted
    for pred in preds:
        assert scorer(pred) == score_image(pred, gt)
    assert scorer.scored == len(preds) - 1  # the last ``gt`` was seen already
    with pytest.raises(ValueError, match="same shape"):
        scorer(gt[:10])


def _unet_case() -> tuple[Any, list, list]:
    cfg = tiny_unet_config()
    segmenter = make_segmenter(torch.nn.Identity(), cfg, base_post(cfg)[0])
    cases = [_probs(seed) for seed in (4, 5, 6)]
    val = [(np.zeros((*lab.shape, 3), np.uint8), lab) for _, lab in cases]
    return segmenter, [p for p, _ in cases], val


def _maskrcnn_case() -> tuple[Any, list, list]:
    cfg = PRESETS["glandseg-maskrcnn-cpu"]
    post = base_post(cfg)[0]
    segmenter = make_segmenter(torch.nn.Identity(), cfg, post)
    raws, val = [], []
    for seed in (7, 8):
        _, lab = make_glands(n=6, seed=seed)
        rng = np.random.default_rng(seed)
        masks = [ndi.binary_dilation(lab == k, iterations=int(rng.integers(0, 3))) for k in range(1, 7)]
        masks.append(np.roll(lab == 1, 20, axis=1))  # a false detection
        scores = rng.uniform(0.3, 1.0, len(masks)).astype(np.float32)
        inst = compact(scores, np.stack(masks).astype(np.float32), post)
        raws.append(dataclasses.replace(inst, shape=lab.shape))
        val.append((np.zeros((*lab.shape, 3), np.uint8), lab))
    return segmenter, raws, val


@pytest.mark.parametrize("case", [_unet_case, _maskrcnn_case])
def test_tune_equals_the_reference_loop(case: Any) -> None:
    segmenter, raws, val = case()
    assert applies(segmenter, raws[0]) == (segmenter.kind == "unet")
    assert tune(segmenter, val, raws=raws) == reference_tune(segmenter, raws, [g for _, g in val])


def _stop_after(k: int) -> Any:
    def progress(step: Step) -> None:
        if step.unit == GRID_UNIT and step.done == k:
            raise TrainingStopped(f"stopped after {k} grid points")

    return progress


def test_stopped_tuning_continues_without_rescoring(
    untrained_unet_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    val = [make_glands(seed=s) for s in (4, 5)]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    shutil.copytree(untrained_unet_run, whole)
    shutil.copytree(untrained_unet_run, cut)
    expected = tune_checkpoint(whole, val, torch.device("cpu"))
    k = 7
    with pytest.raises(TrainingStopped):
        tune_checkpoint(cut, val, torch.device("cpu"), _stop_after(k))
    saved = json.loads((cut / STATE).read_text())["points"]
    assert len(saved) == k
    scored: list[str] = []
    real = tune_module.point_record
    monkeypatch.setattr(
        tune_module, "point_record", lambda images, post: scored.append(repr(post)) or real(images, post)
    )
    assert tune_checkpoint(cut, val, torch.device("cpu")) == expected
    grid = base_post(tiny_unet_config(unet_scale=0.5, unet_depth=3))[1]
    assert len(scored) == len(grid) - k  # the first k points were not scored again
    assert (
        json.loads((cut / STATE).read_text())["points"]
        == json.loads((whole / STATE).read_text())["points"]
    )
    # a state of another model (best.pt changed) is not reused
    (cut / "best.pt").write_bytes((cut / "best.pt").read_bytes() + b"\0")
    scored.clear()
    with pytest.raises(TrainingStopped):
        tune_checkpoint(cut, val, torch.device("cpu"), _stop_after(1))
    assert len(scored) == 1


@pytest.mark.skipif(default_workers(4) < 2, reason="needs fork and 2 CPUs")
def test_worker_processes_give_the_same_search_and_end_on_a_stop() -> None:
    segmenter, raws, val = _unet_case()
    assert tune(segmenter, val, raws=raws, workers=2) == tune(segmenter, val, raws=raws, workers=1)
    with pytest.raises(TrainingStopped):
        tune(segmenter, val, _stop_after(2), raws=raws, workers=2)
    assert not multiprocessing.active_children()


class _Echo:
    def score(self, post: Any) -> Any:
        return post


@pytest.mark.skipif(default_workers(4) < 2, reason="needs fork and 2 CPUs")
def test_the_score_pool_collects_garbage_before_it_forks() -> None:
    """As the training's batch workers (tests/test_train_batches.py): no destructor of this process's objects
    may run in a forked worker."""
    import os

    with garbage_cycle() as collected:
        pool = ScorePool([_Echo(), _Echo()], 2)
        try:
            assert pool("p") == ["p", "p"]
        finally:
            pool.close()
    assert collected == [os.getpid()]
