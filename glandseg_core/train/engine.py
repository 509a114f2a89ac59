"""The trainer: ``fit(cfg, data, run_dir)``, as short functions over two objects (torchvision's
``references/detection/engine.py``): a :class:`RunContext` that stays fixed during a run, and a
:class:`TrainState` that :func:`train_one_epoch` advances and ``last.pt`` checkpoints.

A run folder holds ``config.json``, ``log.jsonl`` (one JSON object per epoch), ``progress.json`` (live step
progress), ``last.pt`` (everything needed to resume exactly) and ``best.pt`` (best on ``val``), and at the end
``postprocess.json`` and ``tuning.json`` (thresholds tuned on ``val``). Checkpoints are written atomically.
Runs under ``torchrun`` with DistributedDataParallel when ``WORLD_SIZE > 1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist
from torch.nn import functional as F
from tqdm import tqdm

from ..config import RunConfig, save_config
from ..device import autocast, pick_device
from ..errors import TrainingStopped
from ..metrics import pool_scores, score_image
from ..segment import make_segmenter
from ..thresholds import default_post
from .batches import Batch, Sample
from .context import Progress, RunContext, TrainState
from .locks import run_folder_lock, training_lock
from .runfiles import append_log, save_checkpoint, try_write_progress, write_progress, writing
from .schedule import epochs_within, lr_lambda
from .setup import load_data, new_state, run_config, start_state
from .tune import tune_run

log = logging.getLogger(__name__)


class StopFlag:
    """A signal handler that only records that a stop was asked for (the step in progress finishes)."""

    def __init__(self) -> None:
        self.raised = False

    def __call__(self, *_: object) -> None:
        self.raised = True


@contextlib.contextmanager
def _stop_on_signals(ctx: RunContext) -> Iterator[StopFlag]:
    """SIGTERM and SIGINT set the yielded flag instead of ending the process (rank 0, main thread)."""
    flag, old = StopFlag(), {}
    if ctx.rank == 0 and hasattr(signal, "SIGTERM"):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                old[sig] = signal.signal(sig, flag)
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def unet_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE on gland and contour channels plus soft Dice on the gland channel.

    Args:
        logits: float[B, 2, H, W]. target: float32[B, 2, H, W] in {0, 1} (gland, contour).
    """
    logits = logits.float()
    bce_fg = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0])
    bce_ct = F.binary_cross_entropy_with_logits(logits[:, 1], target[:, 1], pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits[:, 0])
    inter = (p * target[:, 0]).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target[:, 0].sum() + 1)
    return {"loss_gland": bce_fg, "loss_contour": bce_ct, "loss_dice": dice}


def _losses(state: TrainState, batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    """The training losses of one batch (images float32 in [0, 1]: the networks normalise them)."""
    if state.cfg.model == "unet":
        x, y = batch
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, state.cfg.train_amp):
            logits = state.net(x)
        return unet_loss(logits, y.to(device))
    # Mask R-CNN: the backbone runs in mixed precision by itself, the heads in fp32
    images, targets = batch
    images = [im.to(device) for im in images]
    return state.net(images, [{k: v.to(device) for k, v in t.items()} for t in targets])


def train_step(state: TrainState, batch: Batch, device: torch.device, step: int) -> dict[str, float]:
    """One optimizer step on ``batch``; returns each loss term and their sum (``"loss"``) as floats.

    Raises:
        FloatingPointError: the loss is not finite (names the epoch and step).
    """
    losses = _losses(state, batch, device)
    loss = sum(losses.values())
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


def train_one_epoch(state: TrainState, ctx: RunContext, stop: StopFlag) -> dict[str, Any]:
    """Train epoch ``state.epoch``; returns its record (``epoch`` 1-based, ``lr``, mean losses).

    Raises:
        TrainingStopped: a stop was asked for (after the step in progress).
    """
    cfg, steps = state.cfg, state.batches.steps()
    state.net.train()
    sums: dict[str, float] = {}
    if ctx.workers:
        source = state.batches.loader(state.epoch, ctx.workers)
    else:
        source = state.batches.epoch(state.rng, state.epoch)
    desc = f"epoch {state.epoch + 1}/{cfg.train_epochs}"
    bar = tqdm(source, total=steps, desc=desc, disable=not ctx.show_bar or ctx.rank != 0, leave=False)
    for i, batch in enumerate(bar):
        for k, v in train_step(state, batch, ctx.device, i).items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.3f}")
        if i % 5 == 0 or i == steps - 1:
            rec = {"event": "step", "epoch": state.epoch + 1, "epochs": cfg.train_epochs, "step": i + 1}
            rec.update(steps=steps, loss=sums["loss"] / (i + 1), status="running")
            ctx.report(rec, **rec)
        if stop.raised:
            raise TrainingStopped(f"stopped during epoch {state.epoch + 1}; resume repeats it")
    record: dict[str, Any] = {"epoch": state.epoch + 1, "lr": state.optimizer.param_groups[0]["lr"]}
    record.update({("train_" + k if k == "loss" else k): v / steps for k, v in sums.items()})
    return record


def validate(
    model: torch.nn.Module, cfg: RunConfig, val: list[Sample], device: torch.device
) -> dict[str, float]:
    """Pooled GlaS F1, object Dice and object Hausdorff on ``val`` with untuned post-processing.

    Args:
        model: the bare network (put in eval mode here, back in train mode after). cfg: its config.
        val: (uint8[H, W, 3] image, int32[H, W] label map) pairs. device: where ``model`` is.
    """
    model.eval()
    segmenter = make_segmenter(model, cfg, default_post(cfg), device)
    scores = [score_image(segmenter(img), lab) for img, lab in val]
    model.train()
    s = pool_scores(scores)
    return {
        "val_f1": s.pooled_f1,
        "val_object_dice": s.pooled_object_dice,
        "val_object_hausdorff": s.pooled_object_hausdorff,
    }


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
        best = {"model": state.model.state_dict(), "config": asdict(cfg), "epoch": epoch}
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
        "config": asdict(cfg),
    }
    save_checkpoint(last, run_dir / "last.pt")


