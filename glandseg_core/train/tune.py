"""Post-processing thresholds tuned on ``val`` (never on Test A / Test B): a small grid search.

Raw outputs are computed once per image; each grid point only re-runs post-processing and the metrics. The
objective is pooled GlaS F1 + pooled object Dice on ``val``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from .config import load_config
from .infer import Run, maskrcnn_outputs, model_from_state, read_checkpoint, unet_probs
from .io import atomic_write_text
from .metrics import pool_scores, score_image
from .postprocess import MaskRCNNPost, UNetPost, maskrcnn_to_labels, save_post, unet_to_labels

UNET_GRID = {
    "fg_thresh": (0.4, 0.5, 0.6),
    "contour_thresh": (0.3, 0.5, 0.7),
    "min_marker_area": (20, 80),
    "min_area": (100, 300, 600),
}
UNET_SEMANTIC_GRID = {"fg_thresh": (0.4, 0.5, 0.6), "min_area": (100, 300, 600)}
MASKRCNN_GRID = {"score_thresh": (0.3, 0.5, 0.7, 0.85), "min_area": (100, 300, 600), "min_visible": (0.3, 0.6)}


def _grid(grid: dict[str, tuple]) -> list[dict]:
    return [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]


def tune(run: Run, val: list[tuple[np.ndarray, np.ndarray]]) -> tuple[UNetPost | MaskRCNNPost, dict]:
    """Grid-search ``run``'s post-processing on ``val`` (image, labels) pairs.

    Returns:
        The best settings and a report ``{"objective", "val_f1", "val_object_dice", "val_object_hausdorff", "grid_size"}``.
    """
    gts = [lab for _, lab in val]
    if run.kind == "unet":
        raws = [unet_probs(run, img) for img, _ in val]
        base = UNetPost(instance=run.cfg.unet_instance)
        grid = _grid(UNET_GRID if run.cfg.unet_instance else UNET_SEMANTIC_GRID)
        segment = lambda raw, post: unet_to_labels(raw, post)
    else:
        raws = []
        for img, _ in val:
            scores, masks = maskrcnn_outputs(run, img)
            keep = scores >= min(MASKRCNN_GRID["score_thresh"])
            raws.append((scores[keep], masks[keep] > 0.5, img.shape[:2]))
        base = MaskRCNNPost()
        grid = _grid(MASKRCNN_GRID)
        segment = lambda raw, post: maskrcnn_to_labels(raw[0], raw[1].astype(np.float32), post, raw[2])
    best_post, best = base, None
    for params in grid:
        post = dataclasses.replace(base, **params)
        s = pool_scores([score_image(segment(r, post), g) for r, g in zip(raws, gts)])
        objective = s.pooled_f1 + s.pooled_object_dice
        if best is None or objective > best["objective"] + 1e-9:
            best_post = post
            best = {
                "objective": objective,
                "val_f1": s.pooled_f1,
                "val_object_dice": s.pooled_object_dice,
                "val_object_hausdorff": s.pooled_object_hausdorff,
            }
    assert best is not None
    best["grid_size"] = len(grid)
    return best_post, best


def tune_run(run_dir: Path, val: list[tuple[np.ndarray, np.ndarray]], device: torch.device) -> dict:
    """Tune the run's ``best.pt`` on ``val``; writes ``postprocess.json`` and ``tuning.json`` in ``run_dir``."""
    cfg = load_config(run_dir / "config.json")
    ckpt = read_checkpoint(run_dir / "best.pt")
    run = Run(model_from_state(cfg, ckpt["model"], device), cfg, UNetPost(), run_dir, device)
    post, report = tune(run, val)
    save_post(post, run_dir / "postprocess.json")
    report["best_epoch"] = int(ckpt.get("epoch", -1)) + 1
    atomic_write_text(run_dir / "tuning.json", json.dumps({**report, "post": dataclasses.asdict(post)}, indent=2) + "\n")
    return report
