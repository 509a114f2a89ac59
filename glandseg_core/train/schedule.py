"""Optimizer, learning-rate schedule and the time budget of a run."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..config import RunConfig


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters, as ``cfg.train_optimizer`` says."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train_optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.train_lr, momentum=cfg.train_momentum, weight_decay=cfg.train_weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.train_lr, weight_decay=cfg.train_weight_decay)


def lr_lambda(cfg: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate factor of each optimizer step (for ``LambdaLR``).

    How it works: a linear warm-up over ``train_warmup_steps``, times either a staircase (``train_lr_gamma``
    every ``train_lr_step_epochs`` epochs) or a cosine from 1 down to 0.01 over ``train_epochs``.
    """
    total = cfg.train_epochs * steps_per_epoch

    def fn(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.train_warmup_steps) if cfg.train_warmup_steps else 1.0
        if cfg.train_lr_schedule == "step":
            return warm * cfg.train_lr_gamma ** ((step // steps_per_epoch) // cfg.train_lr_step_epochs)
        return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total)))))

    return fn


def epochs_within(cfg: RunConfig, epoch: int, started: int, elapsed: float, time_limit: float) -> int:
    """How many epochs fit ``time_limit``, judged from the ``epoch - started`` epochs that took ``elapsed``
    seconds (never fewer than ``epoch + 1``, never more than ``cfg.train_epochs``)."""
    per_epoch = elapsed / max(1, epoch - started)
    affordable = int((0.97 * time_limit - elapsed) // per_epoch) if per_epoch > 0 else cfg.train_epochs
    return max(epoch + 1, min(cfg.train_epochs, epoch + affordable))
