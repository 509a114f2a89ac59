"""The trainer: ``fit(cfg, data, run_dir)``.

A run folder holds ``config.json``, ``log.jsonl`` (one JSON object per epoch), ``progress.json`` (live step
progress), ``last.pt`` (everything needed to resume exactly) and ``best.pt`` (best on ``val``), and at the end
``postprocess.json`` (thresholds tuned on ``val``). Checkpoints are written atomically. Runs under ``torchrun``
with DistributedDataParallel when ``WORLD_SIZE > 1``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.nn import functional as F
from tqdm import tqdm

from .config import RunConfig, load_config, save_config
from .data import GlasItem, find_items, load_item
from .infer import Run, default_post, load_weights, normalize, pick_device, predict, read_checkpoint
from .io import atomic_write_text
from .locks import training_lock
from .metrics import pool_scores, score_image
from .models import build_model
from .precision import autocast
from .transforms import augment, maskrcnn_target, unet_targets

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]


class TrainingStopped(Exception):
    """Training was stopped by SIGTERM/SIGINT; ``last.pt`` holds the last finished epoch."""


def _resize(image: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if scale == 1.0:
        return image, labels
    from PIL import Image

    h, w = labels.shape
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    img = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    lab = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.Resampling.NEAREST)).astype(np.int32)
    return img, lab


def load_split(items: list[GlasItem], scale: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read (and rescale) every image and label map of ``items`` into memory."""
    return [_resize(*load_item(it), scale) for it in items]


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _lr_lambda(cfg: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.train_epochs * steps_per_epoch

    def fn(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.train_warmup_steps) if cfg.train_warmup_steps else 1.0
        if cfg.train_lr_schedule == "step":
            return warm * cfg.train_lr_gamma ** ((step // steps_per_epoch) // cfg.train_lr_step_epochs)
        return warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total)))))

    return fn


def _optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train_optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.train_lr, momentum=cfg.train_momentum, weight_decay=cfg.train_weight_decay)
    return torch.optim.AdamW(params, lr=cfg.train_lr, weight_decay=cfg.train_weight_decay)


def unet_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE on gland and contour channels plus soft Dice on the gland channel."""
    logits = logits.float()
    bce_fg = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0])
    bce_ct = F.binary_cross_entropy_with_logits(logits[:, 1], target[:, 1], pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits[:, 0])
    inter = (p * target[:, 0]).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target[:, 0].sum() + 1)
    return {"loss_gland": bce_fg, "loss_contour": bce_ct, "loss_dice": dice}


class _Batches:
    """Yields augmented training batches for one epoch, reproducibly from ``rng``."""

    def __init__(self, cfg: RunConfig, data: list[tuple[np.ndarray, np.ndarray]], rank: int, world: int) -> None:
        self.cfg, self.data, self.rank, self.world = cfg, data, rank, world

    def steps(self) -> int:
        if self.cfg.train_steps_per_epoch:
            return self.cfg.train_steps_per_epoch
        return max(1, len(self.data) // (self.cfg.train_batch_size * self.world))

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's image order, shared by all ranks (seeded by seed and epoch), so ranks draw disjoint images."""
        cfg, n = self.cfg, len(self.data)
        return np.random.default_rng((cfg.train_seed, epoch)).permutation(max(n, self.steps() * cfg.train_batch_size * self.world)) % n

    def indices(self, order: np.ndarray, step: int) -> np.ndarray:
        """This rank's images of one step of an epoch's ``order``."""
        start = (step * self.world + self.rank) * self.cfg.train_batch_size
        return order[start : start + self.cfg.train_batch_size]

    def build(self, idx: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, Any]]:
        """One batch as numpy arrays: the images ``idx`` augmented with ``rng``, and their targets."""
        cfg = self.cfg
        samples = [augment(*self.data[i], cfg.train_augment, rng, crop=cfg.train_crop_size) for i in idx]
        if cfg.model == "unet":
            return [(im, unet_targets(lab, cfg.unet_contour_width).astype(np.uint8)) for im, lab in samples]
        return [(im, maskrcnn_target(lab)) for im, lab in samples]

    def tensors(self, batch: list[tuple[np.ndarray, Any]]):
        """The model's training input for a batch from :meth:`build`."""
        if self.cfg.model == "unet":
            x = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in batch]).float() / 255
            return x, torch.stack([torch.from_numpy(t) for _, t in batch]).float()
        images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in batch]
        return images, [{k: torch.from_numpy(v) for k, v in t.items()} for _, t in batch]

    def epoch(self, rng: np.random.Generator, epoch: int = 0):
        """Batches of one epoch; crops and augmentations come from the rank's own ``rng``, in step order."""
        order = self.order(epoch)
        for s in range(self.steps()):
            yield self.tensors(self.build(self.indices(order, s), rng))

    def loader(self, epoch: int, workers: int):
        """The epoch's batches built by ``workers`` processes. Each step draws from its own seed
        ``(seed, rank, epoch, step)``, so the batches do not depend on the number of workers. Workers hand back
        numpy arrays (through pipes, not ``/dev/shm``, which containers often keep tiny)."""
        loader = torch.utils.data.DataLoader(
            _StepBatches(self, epoch),
            batch_size=None,
            num_workers=workers,
            collate_fn=_as_is,
            worker_init_fn=_worker_init,
            prefetch_factor=4 if workers else None,
        )
        return (self.tensors(batch) for batch in loader)


