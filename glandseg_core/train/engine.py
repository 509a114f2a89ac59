"""The trainer: ``fit(cfg, data, run_dir)``, as short functions over two objects (torchvision's
``references/detection/engine.py``): a :class:`RunContext` that stays fixed during a run, and a
:class:`TrainState` that :func:`train_one_epoch` advances and ``last.pt`` checkpoints.

The work of one epoch (optimizer steps, validation) is in :mod:`.epoch`. A run folder holds ``config.json``, ``log.jsonl`` (one JSON object per epoch), ``progress.json`` (the live
progress of each phase: epoch steps, validation, tuning; see :mod:`.phases`), ``last.pt`` (everything needed to
resume exactly) and ``best.pt`` (best on ``val``), and at the end
``postprocess.json`` and ``tuning.json`` (thresholds tuned on ``val``). Checkpoints are written atomically.
Runs under ``torchrun`` with DistributedDataParallel when ``WORLD_SIZE > 1``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist

from ..config import RunConfig, config_to_dict, save_config
from ..datasets import DataLike
from ..errors import TrainingStopped
from ..progress import ProgressFn
from .batches import Sample
from .context import RunContext, TrainState
from .epoch import train_one_epoch, validate
from .phases import PhaseReport, StopFlag, stop_on_signals
from .runfiles import append_log, save_checkpoint, try_write_progress, write_progress, writing
from .schedule import epochs_within, lr_lambda
from .setup import dist_setup, hold_locks, load_data, new_state, run_config, start_state
from .tune import save_tuning, tune_checkpoint

__all__ = ["StopFlag", "fit"]

log = logging.getLogger(__name__)


def _fit_to_time_limit(state: TrainState, ctx: RunContext) -> None:
    """After two epochs and a validation, shorten ``train_epochs`` (and the schedule, and ``config.json``) to
    what fits the time limit, so that the schedule still ends."""
    cfg = state.cfg
    if (
        not ctx.time_limit
        or ctx.world != 1
        or state.epoch - state.started != max(2, cfg.train_val_every)
    ):
        return
    fitted = epochs_within(cfg, state.epoch, state.started, time.time() - state.t_begin, ctx.time_limit)
    if fitted < cfg.train_epochs:
        log.info(
            "time limit %.0f s: training %d epochs instead of %d",
            ctx.time_limit,
            fitted,
            cfg.train_epochs,
        )
        state.cfg = dataclasses.replace(cfg, train_epochs=fitted)
        state.scheduler.lr_lambdas[0] = lr_lambda(state.cfg, state.batches.steps())
        if ctx.rank == 0:
            with writing(ctx.run_dir / "config.json"):
                save_config(state.cfg, ctx.run_dir / "config.json")


def _rng_states(state: TrainState, ctx: RunContext) -> list[Any]:
    """Every rank's numpy RNG state (gathered under DDP), so each rank resumes exactly."""
    if ctx.world == 1:
        return [state.rng.bit_generator.state]
    states: list[Any] = [None] * ctx.world
    dist.all_gather_object(states, state.rng.bit_generator.state)
    return states


def _is_best(record: dict[str, Any], best: dict[str, Any]) -> bool:
    """Whether a validated epoch beats ``best`` (val F1 first, object Dice on ties)."""
    if "val_f1" not in record:
        return False
    return (record["val_f1"], record["val_object_dice"]) > (best["val_f1"], best["val_object_dice"])


def _save_epoch(
    state: TrainState, ctx: RunContext, record: dict[str, Any], rng_states: list[Any]
) -> None:
    """Rank 0: ``best.pt`` when the epoch is the best yet, its ``log.jsonl`` line, then ``last.pt``.

    The log line goes before ``last.pt``: a failure in between leaves a line that resuming drops.
    """
    cfg, epoch, run_dir = state.cfg, state.epoch, ctx.run_dir
    if _is_best(record, state.best):
        state.best = {
            k: record[k] for k in ("epoch", "val_f1", "val_object_dice", "val_object_hausdorff")
        }
        best = {"model": state.model.state_dict(), "config": config_to_dict(cfg), "epoch": epoch}
        save_checkpoint(best, run_dir / "best.pt")
    append_log(run_dir, record)
    last = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": epoch,
        "best": state.best,
        "rng_numpy": rng_states,
        "rng_torch": torch.get_rng_state(),
        "config": config_to_dict(cfg),
    }
    save_checkpoint(last, run_dir / "last.pt")


