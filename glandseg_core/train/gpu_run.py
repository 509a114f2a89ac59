"""A U-Net trained in minutes on one GPU (``scripts/gpu_train.py``): the training images and targets live on the
device, crops and augmentation are torch ops there (:mod:`.gpu_augment`), the forward pass runs in bf16 autocast,
and the run writes as it goes, so a run killed at any time leaves a usable model.

``out_dir`` receives:

================= ==================================================================================
``checkpoint.pt`` fp32 weights, optimizer, step and config (replaced every ``save_every`` seconds)
``model/``        a model folder (``weights.pt`` in fp16, BatchNorm statistics fp32; ``config.json``;
                  ``postprocess.json``): ``glandseg predict --model`` / ``load_segmenter`` read it
``log.jsonl``     one line per ``log_every`` steps: step, loss, learning rate, seconds
``val.json``      at the end: official GlaS figures on ``val`` with the default post-processing and with
                  settings tuned on ``val`` (those go to ``model/postprocess.json``)
================= ==================================================================================

The schedule (linear warm-up, cosine) is shortened after ``probe_steps`` to the steps that fit ``minutes``.
Device-agnostic: the same code runs on CPU (the test suite's dry run).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig, config_to_dict, replace_config, save_config
from ..datasets import DataLike
from ..device import pick_device
from ..files import append_line, atomic_write_text
from ..metrics import HEADLINE_FIGURES, SplitScores, pool_scores, score_image
from ..models import build_model
from ..segmenters import make_segmenter
from ..thresholds import default_post, save_post
from .gpu_augment import GpuAugment, augment, pad_to, random_crops
from .runfiles import save_checkpoint, writing
from .schedule import lr_lambda, make_optimizer
from .setup import load_data
from .tune import base_post, tune

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuRun:
    """How long and how often: ``minutes`` of training (the schedule shrinks to fit), at most ``max_steps``
    (0: the config's epochs x steps per epoch); a checkpoint every ``save_every`` seconds, a log line every
    ``log_every`` steps; ``probe_steps`` timed before the schedule is fitted."""

    minutes: float = 6.0
    max_steps: int = 0
    save_every: float = 60.0
    log_every: int = 50
    probe_steps: int = 30
    seed: int = 0


def _on_device(cfg: RunConfig, data: DataLike, dev: torch.device) -> tuple[list, list, list]:
    """(train images uint8[3, H, W], their targets float32[C, H, W], both on ``dev`` and padded to the crop;
    val (image, label map) pairs in memory)."""
    train, val = load_data(cfg, data, 0)
    size = cfg.train_crop_size
    images, targets = [], []
    for image, labels in train:
        t = np.asarray(cfg.kind.targets(cfg, image, labels), np.float32)
        images.append(pad_to(torch.from_numpy(image).permute(2, 0, 1).to(dev), size))
        targets.append(pad_to(torch.from_numpy(t).to(dev), size))
    return images, targets, val


def _half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """fp16 copy of the weights on CPU; BatchNorm running statistics stay fp32 (as ``export_model`` keeps them)."""
    return {
        k: (v.half() if v.is_floating_point() and "running_" not in k else v).detach().cpu()
        for k, v in model.state_dict().items()
    }


def save_progress(
    model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: RunConfig, step: int, out: Path
) -> None:
    """``checkpoint.pt`` (fp32, optimizer, step) and the fp16 model folder ``model/``, each written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"model": state, "optimizer": opt.state_dict(), "step": step, "config": config_to_dict(cfg)}
    save_checkpoint(ckpt, out / "checkpoint.pt")
    folder = out / "model"
    folder.mkdir(exist_ok=True)
    save_checkpoint(
        {"model": _half_state(model), "config": config_to_dict(cfg), "epoch": -1}, folder / "weights.pt"
    )
    with writing(folder / "config.json"):
        save_config(cfg, folder / "config.json")
    if not (folder / "postprocess.json").is_file():
        with writing(folder / "postprocess.json"):
            save_post(default_post(cfg), folder / "postprocess.json")


def _fit_schedule(cfg: RunConfig, spec: GpuRun, step: int, elapsed: float, pace: float) -> RunConfig:
    """``cfg`` with ``train_epochs`` lowered so that the steps left fit the time left at ``pace`` seconds a step
    (``step`` steps done in ``elapsed`` seconds)."""
    per_epoch = cfg.train_steps_per_epoch or 100
    affordable = step + int(max(0.0, 60 * spec.minutes - elapsed) / max(pace, 1e-9))
    epochs = max(1, min(cfg.train_epochs, math.ceil(affordable / per_epoch)))
    return replace_config(cfg, train_epochs=epochs, train_steps_per_epoch=per_epoch)


def _step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple, cfg: RunConfig, dev: torch.device
) -> float:
    """One optimizer step (bf16 autocast inside the kind's loss; gradients clipped as ``cfg`` says)."""
    opt.zero_grad(set_to_none=True)
    losses = cfg.kind.loss(model, batch, dev, cfg.train_amp)
    loss = torch.stack(list(losses.values())).sum()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {float(loss)}; lower train_lr")
    loss.backward()
    if cfg.train_grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train_grad_clip)
    opt.step()
    return float(loss.detach())