class _StepBatches(torch.utils.data.Dataset):
    """Batch ``step`` of one epoch, augmented with ``default_rng((seed, rank, epoch, step))``."""

    def __init__(self, batches: _Batches, epoch: int) -> None:
        self.batches, self.epoch, self.order = batches, epoch, batches.order(epoch)

    def __len__(self) -> int:
        return self.batches.steps()

    def __getitem__(self, step: int):
        b = self.batches
        return b.build(b.indices(self.order, step), np.random.default_rng((b.cfg.train_seed, b.rank, self.epoch, step)))


def _as_is(batch: Any) -> Any:
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _train_step(model, batch, cfg: RunConfig, device: torch.device) -> dict[str, torch.Tensor]:
    if cfg.model == "unet":
        x, y = batch
        x = normalize(x.to(device)).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.train_amp):
            logits = model(x)
        return unet_loss(logits, y.to(device))
    images, targets = batch  # Mask R-CNN: the backbone runs in mixed precision by itself, the heads in fp32
    return model([im.to(device) for im in images], [{k: v.to(device) for k, v in t.items()} for t in targets])


def validate(model: torch.nn.Module, cfg: RunConfig, val: list[tuple[np.ndarray, np.ndarray]], device: torch.device) -> dict[str, float]:
    """Pooled GlaS F1, object Dice and object Hausdorff on ``val`` with untuned post-processing."""
    model.eval()
    run = Run(model, cfg, default_post(cfg), None, device)
    scores = [score_image(predict(run, img), lab) for img, lab in val]
    model.train()
    s = pool_scores(scores)
    return {"val_f1": s.pooled_f1, "val_object_dice": s.pooled_object_dice, "val_object_hausdorff": s.pooled_object_hausdorff}


def _write_progress(run_dir: Path, **fields: Any) -> None:
    atomic_write_text(run_dir / "progress.json", json.dumps({**fields, "time": time.time(), "pid": os.getpid()}) + "\n")


