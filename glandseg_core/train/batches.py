"""Training batches: the split in memory, and each epoch's augmented batches, reproducible from seeds.

Images are fed as float32 in [0, 1]: each network normalises its own input.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import RunConfig
from ..datasets import Item
from ..transforms import augment

Sample = tuple[
    np.ndarray, np.ndarray
]  # (uint8[H, W, 3] image, int32[H, W] label map: 0 background, 1..N glands)
Batch = tuple[Any, Any]  # (model input, targets) as tensors


def _resize(image: np.ndarray, labels: np.ndarray, scale: float) -> Sample:
    """Resize an image (bilinear) and its label map (nearest) by ``scale``; sides at least 16 pixels."""
    if scale == 1.0:
        return image, labels
    h, w = labels.shape
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    img = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    lab = Image.fromarray(labels.astype(np.int32)).resize(size, Image.Resampling.NEAREST)
    return img, np.asarray(lab).astype(np.int32)


def load_split(items: list[Item], scale: float = 1.0) -> list[Sample]:
    """Read (and rescale) every image and label map of ``items`` into memory.

    Returns:
        (uint8[h, w, 3] image, int32[h, w] label map) pairs, at ``scale`` times the original size.

    Raises:
        DatasetError: an unreadable item, or one without a label map (names it).
    """
    return [_resize(*it.load_annotated(), scale) for it in items]


class Batches:
    """Yields augmented training batches for one epoch, reproducibly from seeds.

    Args:
        cfg: the run's configuration (batch size, steps, crop, augmentation, model kind).
        data: the training samples (:func:`load_split`).
        rank: this process's rank under DistributedDataParallel (0 otherwise).
        world: the number of processes.
    """

    def __init__(self, cfg: RunConfig, data: list[Sample], rank: int = 0, world: int = 1) -> None:
        self.cfg, self.data, self.rank, self.world = cfg, data, rank, world

    def steps(self) -> int:
        """Steps of an epoch: ``train_steps_per_epoch``, else one pass over the images by all ranks."""
        if self.cfg.train_steps_per_epoch:
            return self.cfg.train_steps_per_epoch
        return max(1, len(self.data) // (self.cfg.train_batch_size * self.world))

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's image order, shared by all ranks (seeded by seed and epoch), so ranks draw disjoint images."""
        cfg, n = self.cfg, len(self.data)
        drawn = max(n, self.steps() * cfg.train_batch_size * self.world)
        return np.random.default_rng((cfg.train_seed, epoch)).permutation(drawn) % n

    def indices(self, order: np.ndarray, step: int) -> np.ndarray:
        """This rank's images of one step of an epoch's ``order``."""
        start = (step * self.world + self.rank) * self.cfg.train_batch_size
        return order[start : start + self.cfg.train_batch_size]

    def build(self, idx: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, Any]]:
        """One batch as numpy arrays: the images ``idx`` augmented with ``rng``, and their targets."""
        cfg = self.cfg
        samples = [
            augment(*self.data[int(i)], cfg.train_augment, rng, crop=cfg.train_crop_size) for i in idx
        ]
        return [(im, cfg.kind.targets(cfg, im, lab)) for im, lab in samples]

    def tensors(self, batch: list[tuple[np.ndarray, Any]]) -> Batch:
        """The model's training input for a batch from :meth:`build`.

        Returns:
            What the model kind's ``collate`` makes of it (U-Net: an image tensor and a target tensor; Mask
            R-CNN: lists of image tensors and target dicts).
        """
        return self.cfg.kind.collate(batch)

    def epoch(self, rng: np.random.Generator, epoch: int = 0) -> Iterator[Batch]:
        """Batches of one epoch; crops and augmentations come from the rank's own ``rng``, in step order."""
        order = self.order(epoch)
        for s in range(self.steps()):
            yield self.tensors(self.build(self.indices(order, s), rng))

    def loader(self, epoch: int, workers: int) -> Iterator[Batch]:
        """The epoch's batches built by ``workers`` processes. Each step draws from its own seed
        ``(seed, rank, epoch, step)``, so the batches do not depend on the number of workers. Workers hand back
        numpy arrays (through pipes, not ``/dev/shm``, which containers often keep tiny)."""
        if workers:
            # workers are forked: garbage left in this process would otherwise be collected in a worker, where
            # a destructor of a native object (a thread pool's) aborts the worker (seen: std::system_error)
            gc.collect()
        loader = torch.utils.data.DataLoader(
            StepBatches(self, epoch),
            batch_size=None,
            num_workers=workers,
            collate_fn=_as_is,
            worker_init_fn=_worker_init,
            prefetch_factor=4 if workers else None,
        )
        return (self.tensors(batch) for batch in loader)


class StepBatches(torch.utils.data.Dataset):
    """Batch ``step`` of one epoch, augmented with ``default_rng((seed, rank, epoch, step))``."""

    def __init__(self, batches: Batches, epoch: int) -> None:
        self.batches, self.epoch, self.order = batches, epoch, batches.order(epoch)

    def __len__(self) -> int:
        return self.batches.steps()

    def __getitem__(self, step: int) -> list[tuple[np.ndarray, Any]]:
        b = self.batches
        rng = np.random.default_rng((b.cfg.train_seed, b.rank, self.epoch, step))
        return b.build(b.indices(self.order, step), rng)


def _as_is(batch: Any) -> Any:
    """Collate function of the loader: batches come built (module level, so spawned workers can pickle it)."""
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