def _end_epoch(
    state: TrainState, ctx: RunContext, record: dict[str, Any], val: list[Sample], t0: float
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
            record.update(validate(state.model, cfg, val, ctx.device))
        record["seconds"] = round(time.time() - t0, 2)
        _save_epoch(state, ctx, record, rng_states)
        steps = state.batches.steps()
        ctx.report({"event": "epoch", **record}, event="epoch", epoch=epoch + 1, epochs=cfg.train_epochs,
                   step=steps, steps=steps, loss=record["train_loss"], status="running")  # fmt: skip
        log.info("epoch %d: %s", epoch + 1, record)
    if ctx.world > 1:
        dist.barrier()
    return overrun


def _train(state: TrainState, ctx: RunContext, val: list[Sample], stop: StopFlag) -> None:
    """The epochs from ``state.epoch`` to the end of the schedule (or of the time limit)."""
    state.started, state.t_begin = state.epoch, time.time()
    while state.epoch < state.cfg.train_epochs:
        _fit_to_time_limit(state, ctx)
        t0 = time.time()
        record = train_one_epoch(state, ctx, stop)
        overrun = _end_epoch(state, ctx, record, val, t0)
        state.epoch += 1
        if overrun:
            break


def _run(ctx: RunContext, state: TrainState, val: list[Sample]) -> dict[str, Any]:
    """Train, then tune post-processing on ``val``; ``progress.json`` says how it ended."""
    steps = state.batches.steps()
    with _stop_on_signals(ctx) as stop:
        try:
            _train(state, ctx, val, stop)
            if ctx.rank == 0:
                tune_run(ctx.run_dir, val, ctx.device)
                n = state.cfg.train_epochs
                write_progress(ctx.run_dir, event="done", epoch=n, epochs=n, step=steps, steps=steps, loss=None,
                               status="finished")  # fmt: skip
            return state.best
        except TrainingStopped:
            if ctx.rank == 0:
                try_write_progress(ctx.run_dir, event="stopped", epoch=None, epochs=state.cfg.train_epochs,
                                   step=None, steps=steps, loss=None, status="stopped")  # fmt: skip
            raise
        except Exception as e:
            if ctx.rank == 0:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                try_write_progress(ctx.run_dir, event="failed", status="failed", error=first)
            raise


def _dist_setup(device_name: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return rank, world, device


def fit(
    cfg: RunConfig,
    data: str | os.PathLike | None,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | None = None,
    progress: Progress | None = None,
    show_bar: bool = True,
    workers: int = 0,
    time_limit: float = 0.0,
) -> dict[str, Any]:
    """Train ``cfg`` on GlaS ``train``, select on ``val``, tune post-processing on ``val``.

    Args:
        cfg: the run's configuration (ignored when resuming: the run folder's ``config.json`` is used).
        data: the GlaS folder (else ``$GLANDSEG_DATA``).
        run_dir: the run folder; created if needed.
        resume: continue from ``run_dir/last.pt`` exactly (model, optimizer, scheduler, epoch, RNG).
        device: ``cpu``, ``cuda`` or None for automatic.
        progress: called with a dict after every few steps (``event="step"``) and every epoch (``event="epoch"``).
        show_bar: a tqdm progress bar on stderr.
        workers: processes that build the augmented batches (0 = in this process, from the saved RNG stream).
        time_limit: a training budget in seconds (0 = none). After two epochs (and a validation) the run times
            itself and, if ``train_epochs`` would not fit, lowers it (in ``config.json`` too) so that the schedule
            still ends; a run that overruns anyway stops after the epoch that crosses the limit.

    Returns:
        The best epoch's validation record.

    Raises:
        TrainingBusy: another training holds the machine's lock or trains this run folder.
        TrainingStopped: SIGTERM/SIGINT arrived. DatasetError: the GlaS folder is incomplete.
        FileExistsError / FileNotFoundError: a new run in a used folder / nothing to resume.
        OSError: a file of the run folder could not be written (one line naming it, e.g. disk full).
        ValueError: negative ``workers`` or ``time_limit``; an unreadable ``log.jsonl`` line (names it).
    """
    if workers < 0 or time_limit < 0:
        raise ValueError("workers and time_limit cannot be negative")
    rank, world, dev = _dist_setup(device)
    ctx = RunContext(Path(run_dir), dev, rank, world, progress, show_bar, workers, time_limit)
    try:
        with _locks(ctx):
            cfg = run_config(ctx, cfg, resume)
            torch.manual_seed(cfg.train_seed + rank)
            train_data, val_data = load_data(cfg, data, rank)
            state = new_state(cfg, train_data, ctx)
            start_state(state, ctx, resume)
            return _run(ctx, state, val_data)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _locks(ctx: RunContext) -> Iterator[None]:
    """Rank 0 holds the machine's training lock, then the run folder's own (created here)."""
    with contextlib.ExitStack() as stack:
        if ctx.rank == 0:
            stack.enter_context(training_lock(ctx.run_dir))
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        if ctx.rank == 0:
            stack.enter_context(run_folder_lock(ctx.run_dir))
        yield
