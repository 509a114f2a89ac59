"""Post-processing thresholds tuned on ``val`` (never on Test A / Test B): a small grid search.

Raw outputs are computed once per image (``segmenter.raw``); each grid point only re-runs post-processing
(``segmenter.labels(raw, post=...)``) and the metrics. The objective is pooled GlaS F1 + pooled object Dice.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import model_from_state, read_checkpoint
from ..config import RunConfig, load_config
from ..files import atomic_write_text
from ..metrics import pool_scores, score_image
from ..progress import ProgressFn, Step, report
from ..segmenters import Segmenter, make_segmenter
from ..thresholds import Post, save_post
from .runfiles import writing

OUTPUTS_UNIT = "val images (model outputs)"  # the first stage of tuning: one raw output per val image
GRID_UNIT = "grid points"  # the second: every grid point scored on the cached outputs


def base_post(cfg: RunConfig) -> tuple[Post, list[dict[str, Any]]]:
    """The settings a tuning segmenter is built with, and the grid of overrides to try (the model kind's
    ``tuning``: its raw outputs at these settings serve every grid point)."""
    return cfg.kind.tuning(cfg)


def tune(
    segmenter: Segmenter, val: list[tuple[np.ndarray, np.ndarray]], progress: ProgressFn | None = None
) -> tuple[Post, dict[str, Any]]:
    """Grid-search post-processing on ``val`` (uint8[H, W, 3] image, int32[H, W] label map) pairs.

    Args:
        segmenter: built with :func:`base_post`'s settings (its raw outputs must cover the whole grid); each
            grid point replaces some of them.
        val: the validation pairs.
        progress: hears ``Step("tune", done, n_images, OUTPUTS_UNIT)`` after each raw output, then
            ``Step("tune", done, n_points, GRID_UNIT)`` after each grid point.

    Returns:
        The best settings and a report ``{"objective", "val_f1", "val_object_dice", "val_object_hausdorff",
        "grid_size"}``. Ties keep the earlier grid point.
    """
    base = segmenter.post
    _, grid = base_post(segmenter.cfg)
    raws = []
    for i, (img, _) in enumerate(val):
        raws.append(segmenter.raw(img))
        report(progress, Step("tune", i + 1, len(val), OUTPUTS_UNIT))
    gts = [lab for _, lab in val]
    best_post, best = base, None
    for i, params in enumerate(grid):
        post = dataclasses.replace(base, **params)
        s = pool_scores(
            [score_image(segmenter.labels(r, post=post), g) for r, g in zip(raws, gts, strict=True)]
        )
        objective = s.pooled_f1 + s.pooled_object_dice
        if best is None or objective > best["objective"] + 1e-9:
            best_post = post
            best = {
                "objective": objective,
                "val_f1": s.pooled_f1,
                "val_object_dice": s.pooled_object_dice,
                "val_object_hausdorff": s.pooled_object_hausdorff,
            }
        report(progress, Step("tune", i + 1, len(grid), GRID_UNIT))
    if best is None:
        raise ValueError("empty tuning grid")
    best["grid_size"] = len(grid)
    return best_post, best


def tune_checkpoint(
    run_dir: Path,
    val: list[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    progress: ProgressFn | None = None,
) -> tuple[Post, dict[str, Any]]:
    """Tune the run's ``best.pt`` on ``val`` without writing anything: (best settings, report with
    ``best_epoch``). ``progress`` as in :func:`tune`.

    Raises:
        ModelError: ``best.pt`` is missing or unusable.
    """
    cfg = load_config(run_dir / "config.json")
    ckpt = read_checkpoint(run_dir / "best.pt")
    post, _ = base_post(cfg)
    segmenter = make_segmenter(
        model_from_state(cfg, ckpt["model"], device), cfg, post, device, path=run_dir
    )
    post, report = tune(segmenter, val, progress)
    report["best_epoch"] = int(ckpt.get("epoch", -1)) + 1
    return post, report


def save_tuning(run_dir: Path, post: Post, report: dict[str, Any]) -> None:
    """Write ``postprocess.json`` and ``tuning.json`` (report and settings) in ``run_dir``.

    Raises:
        OSError: a file could not be written (names it).
    """
    with writing(run_dir / "postprocess.json"):
        save_post(post, run_dir / "postprocess.json")
    text = json.dumps({**report, "post": dataclasses.asdict(post)}, indent=2) + "\n"
    with writing(run_dir / "tuning.json"):
        atomic_write_text(run_dir / "tuning.json", text)


def tune_run(
    run_dir: Path, val: list[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, Any]:
    """Tune the run's ``best.pt`` on ``val``; writes ``postprocess.json`` and ``tuning.json`` in ``run_dir``.

    Raises:
        ModelError: ``best.pt`` is missing or unusable. OSError: a file could not be written (names it).
    """
    post, report = tune_checkpoint(run_dir, val, device)
    save_tuning(run_dir, post, report)
    return report
