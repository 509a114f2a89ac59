"""The two objects a run is made of: a :class:`RunContext` that stays fixed, a :class:`TrainState` that advances.

They play the part of torchvision's ``train_one_epoch(model, optimizer, data_loader, device, epoch, ...)``
arguments, so the engine's functions take two objects instead of a dozen positional parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..progress import ProgressFn, Step
from .batches import Batches


@dataclass(frozen=True)
class RunContext:
    """What stays fixed during a run: where it writes, where it computes, how it reports.

    Attributes:
        run_dir: the run folder. device: where the network runs.
        rank, world: this process's rank and the number of processes (DistributedDataParallel).
        progress: hears a :class:`~glandseg_core.progress.Step` for every unit of every phase: ``train``
            (``steps``; ``detail["event"]`` is ``step``, or ``epoch`` with the epoch's record), ``validate``
            (``images``), ``tune`` (val images, then grid points).
        show_bar: a tqdm progress bar on stderr (rank 0). workers: processes that build batches (0 = inline).
        time_limit: a training budget in seconds (0 = none).
    """

    run_dir: Path
    device: torch.device
    rank: int = 0
    world: int = 1
    progress: ProgressFn | None = None
    show_bar: bool = True
    workers: int = 0
    time_limit: float = 0.0

    def tell(self, step: Step) -> None:
        """Rank 0 only: pass ``step`` to the progress callback."""
        if self.rank == 0 and self.progress is not None:
            self.progress(step)


@dataclass
class TrainState:
    """What a run advances: the network, optimizer, schedule and RNG (checkpointed in ``last.pt``), the next
    epoch (0-based) and the best validation record so far."""

    cfg: RunConfig
    model: torch.nn.Module  # the bare network (saved, validated)
    net: torch.nn.Module  # what trains: ``model`` or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    batches: Batches
    epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"val_f1": -1.0, "val_object_dice": -1.0})
    started: int = 0  # the epoch this process began with
    t_begin: float = field(default_factory=time.time)
