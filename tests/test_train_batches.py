"""Tests for glandseg_core.train.batches: reproducible epochs, disjoint ranks, worker-independent batches."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from glandseg_core.config import PRESETS
from glandseg_core.train.batches import Batches
from tests.helpers import garbage_cycle, tiny_unet_config


def test_ddp_ranks_draw_disjoint_images() -> None:
    """Under DDP the ranks draw disjoint images in an epoch (regression: each rank permuted the images with its
    own RNG, seeded ``train_seed + 1000 * rank`` in ``train.setup.new_state``, yet took its slice as if the order were shared)."""
    cfg = tiny_unet_config(
        train_batch_size=1, train_steps_per_epoch=0, train_crop_size=0, train_augment="none"
    )
    data = [(np.full((8, 8, 3), i, np.uint8), np.zeros((8, 8), np.int32)) for i in range(8)]
    orders = []
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in (0, 1):
            batches = Batches(cfg, data, rank, 2)
            rng = np.random.default_rng(cfg.train_seed + 1000 * rank)  # as new_state seeds each rank
            seen += [round(float(x[0, 0, 0, 0]) * 255) for x, _ in batches.epoch(rng, epoch)]
        assert sorted(seen) == list(range(8)), f"images drawn by the two ranks in epoch {epoch}: {seen}"
        orders.append(seen)
    assert orders[0] != orders[1]  # a new order every epoch


def test_loader_batches_do_not_depend_on_the_number_of_workers() -> None:
    cfg = tiny_unet_config(
        train_batch_size=2, train_steps_per_epoch=3, train_crop_size=8, train_augment="strong"
    )
    rng = np.random.default_rng(0)
    data = [
        (
            rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
            (rng.random((16, 16)) > 0.5).astype(np.int32),
        )
        for _ in range(5)
    ]
    batches = Batches(cfg, data, 0, 1)
    inline = list(batches.loader(epoch=1, workers=0))
    parallel = list(batches.loader(epoch=1, workers=2))
    assert len(inline) == len(parallel) == 3
    for (x0, y0), (x1, y1) in zip(inline, parallel, strict=True):
        torch.testing.assert_close(x0, x1)
        torch.testing.assert_close(y0, y1)
    other_epoch = list(batches.loader(epoch=2, workers=0))
    assert not torch.equal(other_epoch[0][0], inline[0][0])


def test_loader_builds_maskrcnn_targets_in_workers() -> None:
    cfg = dataclasses.replace(
        PRESETS["glandseg-maskrcnn-cpu"],
        train_batch_size=2,
        train_steps_per_epoch=2,
        train_augment="strong",
    )
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:20], labels[20:35, 30:55] = 1, 2
    data = [(np.full((40, 60, 3), 120, np.uint8), labels)] * 3
    batches = list(Batches(cfg, data, 0, 1).loader(epoch=0, workers=2))
    assert len(batches) == 2
    images, targets = batches[0]
    assert (
        len(images) == len(targets) == 2 and images[0].dtype == torch.float32 and images[0].shape[0] == 3
    )
    assert {"masks", "boxes", "labels"} <= set(targets[0]) and targets[0]["boxes"].shape[1] == 4


def test_unet_batches_are_float_images_in_0_1_without_normalisation() -> None:
    """The U-Net normalises its own input now: training feeds float32 [0, 1] images, as inference does."""
    cfg = tiny_unet_config(
        train_batch_size=2, train_steps_per_epoch=1, train_crop_size=0, train_augment="none"
    )
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = 255
    x, y = next(
        Batches(cfg, [(image, np.zeros((16, 16), np.int32))], 0, 1).epoch(np.random.default_rng(0))
    )
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.shape == (2, 2, 16, 16)


def test_garbage_is_collected_before_the_workers_fork() -> None:
    """A forked worker that collects its parent's garbage runs the destructors of the parent's objects there;
    a native one (a thread pool's) aborts the worker (seen: ``std::system_error`` in a DataLoader worker)."""
    cfg = tiny_unet_config(train_batch_size=1, train_steps_per_epoch=1, train_crop_size=8)
    data = [(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.int32))]
    with garbage_cycle() as collected:
        list(Batches(cfg, data, 0, 1).loader(epoch=1, workers=1))
    assert collected == [os.getpid()]