def _validate_epoch(
    state: TrainState, ctx: RunContext, record: dict[str, Any], val: list[Sample], report: PhaseReport
) -> None:
    """Rank 0: score the finished epoch on ``val`` into ``record`` (``val_seconds`` too); a stop interrupts it
    at once and resuming repeats the epoch (its steps are not checkpointed yet)."""
    t0, epoch = time.time(), state.epoch + 1
    report.begin("validate", len(val), "images", epoch=epoch, step=state.batches.steps())
    with report.stop.armed(f"stopped while validating epoch {epoch}", "repeats that epoch"):
        record.update(validate(state.model, state.cfg, val, ctx.device, report.progress))
    record["val_seconds"] = round(time.time() - t0, 2)


def _end_epoch(
    state: TrainState,
    ctx: RunContext,
    record: dict[str, Any],
    val: list[Sample],
    t0: float,
    report: PhaseReport,
) -> bool:
    """Validate, checkpoint and report a finished epoch. Returns True when the time limit is overrun (stop)."""
    cfg, epoch = state.cfg, state.epoch
    rng_states = _rng_states(state, ctx)
    overrun = bool(ctx.time_limit) and ctx.world == 1 and time.time() - state.t_begin > ctx.time_limit
    if overrun and epoch + 1 < cfg.train_epochs:
        log.info(
            "time limit %.0f s reached: stopping after epoch %d of %d",
            ctx.time_limit,
            epoch + 1,
            cfg.train_epochs,
        )
        record["stopped_at_time_limit"] = True
    if ctx.rank == 0:
        if (epoch + 1) % cfg.train_val_every == 0 or epoch + 1 == cfg.train_epochs or overrun:
            _validate_epoch(state, ctx, record, val, report)
        record["seconds"] = round(time.time() - t0, 2)
        _save_epoch(state, ctx, record, rng_states)
        steps = state.batches.steps()
        report.begin(
            "train", steps, "steps", event="epoch", step=steps, steps=steps, loss=record["train_loss"]
        )
        report.advance(steps, {"event": "epoch", **record})
        log.info("epoch %d: %s", epoch + 1, record)
    if ctx.world > 1:
        dist.barrier()
    return overrun


def _train(state: TrainState, ctx: RunContext, val: list[Sample], report: PhaseReport) -> None:
    """The epochs from ``state.epoch`` to the end of the schedule (or of the time limit)."""
    state.started, state.t_begin = state.epoch, time.time()
    while state.epoch < state.cfg.train_epochs:
        _fit_to_time_limit(state, ctx)
        t0 = time.time()
        record = train_one_epoch(state, ctx, report.stop, report)
        overrun = _end_epoch(state, ctx, record, val, t0, report)
        state.epoch += 1
        if overrun:
            break


def _tune(ctx: RunContext, val: list[Sample], report: PhaseReport) -> None:
    """Rank 0: tune post-processing on ``val``; a stop interrupts it at once and leaves the run resumable
    (``--resume`` on a trained run continues the tuning from the grid points saved in ``tuning_state.json``)."""
    report.begin("tune", len(val), "val images (model outputs)")
    with report.stop.armed(
        "stopped while tuning post-processing", "continues the tuning from the grid points scored"
    ):
        post, result = tune_checkpoint(
            ctx.run_dir, val, ctx.device, report.step, pause=report.stop.paused
        )
    save_tuning(ctx.run_dir, post, result)


