"""Post-processing thresholds tuned on ``val`` (never on Test A / Test B): a small grid search.

Raw outputs are computed once per image (``segmenter.raw``); each grid point only re-runs post-processing
and the metrics, on that cache. The objective is pooled GlaS F1 + pooled object Dice.

Where the time went (cProfile, the shipped models on GlaS ``val``, 2 cores): the U-Net's watershed (about 40 %)
and object Hausdorff (35 %), the Mask R-CNN's object Hausdorff (85 %). Grid points are walked in the grid's
order, with the same results as scoring each point from scratch, but:

* the U-Net's post-processing stages are shared between grid points that differ only in a later stage
  (:mod:`glandseg_core.segmenters.unet_grid`; any other segmenter runs its own ``labels``);
* each image keeps an :class:`~glandseg_core.metrics.ImageScorer`: the ground truth's objects are prepared
  once, a predicted gland seen before (same pixels) is never measured again, identical label maps are scored
  once;
* the images are split between forked worker processes, one per CPU (:mod:`.tune_pool`).

A tuning cut short (a Stop) can continue: each scored grid point is handed to ``on_point`` (the trainer saves
them in ``tuning_state.json``, :func:`tune_checkpoint`) and comes back as ``scored``; those points are not
scored again, and the result is the same as an uninterrupted search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import model_from_state, read_checkpoint
from ..config import RunConfig, load_config
from ..files import atomic_write_text
from ..metrics import ImageScorer, ImageScores, pool_scores
from ..progress import ProgressFn, Step, report
from ..segmenters import Segmenter, make_segmenter
from ..segmenters.unet_grid import StagedLabels, applies
from ..thresholds import Post, save_post
from .runfiles import writing
from .tune_pool import ScorePool, default_workers

log = logging.getLogger(__name__)

OUTPUTS_UNIT = "val images (model outputs)"  # the first stage of tuning: one raw output per val image
GRID_UNIT = "grid points"  # the second: every grid point scored on the cached outputs
STATE = "tuning_state.json"  # the grid points scored so far, so a stopped tuning continues
RECORD_KEYS = ("objective", "val_f1", "val_object_dice", "val_object_hausdorff")
OnPoint = Callable[[int, dict[str, float]], None]


def base_post(cfg: RunConfig) -> tuple[Post, list[dict[str, Any]]]:
    """The settings a tuning segmenter is built with, and the grid of overrides to try (the model kind's
    ``tuning``: its raw outputs at these settings serve every grid point)."""
    return cfg.kind.tuning(cfg)


class ImageGrid:
    """One val image on the cache: its label map and scores at any grid point, stages and metrics shared."""

    def __init__(self, segmenter: Segmenter, raw: Any, gt: np.ndarray) -> None:
        if applies(segmenter, raw):
            self.labels: Callable[[Post], np.ndarray] = StagedLabels(raw)
        else:
            self.labels = lambda post: segmenter.labels(raw, post=post)
        self.scorer = ImageScorer(gt)

    def score(self, post: Post) -> ImageScores:
        """The image's scores with ``post`` (those of ``score_image(segmenter.labels(raw, post), gt)``)."""
        return self.scorer(self.labels(post))


def point_record(score_all: Callable[[Post], list[ImageScores]], post: Post) -> dict[str, float]:
    """One grid point's pooled figures (``RECORD_KEYS``) from the val images' scores with ``post``."""
    s = pool_scores(score_all(post))
    return {
        "objective": s.pooled_f1 + s.pooled_object_dice,
        "val_f1": s.pooled_f1,
        "val_object_dice": s.pooled_object_dice,
        "val_object_hausdorff": s.pooled_object_hausdorff,
    }


def best_point(records: Sequence[dict[str, float]]) -> int:
    """Index of the best record by objective; ties keep the earlier grid point."""
    best = 0
    for i, rec in enumerate(records):
        if rec["objective"] > records[best]["objective"] + 1e-9:
            best = i
    return best


