"""One epoch's work: optimizer steps over the batches (:func:`train_one_epoch`) and scoring on ``val``
(:func:`validate`). The model kind gives the losses (``ModelKind.loss``); :mod:`.engine` runs the epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from tqdm import tqdm

from ..config import RunConfig
from ..metrics import pool_scores, score_image
from ..segmenters import make_segmenter
from ..thresholds import default_post
from .batches import Batch, Sample
from .context import RunContext, TrainState
from .phases import PhaseReport, StopFlag


def _losses(state: TrainState, batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    """The training losses of one batch (images float32 in [0, 1]: the networks normalise them)."""
    return state.cfg.kind.loss(state.net, batch, device, state.cfg.train_amp)


def train_step(state: TrainState, batch: Batch, device: torch.device, step: int) -> dict[str, float]:
    """One optimizer step on ``batch``; returns each loss term and their sum (``"loss"``) as floats.

    Raises:
        FloatingPointError: the loss is not finite (names the epoch and step).
    """
    losses = _losses(state, batch, device)
    loss = cast(torch.Tensor, sum(losses.values()))  # a kind has at least one loss term
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"loss is {loss.item()} at epoch {state.epoch + 1}, step {step + 1}; lower train_lr"
        )
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.cfg.train_grad_clip:
        torch.nn.utils.clip_grad_norm_(state.net.parameters(), state.cfg.train_grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return {**{k: float(v.detach()) for k, v in losses.items()}, "loss": float(loss.detach())}


def train_one_epoch(
    state: TrainState, ctx: RunContext, stop: StopFlag, report: PhaseReport | None = None
) -> dict[str, Any]:
    """Train epoch ``state.epoch``; returns its record (``epoch`` 1-based, ``lr``, mean losses).

    A stop interrupts the step in progress (its result is thrown away; resuming repeats the epoch). ``report``
    writes the ``train`` phase's progress (a new one when None).

    Raises:
        TrainingStopped: a stop was asked for.
    """
    cfg, steps = state.cfg, state.batches.steps()
    report = report or PhaseReport(ctx, stop)
    state.net.train()
    sums: dict[str, float] = {}
    report.begin(
        "train",
        steps,
        "steps",
        event="step",
        epoch=state.epoch + 1,
        epochs=cfg.train_epochs,
        step=0,
        steps=steps,
        loss=None,
    )
    with stop.armed(f"stopped during epoch {state.epoch + 1}", "repeats that epoch"):
        if ctx.workers:
            source = state.batches.loader(state.epoch, ctx.workers)
        else:
            source = state.batches.epoch(state.rng, state.epoch)
        desc = f"epoch {state.epoch + 1}/{cfg.train_epochs}"
        bar = tqdm(
            source, total=steps, desc=desc, disable=not ctx.show_bar or ctx.rank != 0, leave=False
        )
        for i, batch in enumerate(bar):
            for k, v in train_step(state, batch, ctx.device, i).items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.3f}")
            rec = {"event": "step", "epoch": state.epoch + 1, "epochs": cfg.train_epochs, "step": i + 1}
            rec.update(steps=steps, loss=sums["loss"] / (i + 1), status="running")
            report.advance(i + 1, rec, step=i + 1, loss=rec["loss"])
    record: dict[str, Any] = {"epoch": state.epoch + 1, "lr": state.optimizer.param_groups[0]["lr"]}
    record.update({("train_" + k if k == "loss" else k): v / steps for k, v in sums.items()})
    return record


def validate(
    model: torch.nn.Module,
    cfg: RunConfig,
    val: list[Sample],
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Pooled GlaS F1, object Dice and object Hausdorff on ``val`` with untuned post-processing.

    Args:
        model: the bare network (put in eval mode here, back in train mode after). cfg: its config.
        val: (uint8[H, W, 3] image, int32[H, W] label map) pairs. device: where ``model`` is.
        progress: called as ``progress(done, n_images)`` after each image.
    """
    model.eval()
    segmenter = make_segmenter(model, cfg, default_post(cfg), device)
    scores = []
    for i, (img, lab) in enumerate(val):
        scores.append(score_image(segmenter(img), lab))
        if progress:
            progress(i + 1, len(val))
    model.train()
    s = pool_scores(scores)
    return {
        "val_f1": s.pooled_f1,
        "val_object_dice": s.pooled_object_dice,
        "val_object_hausdorff": s.pooled_object_hausdorff,
    }