def _train(cfg: RunConfig, data: DataLike, out: Path, spec: GpuRun, dev: torch.device) -> tuple:
    """The training loop; returns (model, final config, steps done, seconds, val pairs)."""
    torch.manual_seed(spec.seed)
    # One crop size throughout: let cuDNN pick its kernels once.
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    gen = torch.Generator().manual_seed(spec.seed)
    images, targets, val = _on_device(cfg, data, dev)
    model = cfg.kind.prepare(build_model(cfg).to(dev)).train()
    opt = make_optimizer(cfg, model)
    per_epoch = cfg.train_steps_per_epoch or 100
    total = spec.max_steps or cfg.train_epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, per_epoch))
    aug, t0, saved, step = GpuAugment(), time.time(), time.time(), 0
    t_probe = t0
    while step < min(total, cfg.train_epochs * per_epoch):
        x, y = random_crops(images, targets, cfg.train_batch_size, cfg.train_crop_size, gen)
        loss = _step(model, opt, augment(x, y, aug, gen), cfg, dev)
        sched.step()
        step += 1
        if step == spec.probe_steps // 3:  # the first steps warm up (cuDNN, allocator): not timed
            t_probe = time.time()
        if step == spec.probe_steps:
            pace = (time.time() - t_probe) / (step - spec.probe_steps // 3)
            cfg = _fit_schedule(cfg, spec, step, time.time() - t0, pace)
            sched.lr_lambdas[0] = lr_lambda(cfg, per_epoch)
        if step % spec.log_every == 0 or step == 1:
            rec = {
                "step": step,
                "loss": round(loss, 5),
                "lr": opt.param_groups[0]["lr"],
                "seconds": round(time.time() - t0, 1),
            }
            append_line(out / "log.jsonl", json.dumps(rec))
        if time.time() - saved >= spec.save_every:
            save_progress(model, opt, cfg, step, out)
            saved = time.time()
        if time.time() - t0 > 60 * spec.minutes:
            break
    save_progress(model, opt, cfg, step, out)
    return model.eval(), cfg, step, time.time() - t0, val


def _figures(s: SplitScores) -> dict[str, float]:
    """The headline figures of ``s`` (:data:`metrics.HEADLINE_FIGURES`) as floats."""
    return {k: float(getattr(s, k)) for k in HEADLINE_FIGURES}


def validate_and_tune(
    model: torch.nn.Module, cfg: RunConfig, val: list, dev: torch.device, out: Path
) -> dict[str, Any]:
    """Official GlaS figures on ``val`` with the default settings and with settings tuned on ``val`` (written to
    ``model/postprocess.json``)."""
    post, _ = base_post(cfg)
    segmenter = make_segmenter(model, cfg, post, dev)
    with torch.inference_mode():
        raws = [segmenter.raw(img) for img, _ in val]
    plain = pool_scores(
        [
            score_image(segmenter.labels(r, post=default_post(cfg)), g)
            for r, (_, g) in zip(raws, val, strict=True)
        ]
    )
    tuned_post, report = tune(segmenter, val, raws=raws)
    with writing(out / "model" / "postprocess.json"):
        save_post(tuned_post, out / "model" / "postprocess.json")
    return {
        "images": len(val),
        "default": {"post": dataclasses.asdict(default_post(cfg)), **_figures(plain)},
        "tuned_on_val": {
            "post": dataclasses.asdict(tuned_post),
            "pooled_f1": report["val_f1"],
            "pooled_object_dice": report["val_object_dice"],
            "pooled_object_hausdorff": report["val_object_hausdorff"],
        },
    }


def train_on_gpu(
    cfg: RunConfig,
    data: DataLike,
    out_dir: str | Path,
    spec: GpuRun | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` (a U-Net) for ``spec.minutes`` on ``data``'s ``train`` split, then score it on ``val``.

    Args:
        cfg: the recipe (``glandseg-unet-gpu`` at ``unet_scale`` 0.75-1.0 is the intended one).
        data: a GlaS folder or data set (as :func:`glandseg_core.train.fit`). out_dir: created if needed.
        spec: durations (:class:`GpuRun`). device: ``cuda``, ``cpu`` or None (CUDA when present).

    Returns:
        What ``val.json`` holds: steps, seconds, device, and the ``val`` figures.

    Raises:
        DatasetError: the data set is missing or lacks a split. OSError: a file could not be written (names it).
        FloatingPointError: the loss stopped being finite.
    """
    spec = spec or GpuRun()
    dev = pick_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, steps, seconds, val = _train(cfg, data, out, spec, dev)
    t0 = time.time()
    result = {
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "config": config_to_dict(cfg),
        **validate_and_tune(model, cfg, val, dev, out),
    }
    result["val_seconds"] = round(time.time() - t0, 1)
    with writing(out / "val.json"):
        atomic_write_text(out / "val.json", json.dumps(result, indent=2) + "\n")
    return result
