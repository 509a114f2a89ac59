"""Before vs after: two models scored on the same images with the official GlaS metrics, and their paired
differences (e.g. a shipped model and its fine-tuned copy on the images held out of the fine-tuning).

:func:`compare_models` scores both (:func:`~.scoring.evaluate`, each with its own folder under ``out_dir``:
``base/`` and ``tuned/`` with ``per_image.csv``, ``summary.json`` and the predicted label maps);
:func:`paired_table` turns the two per-image tables into one row per metric: the pooled figure of each model
and the per-image difference (tuned - base) with its paired bootstrap 95% interval
(:func:`glandseg_core.stats.paired_comparison`). Nothing is written without ``out_dir``, and no test-set
history is recorded (these are not GlaS Test A / B scorings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..datasets import DataLike, as_dataset
from ..errors import DatasetError
from ..progress import ProgressFn
from ..segmenters import Segmenter, load_segmenter
from ..stats import METRICS, paired_comparison
from .scoring import evaluate

SIDES = ("base", "tuned")
#: The pooled figure of each metric in an ``evaluate`` summary.
POOLED = {
    "f1": "pooled_f1",
    "object_dice": "pooled_object_dice",
    "object_hausdorff": "pooled_object_hausdorff",
}
FEW_IMAGES = 5  # below this many paired images, the interval says little: the table says so


@dataclass(frozen=True)
class ModelComparison:
    """Two models scored on the same images.

    Attributes:
        per_image: ``{"base": table, "tuned": table}``, each a per-image table as ``evaluate`` returns it.
        summary: ``{"base": {split: {...}}, "tuned": {...}}``: each model's ``evaluate`` summary.
    """

    per_image: dict[str, pd.DataFrame]
    summary: dict[str, dict[str, dict]]


def _segmenter(model: str | os.PathLike | Segmenter, device: str | None) -> Segmenter:
    return model if isinstance(model, Segmenter) else load_segmenter(model, device=device)


def compare_models(
    base: str | os.PathLike | Segmenter,
    tuned: str | os.PathLike | Segmenter,
    data: DataLike,
    splits: Sequence[str] = ("test",),
    out_dir: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    progress: ProgressFn | None = None,
) -> ModelComparison:
    """Score ``base`` and ``tuned`` on the same ``splits`` of ``data`` (e.g. the images held out of a fine-tune).

    Args:
        base, tuned: model folders (``weights.pt``/``best.pt`` with ``config.json``) or loaded segmenters.
        data: a data set or a folder in any layout (:func:`~glandseg_core.datasets.as_dataset`).
        splits: the splits scored (default ``test``: the held-out images of a fine-tuning run's data).
        out_dir: when given, ``out_dir/base/`` and ``out_dir/tuned/`` get ``per_image.csv``, ``summary.json``
            and ``predictions/<image>_labels.png`` (int32 label maps, 0=background, 1..N glands).
        device: ``cpu``, ``cuda`` or None (CUDA when present). progress: hears each model's ``evaluate`` steps.

    Returns:
        The :class:`ModelComparison`.

    Raises:
        DatasetError: the splits hold no annotated image (or are unknown). ModelError: a model cannot be loaded.
    """
    dataset = as_dataset(data)
    if not dataset.items(list(splits)):
        raise DatasetError(f"no images in split(s) {', '.join(splits)} to compare the models on")
    out = Path(out_dir) if out_dir is not None else None
    tables: dict[str, pd.DataFrame] = {}
    summaries: dict[str, dict[str, dict]] = {}
    for side, model in zip(SIDES, (base, tuned), strict=True):
        tables[side], summaries[side] = evaluate(
            dataset,
            list(splits),
            out / side if out is not None else None,
            segmenter=_segmenter(model, device),
            save_predictions=out is not None,
            progress=progress,
        )
    return ModelComparison(tables, summaries)


def read_comparison(out_dir: str | os.PathLike) -> ModelComparison | None:
    """The comparison :func:`compare_models` wrote into ``out_dir``, or None when a side's files are missing."""
    out = Path(out_dir)
    tables, summaries = {}, {}
    for side in SIDES:
        try:
            tables[side] = pd.read_csv(out / side / "per_image.csv", dtype={"image": str})
            summaries[side] = json.loads((out / side / "summary.json").read_text())
        except (OSError, ValueError):
            return None
    return ModelComparison(tables, summaries)


def _pooled(summary: dict[str, dict], metric: str) -> float:
    """The pooled figure of ``metric`` over every scored image (``all`` when several splits were scored)."""
    entry = summary.get("all") or (next(iter(summary.values())) if len(summary) == 1 else {})
    return float(entry.get(POOLED[metric], float("nan")))


def paired_table(comparison: ModelComparison, n_boot: int = 10000, seed: int = 0) -> pd.DataFrame:
    """One row per GlaS metric: each model's pooled figure and the per-image difference tuned - base.

    Returns:
        Columns metric (F1, Object Dice, Object Hausdorff (px)), higher_is_better, base, tuned (pooled, as the
        official figures), n (paired images), mean_diff, ci_low, ci_high (percentile bootstrap 95% interval
        of the mean per-image difference; NaN below 2 images), p_value (Wilcoxon), note (why a figure is
        missing, and a warning when fewer than ``FEW_IMAGES`` images were paired).
    """
    rows = []
    a = comparison.per_image["base"].set_index("image")
    b = comparison.per_image["tuned"].set_index("image")
    for metric, (label, higher) in METRICS.items():
        r = paired_comparison(a[metric], b[metric], n_boot=n_boot, seed=seed)
        note = r.note
        if 0 < r.n < FEW_IMAGES and not note:
            note = f"only {r.n} images: the interval is wide and says little"
        rows.append(
            {
                "metric": label,
                "higher_is_better": higher,
                "base": _pooled(comparison.summary["base"], metric),
                "tuned": _pooled(comparison.summary["tuned"], metric),
                "n": r.n,
                "mean_diff": r.mean_diff,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "p_value": r.p_value,
                "note": note,
            }
        )
    return pd.DataFrame(rows)


__all__ = ["FEW_IMAGES", "SIDES", "ModelComparison", "compare_models", "paired_table", "read_comparison"]