def _truncate_log(path: Path, last_epoch: int) -> None:
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= last_epoch]
        atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def _dist_setup(device_name: str | None) -> tuple[int, int, torch.device]:
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
        progress: called with a dict after every step (``event="step"``) and epoch (``event="epoch"``).
        show_bar: a tqdm progress bar on stderr.
        workers: processes that build the augmented batches (0 = in this process, from the saved RNG stream).
        time_limit: a training budget in seconds (0 = none). After two epochs (and a validation) the run times
            itself and, if ``train_epochs`` would not fit, lowers it (in ``config.json`` too) so that the schedule
            still ends; a run that overruns anyway stops after the epoch that crosses the limit.

    Returns:
        The best epoch's validation record.

    Raises:
        TrainingBusy: another training holds the lock. TrainingStopped: SIGTERM/SIGINT arrived.
        DatasetError: the GlaS folder is incomplete. ValueError: negative ``workers`` or ``time_limit``.
    """
    if workers < 0 or time_limit < 0:
        raise ValueError("workers and time_limit cannot be negative")
    run_dir = Path(run_dir)
    rank, world, dev = _dist_setup(device)
    lock = training_lock(run_dir) if rank == 0 else None
    try:
        if lock:
            lock.__enter__()
        return _fit(cfg, data, run_dir, resume, rank, world, dev, progress, show_bar, workers, time_limit)
    finally:
        if lock:
            lock.__exit__(None, None, None)
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit_epochs(cfg: RunConfig, epoch: int, started: int, elapsed: float, time_limit: float) -> int:
    """How many epochs fit ``time_limit``, judged from the ``epoch - started`` epochs that took ``elapsed``."""
    per_epoch = elapsed / max(1, epoch - started)
    affordable = int((0.97 * time_limit - elapsed) // per_epoch) if per_epoch > 0 else cfg.train_epochs
    return max(epoch + 1, min(cfg.train_epochs, epoch + affordable))


def _fit(cfg, data, run_dir: Path, resume: bool, rank: int, world: int, dev: torch.device, progress, show_bar, workers: int = 0, time_limit: float = 0.0) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path = run_dir / "last.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
        cfg = load_config(run_dir / "config.json")
    elif rank == 0:
        if last_path.exists():
            raise FileExistsError(f"{run_dir} already holds a run; use --resume or another --out folder")
        save_config(cfg, run_dir / "config.json")
    torch.manual_seed(cfg.train_seed + rank)
    scale = cfg.unet_scale if cfg.model == "unet" else 1.0
    train_items = find_items(data, ("train",))
    if cfg.train_max_images:
        train_items = train_items[: cfg.train_max_images]
    train_data = load_split(train_items, scale)
    val_data = load_split(find_items(data, ("val",))) if rank == 0 else []

    model = build_model(cfg).to(dev)
    if cfg.model == "unet":
        model = model.to(memory_format=torch.channels_last)
    batches = _Batches(cfg, train_data, rank, world)
    steps = batches.steps()
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    rng = np.random.default_rng(cfg.train_seed + 1000 * rank)
    start_epoch, best = 0, {"val_f1": -1.0, "val_object_dice": -1.0}
    if cfg.train_init and not resume:
        init = read_checkpoint(Path(cfg.train_init))["model"]
        load_weights(model, init, f"train_init {cfg.train_init}: weights do not fit this model")
    if resume:
        ckpt = read_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, best = ckpt["epoch"] + 1, ckpt["best"]
        rng.bit_generator.state = ckpt["rng_numpy"][rank] if rank < len(ckpt["rng_numpy"]) else rng.bit_generator.state
        torch.set_rng_state(ckpt["rng_torch"])
        if rank == 0:
            _truncate_log(run_dir / "log.jsonl", ckpt["epoch"] + 1)  # log epochs are 1-based
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    stop = {"flag": False}
    old_handlers = {}
    if rank == 0 and hasattr(signal, "SIGTERM"):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old_handlers[sig] = signal.signal(sig, lambda *_: stop.__setitem__("flag", True))
            except ValueError:  # not the main thread
                pass
    t_begin = time.time()
    try:
        epoch = start_epoch
        while epoch < cfg.train_epochs:
            if time_limit and epoch - start_epoch == max(2, cfg.train_val_every) and world == 1:  # a validation timed too
                fitted = _fit_epochs(cfg, epoch, start_epoch, time.time() - t_begin, time_limit)
                if fitted < cfg.train_epochs:
                    log.info("time limit %.0f s: training %d epochs instead of %d", time_limit, fitted, cfg.train_epochs)
                    cfg = dataclasses.replace(cfg, train_epochs=fitted)
                    sched.lr_lambdas[0] = _lr_lambda(cfg, steps)
                    if rank == 0:
                        save_config(cfg, run_dir / "config.json")
            t0 = time.time()
            net.train()
            sums: dict[str, float] = {}
            source = batches.loader(epoch, workers) if workers else batches.epoch(rng, epoch)
            bar = tqdm(source, total=steps, desc=f"epoch {epoch + 1}/{cfg.train_epochs}", disable=not show_bar or rank != 0, leave=False)
            for i, batch in enumerate(bar):
                losses = _train_step(net, batch, cfg, dev)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}; lower train_lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.train_grad_clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.train_grad_clip)
                opt.step()
                sched.step()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.3f}")
                if rank == 0 and (i % 5 == 0 or i == steps - 1):
                    rec = {"event": "step", "epoch": epoch + 1, "epochs": cfg.train_epochs, "step": i + 1, "steps": steps, "loss": sums["loss"] / (i + 1), "status": "running"}
                    _write_progress(run_dir, **rec)
                    if progress:
                        progress(rec)
                if stop["flag"]:
                    raise TrainingStopped(f"stopped during epoch {epoch + 1}; resume repeats it")
            record: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
            record.update({("train_" + k if k == "loss" else k): v / steps for k, v in sums.items()})
            rng_states: list = [rng.bit_generator.state]
            if world > 1:
                rng_states = [None] * world
                dist.all_gather_object(rng_states, rng.bit_generator.state)  # every rank resumes exactly
            overrun = bool(time_limit) and world == 1 and time.time() - t_begin > time_limit
            if overrun and epoch + 1 < cfg.train_epochs:
                log.info("time limit %.0f s reached: stopping after epoch %d of %d", time_limit, epoch + 1, cfg.train_epochs)
                record["stopped_at_time_limit"] = True
            if rank == 0:
                if (epoch + 1) % cfg.train_val_every == 0 or epoch + 1 == cfg.train_epochs or overrun:
                    record.update(validate(model, cfg, val_data, dev))
                record["seconds"] = round(time.time() - t0, 2)
                is_best = "val_f1" in record and (record["val_f1"], record["val_object_dice"]) > (best["val_f1"], best["val_object_dice"])
                if is_best:
                    best = {k: record[k] for k in ("epoch", "val_f1", "val_object_dice", "val_object_hausdorff")}
                    _save_atomic({"model": model.state_dict(), "config": asdict(cfg), "epoch": epoch}, run_dir / "best.pt")
                with open(run_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                _save_atomic(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch,
                        "best": best,
                        "rng_numpy": rng_states,
                        "rng_torch": torch.get_rng_state(),
                        "config": asdict(cfg),
                    },
                    last_path,
                )
                _write_progress(run_dir, event="epoch", epoch=epoch + 1, epochs=cfg.train_epochs, step=steps, steps=steps, loss=record["train_loss"], status="running")
                if progress:
                    progress({"event": "epoch", **record})
                log.info("epoch %d: %s", epoch + 1, record)
            if world > 1:
                dist.barrier()
            epoch += 1
            if overrun:
                break
        if rank == 0:
            from .tune import tune_run

            tune_run(run_dir, val_data, dev)
            _write_progress(run_dir, event="done", epoch=cfg.train_epochs, epochs=cfg.train_epochs, step=steps, steps=steps, loss=None, status="finished")
        return best
    except TrainingStopped:
        if rank == 0:
            _write_progress(run_dir, event="stopped", epoch=None, epochs=cfg.train_epochs, step=None, steps=steps, loss=None, status="stopped")
        raise
    except Exception as e:
        if rank == 0:
            _write_progress(run_dir, event="failed", status="failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