def tune(
    segmenter: Segmenter,
    val: list[tuple[np.ndarray, np.ndarray]],
    progress: ProgressFn | None = None,
    *,
    raws: Sequence[Any] | None = None,
    scored: Sequence[dict[str, float]] = (),
    on_point: OnPoint | None = None,
    workers: int | None = None,
) -> tuple[Post, dict[str, Any]]:
    """Grid-search post-processing on ``val`` (uint8[H, W, 3] image, int32[H, W] label map) pairs.

    Args:
        segmenter: built with :func:`base_post`'s settings (its raw outputs must cover the whole grid); each
            grid point replaces some of them.
        val: the validation pairs.
        raws: the segmenter's raw outputs of the ``val`` images, when computed already (else computed here).
        progress: hears ``Step("tune", done, n_images, OUTPUTS_UNIT)`` after each raw output, then
            ``Step("tune", done, n_points, GRID_UNIT)`` after each grid point.
        scored: the records (``RECORD_KEYS``) of the grid's first points, from an earlier tuning of the same
            model on the same ``val`` that stopped: they are not scored again.
        on_point: hears ``(index, record)`` after each newly scored grid point.
        workers: processes scoring the images (:mod:`.tune_pool`; 1: this process; None: one per CPU, at most
            one per two images, where ``fork`` exists).

    Returns:
        The best settings and a report ``{"objective", "val_f1", "val_object_dice", "val_object_hausdorff",
        "grid_size"}``. Ties keep the earlier grid point.

    Raises:
        ValueError: an empty grid, more ``scored`` records than grid points, or ``raws`` not one per image.
    """
    base = segmenter.post
    _, grid = base_post(segmenter.cfg)
    if not grid or len(scored) > len(grid):
        raise ValueError(f"a tuning grid of {len(grid)} points cannot have {len(scored)} scored already")
    records = [{k: float(rec[k]) for k in RECORD_KEYS} for rec in scored]
    if len(records) < len(grid):
        if raws is not None and len(raws) != len(val):
            raise ValueError(f"{len(raws)} raw outputs for {len(val)} val images")
        images = []
        for i, (img, gt) in enumerate(val):
            images.append(ImageGrid(segmenter, segmenter.raw(img) if raws is None else raws[i], gt))
            report(progress, Step("tune", i + 1, len(val), OUTPUTS_UNIT))
        if records:  # a resumed tuning: the points already scored
            report(progress, Step("tune", len(records), len(grid), GRID_UNIT))
        n = default_workers(len(images)) if workers is None else workers
        with contextlib.ExitStack() as stack:
            score_all: Callable[[Post], list[ImageScores]] = (
                stack.enter_context(ScorePool(images, n))
                if n > 1
                else (lambda post: [im.score(post) for im in images])
            )
            for i in range(len(records), len(grid)):
                records.append(point_record(score_all, dataclasses.replace(base, **grid[i])))
                if on_point is not None:
                    on_point(i, records[i])
                report(progress, Step("tune", i + 1, len(grid), GRID_UNIT))
    best = best_point(records)
    return dataclasses.replace(base, **grid[best]), {**records[best], "grid_size": len(grid)}


def _digest(*parts: bytes | memoryview) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def state_key(ckpt_path: Path, val: list[tuple[np.ndarray, np.ndarray]], base: Post, grid: list) -> dict:
    """What a saved tuning state is valid for: the checkpoint's bytes, the val pairs, the base settings and
    the grid (a state of another model, val set or grid is ignored)."""
    arrays = [np.ascontiguousarray(a).data for pair in val for a in pair]
    return {
        "checkpoint": _digest(ckpt_path.read_bytes()),
        "val": _digest(repr([(a.shape, a.dtype.str) for p in val for a in p]).encode(), *arrays),
        "base": dataclasses.asdict(base),
        "grid": grid,
    }


def read_state(path: Path, key: dict) -> list[dict[str, float]]:
    """The scored records of a saved tuning state valid for ``key`` (none if missing, stale or unreadable)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("key") != json.loads(json.dumps(key)):
            log.info("%s: from another model, val set or grid; tuning starts over", path)
            return []
        points = [{k: float(rec[k]) for k in RECORD_KEYS} for rec in state["points"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: unreadable tuning state (%s); tuning starts over", path, e)
        return []
    return points[: len(key["grid"])]


def write_state(path: Path, key: dict, points: list[dict[str, float]]) -> None:
    """Replace the tuning state ``path`` atomically.

    Raises:
        OSError: one line naming the file and the cause.
    """
    with writing(path):
        atomic_write_text(path, json.dumps({"key": key, "points": points}) + "\n")


def tune_checkpoint(
    run_dir: Path,
    val: list[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    progress: ProgressFn | None = None,
    *,
    pause: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[Post, dict[str, Any]]:
    """Tune the run's ``best.pt`` on ``val``: (best settings, report with ``best_epoch``). ``progress`` as in
    :func:`tune`. Each scored grid point is saved in ``run_dir/tuning_state.json`` (inside ``pause()``: a block a
    stop does not cut), and a state left by a tuning of the same ``best.pt``, ``val`` and grid is continued.

    Raises:
        ModelError: ``best.pt`` is missing or unusable. OSError: the state could not be written (names it).
    """
    cfg = load_config(run_dir / "config.json")
    ckpt = read_checkpoint(run_dir / "best.pt")
    post, grid = base_post(cfg)
    key = state_key(run_dir / "best.pt", val, post, grid)
    points = read_state(run_dir / STATE, key)
    if points:
        log.info("tuning continues after %d of %d grid points", len(points), len(grid))

    def save(i: int, record: dict[str, float]) -> None:
        points.append(record)
        with pause():
            write_state(run_dir / STATE, key, points)

    segmenter = make_segmenter(
        model_from_state(cfg, ckpt["model"], device), cfg, post, device, path=run_dir
    )
    post, report = tune(segmenter, val, progress, scored=list(points), on_point=save)
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
