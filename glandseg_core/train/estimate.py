"""A short measurement before a run: time a few training steps and one validation image of a config, and scale
them to an epoch. It is an estimate: the first step (warm-up) is not counted, nothing is written, and a busy
machine or a different batch of images changes the pace.
"""

from __future__ import annotations

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
        "val_images"}``: ``train_seconds`` is a full epoch's steps, ``val_seconds`` one validation pass,
        ``epoch_seconds`` their sum (an epoch that is validated).

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
    state.model.eval()
    segmenter = make_segmenter(state.model, cfg, default_post(cfg), dev)
    image, _ = load_split(val_items[:1])[0]
    t0 = time.perf_counter()
    segmenter(image)
    val_s = (time.perf_counter() - t0) * len(val_items)
    return {
        "step_seconds": step_s,
        "steps_per_epoch": per_epoch,
        "train_seconds": step_s * per_epoch,
        "val_seconds": val_s,
        "epoch_seconds": step_s * per_epoch + val_s,
        "measured_steps": steps - 1,
        "val_images": len(val_items),
    }
