"""A short measurement before a run: time a few training steps and one validation image of a config, and scale
them to an epoch; and the post-processing tuning at the end of the run. It is an estimate: the first step
(warm-up) is not counted, nothing is written, and a busy machine or a different batch of images changes the pace.
The tuning's grid points are timed on the untrained network's output, whose glands are not a trained model's.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..datasets import DataLike
from ..device import pick_device
from ..segmenters import make_segmenter
from ..thresholds import default_post
from .batches import load_split
from .context import RunContext
from .epoch import train_step
from .setup import new_state, split_items
from .tune import ImageGrid, base_post
from .tune_pool import default_workers

TUNE_PROBE_POINTS = 6  # grid points timed on one val image (two of the U-Net's watershed groups)


def estimate_tuning(
    model: torch.nn.Module,
    cfg: RunConfig,
    image: np.ndarray,
    labels: np.ndarray,
    n_val: int,
    dev: torch.device,
) -> tuple[float, int]:
    """(seconds, grid points) of tuning on ``n_val`` images: one network pass per image, then the grid, from
    the first ``TUNE_PROBE_POINTS`` points timed on one image (stages and metrics shared as :func:`tune` does),
    the images shared between the worker processes :func:`tune` would start."""
    post, grid = base_post(cfg)
    segmenter = make_segmenter(model, cfg, post, dev)
    t0 = time.perf_counter()
    with torch.inference_mode():
        raw = segmenter.raw(image)
    raw_s = time.perf_counter() - t0
    one = ImageGrid(segmenter, raw, labels)
    probe = grid[:TUNE_PROBE_POINTS]
    t0 = time.perf_counter()
    for params in probe:
        one.score(dataclasses.replace(post, **params))
    per_point = (time.perf_counter() - t0) / max(1, len(probe))
    return raw_s * n_val + per_point * len(grid) * n_val / default_workers(n_val), len(grid)


def _time_val(model: torch.nn.Module, cfg: RunConfig, image: np.ndarray, dev: torch.device) -> float:
    """Seconds to segment one val image with the untuned settings (the model is put in eval mode)."""
    segmenter = make_segmenter(model.eval(), cfg, default_post(cfg), dev)
    t0 = time.perf_counter()
    segmenter(image)
    return time.perf_counter() - t0


def estimate_epoch(
    cfg: RunConfig,
    data: DataLike,
    *,
    val_data: DataLike | None = None,
    steps: int = 3,
    device: str | None = None,
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``cfg`` (random start weights) on a few training images and one ``val``
    image's segmentation, then scale them to one epoch (data and val_data as :func:`~glandseg_core.train.fit`).

    Args:
        cfg: the run's configuration. steps: at least 2 (the first warms up, uncounted). device: cpu/cuda/None.

    Returns:
        ``{"step_seconds", "steps_per_epoch", "train_seconds", "val_seconds", "epoch_seconds", "measured_steps",
        "val_images", "tune_seconds", "tune_points"}``: ``train_seconds`` is a full epoch's steps, ``val_seconds``
        one validation pass, ``epoch_seconds`` their sum (an epoch that is validated), ``tune_seconds`` the
        post-processing tuning after the last epoch (a network pass over ``val`` and ``tune_points`` grid points).

    Raises:
        DatasetError: the data set is missing, incomplete or lacks a split. ValueError: ``steps`` < 2.
    """
    if steps < 2:
        raise ValueError("steps must be at least 2 (the first one only warms up)")
    dev = pick_device(device)
    scale = cfg.kind.input_scale(cfg)
    items, val_items = split_items(data, val_data)
    n_train = min(len(items), cfg.train_max_images or len(items))
    sample = load_split(items[: max(2, cfg.train_batch_size)], scale)
    torch.manual_seed(cfg.train_seed)
    ctx = RunContext(Path(tempfile.gettempdir()), dev, show_bar=False)
    state = new_state(cfg, sample, ctx)
    state.model.train()
    batches = state.batches.epoch(np.random.default_rng(cfg.train_seed))
    times = []
    for i in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = state.batches.epoch(np.random.default_rng(i))
            batch = next(batches)
        t0 = time.perf_counter()
        train_step(state, batch, dev, i)
        times.append(time.perf_counter() - t0)
    step_s = float(np.mean(times[1:]))
    per_epoch = cfg.train_steps_per_epoch or max(1, n_train // cfg.train_batch_size)
    image, labels = load_split(val_items[:1])[0]
    val_s = _time_val(state.model, cfg, image, dev) * len(val_items)
    tune_s, points = estimate_tuning(state.model, cfg, image, labels, len(val_items), dev)
    return {
        "step_seconds": step_s,
        "steps_per_epoch": per_epoch,
        "train_seconds": step_s * per_epoch,
        "val_seconds": val_s,
        "epoch_seconds": step_s * per_epoch + val_s,
        "measured_steps": steps - 1,
        "val_images": len(val_items),
        "tune_seconds": tune_s,
        "tune_points": points,
    }