def _run(ctx: RunContext, state: TrainState, val: list[Sample], report: PhaseReport) -> dict[str, Any]:
    """Train, then tune post-processing on ``val``; ``progress.json`` says how it ended."""
    steps, n = state.batches.steps(), state.cfg.train_epochs
    try:
        _train(state, ctx, val, report)
        if ctx.rank == 0:
            _tune(ctx, val, report)
            n = state.cfg.train_epochs
            write_progress(
                ctx.run_dir,
                event="done",
                epoch=n,
                epochs=n,
                step=steps,
                steps=steps,
                loss=None,
                status="finished",
                phase="done",
            )
        return state.best
    except TrainingStopped as e:
        if ctx.rank == 0:
            try_write_progress(
                ctx.run_dir,
                event="stopped",
                epoch=None,
                epochs=state.cfg.train_epochs,
                step=None,
                steps=steps,
                loss=None,
                status="stopped",
                phase=report.phase,
                message=e.what,
                resume=e.resume,
            )
        raise
    except Exception as e:
        if ctx.rank == 0:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            try_write_progress(
                ctx.run_dir, event="failed", status="failed", error=first, phase=report.phase
            )
        raise


def fit(
    cfg: RunConfig,
    data: DataLike,
    run_dir: str | os.PathLike,
    *,
    val_data: DataLike | None = None,
    machine_lock: bool = False,
    resume: bool = False,
    device: str | None = None,
    progress: ProgressFn | None = None,
    show_bar: bool = True,
    workers: int = 0,
    time_limit: float = 0.0,
) -> dict[str, Any]:
    """Train ``cfg`` on the ``train`` split, select on ``val``, tune post-processing on ``val``.

    Args:
        cfg: the run's configuration (ignored when resuming: the run folder's ``config.json`` is used).
        data: a data set, a GlaS folder (None: ``$GLANDSEG_DATA``) or (image, label map) pairs: trains on
            ``train``. val_data: selects and tunes (default: ``data``'s ``val``). run_dir: created if needed.
        machine_lock: hold the machine-wide lock (:mod:`.locks`), as ``glandseg train`` and the dashboard do.
        resume: continue from ``run_dir/last.pt`` exactly (model, optimizer, scheduler, epoch, RNG).
        device: ``cpu``, ``cuda`` or None for automatic. show_bar: a tqdm progress bar on stderr.
        progress: hears a ``progress.Step`` per unit of each phase (``train`` steps with ``detail["event"]``
            ``step`` or ``epoch``, ``validate`` images, ``tune``).
        workers: processes that build the augmented batches (0 = in this process, from the saved RNG stream).
        time_limit: a training budget in seconds (0 = none). After two epochs (and a validation) the run times
            itself and, if ``train_epochs`` would not fit, lowers it (in ``config.json`` too) so that the schedule
            still ends; a run that overruns anyway stops after the epoch that crosses the limit.

    Returns:
        The best epoch's validation record.

    Raises:
        TrainingBusy: another training trains this run folder (or holds the machine's lock: ``machine_lock``).
        TrainingStopped: SIGTERM/SIGINT arrived; the phase in progress (steps, validation, tuning) ends at once
            and ``last.pt`` stays the last finished epoch's (resume repeats the epoch, or continues the tuning).
        DatasetError: the data set is missing, incomplete or lacks a split.
        FileExistsError / FileNotFoundError: a new run in a used folder / nothing to resume.
        OSError: a file of the run folder could not be written (one line naming it, e.g. disk full).
        ValueError: negative ``workers`` or ``time_limit``; an unreadable ``log.jsonl`` line (names it).
    """
    if workers < 0 or time_limit < 0:
        raise ValueError("workers and time_limit cannot be negative")
    rank, world, dev = dist_setup(device)
    ctx = RunContext(Path(run_dir), dev, rank, world, progress, show_bar, workers, time_limit)
    try:
        with stop_on_signals(rank) as stop, hold_locks(ctx, machine_lock):
            report = PhaseReport(ctx, stop)
            with stop.armed("stopped while setting up (nothing trained yet)"):
                cfg = run_config(ctx, cfg, resume)
                torch.manual_seed(cfg.train_seed + rank)
                train_samples, val_samples = load_data(cfg, data, rank, val_data)
                state = new_state(cfg, train_samples, ctx)
            start_state(state, ctx, resume)  # writes config.json: not cut by a stop (checked after)
            return _run(ctx, state, val_samples, report)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
