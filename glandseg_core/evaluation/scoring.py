"""Score a segmenter, or a folder of label maps from any method, on any data set with the official GlaS metrics.

:func:`evaluate` returns the per-image table and the summary (``{split: {pooled_f1, ...}}``; with more than one
split, ``all`` pools every evaluated image) and, by default, writes nothing. Its caller switches the files on:
``out_dir`` writes ``per_image.csv`` and ``summary.json`` (:mod:`.records`), ``save_predictions`` the label maps,
``record_history`` a line in the model folder's ``test_history.jsonl`` per test split; ``glandseg evaluate``
(and the dashboard, which runs it) asks for all of them.

``relabel_gt=True`` adds a diagnostic, never a replacement: the same predictions scored against ground truth
whose ids are split into connected components (8-connectivity), the convention of several published GlaS
evaluations. It is written beside the official files as ``per_image_relabel_gt.csv`` and
``summary_relabel_gt.json``; the official figures, ``summary.json`` and the return value are unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.measure import label as connected_components

from ..datasets import DataLike, Item, as_dataset
from ..errors import ImageError, WriteError
from ..files import describe_os_error
from ..imaging.io import read_label_map, write_label_png
from ..metrics import HEADLINE_FIGURES, ImageScores, SplitScores, pool_scores, score_image
from ..progress import ProgressFn, Step, report
from ..segmenters import Segmenter
from .records import RELABEL_SUFFIX, record_test_scoring, write_results

# Saved predictions are named <image>_labels.png (never a GlaS file name); --predictions reads both forms.
PREDICTION_SUFFIX = "_labels"
PREDICTION_EXTS = (".png", ".tif", ".tiff", ".bmp")
PER_IMAGE_COLUMNS = [
    "image", "split", "grade", "n_gt", "n_pred", "tp", "fp", "fn", "f1", "object_dice", "object_hausdorff",
    "pixel_iou", "count_score", "precision", "recall", "f2", "pixel_dice", "seconds",
]  # fmt: skip
SUMMARY_KEYS = [
    *HEADLINE_FIGURES, "tp", "fp", "fn", "n_images", "precision", "recall", "f2", "mean_pixel_iou",
    "mean_pixel_dice", "mean_count_score",
]  # fmt: skip


def _row(item: Item, s: ImageScores, seconds: float) -> dict:
    d = s.as_dict()
    return {
        "image": item.name,
        "split": item.split,
        "grade": item.grade or "unknown",
        **{k: d[k] for k in PER_IMAGE_COLUMNS[3:-1]},
        "seconds": round(seconds, 3),
    }


def summarise(scores_by_split: dict[str, list[ImageScores]]) -> dict[str, dict]:
    """Pool each split (and ``all`` when there are several) into the summary dict."""
    out: dict[str, dict] = {}
    for split, scores in scores_by_split.items():
        out[split] = _summary(pool_scores(scores))
    if len(scores_by_split) > 1:
        out["all"] = _summary(pool_scores([s for v in scores_by_split.values() for s in v]))
    return out


def _summary(s: SplitScores) -> dict:
    d = s.as_dict()
    return {k: d[k] for k in SUMMARY_KEYS}


def prediction_files(pdir: Path, names: Sequence[str]) -> dict[str, Path]:
    """The label map of each image in ``names`` found in ``pdir`` (``<image>.png`` or ``<image>_labels.png``,
    or .tif/.tiff/.bmp).

    Raises:
        ImageError: when the folder is missing, an image has no prediction, or two files could be its prediction.
    """
    if not pdir.is_dir():
        raise ImageError(f"predictions folder {pdir} does not exist")
    found: dict[str, list[Path]] = {}
    for p in sorted(pdir.iterdir()):
        if p.suffix.lower() in PREDICTION_EXTS:
            found.setdefault(p.stem.removesuffix(PREDICTION_SUFFIX), []).append(p)
    missing = [n for n in names if n not in found]
    if missing:
        raise ImageError(
            f"{pdir}: no prediction for {len(missing)} images, e.g. {', '.join(missing[:5])}"
        )
    for name in names:
        if len(found[name]) > 1:
            both = " and ".join(p.name for p in found[name])
            raise ImageError(f"{pdir}: {both} could each be the prediction for {name}; keep one")
    return {name: found[name][0] for name in names}


def relabel_components(gt: np.ndarray) -> np.ndarray:
    """A diagnostic ground truth: each id split into its 8-connected pieces (int32[H, W], 0=background, 1..N).

    Never used for the official figures (docs/METRICS.md: one id is one object, however many pieces it has).
    """
    return connected_components(gt, background=0, connectivity=2).astype(np.int32)


Predict = Callable[[Item, np.ndarray, np.ndarray], np.ndarray]  # (item, image, gt) -> label map


class _Tally:
    """Per-image rows and scores by split, turned into the (table, summary) pair."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.by_split: dict[str, list[ImageScores]] = {}

    def add(self, item: Item, s: ImageScores, seconds: float) -> None:
        self.rows.append(_row(item, s, seconds))
        self.by_split.setdefault(item.split, []).append(s)

    def result(self) -> tuple[pd.DataFrame, dict[str, dict]]:
        return pd.DataFrame(self.rows, columns=PER_IMAGE_COLUMNS), summarise(self.by_split)


def score_items(
    items: Sequence[Item],
    predict: Predict,
    *,
    relabel_gt: bool = False,
    save_to: Path | None = None,
    progress: ProgressFn | None = None,
) -> tuple[_Tally, _Tally]:
    """Predict and score each item (official, and the relabelled diagnostic when ``relabel_gt``); the label
    maps go to ``save_to/<image>_labels.png`` when it is given; ``progress`` hears of each image."""
    official, diagnostic = _Tally(), _Tally()
    report(progress, Step("evaluate", 0, len(items), "images"))
    for i, item in enumerate(items):
        image, gt = item.load_annotated()
        t0 = time.perf_counter()
        pred = predict(item, image, gt)
        seconds = time.perf_counter() - t0
        if save_to is not None:
            _save_prediction(save_to / f"{item.name}{PREDICTION_SUFFIX}.png", pred)
        official.add(item, score_image(pred, gt), seconds)
        if relabel_gt:
            diagnostic.add(item, score_image(pred, relabel_components(gt)), seconds)
        report(progress, Step("evaluate", i + 1, len(items), "images", {"image": item.name}))
    return official, diagnostic


def _save_prediction(path: Path, pred: np.ndarray) -> None:
    """Write one predicted label map atomically; a failure is one line naming the file (a full disk)."""
    try:
        path.parent.mkdir(exist_ok=True)
        write_label_png(path, pred)
    except OSError as e:
        raise WriteError(describe_os_error(None, e)) from e


def _predictor(
    segmenter: Segmenter | None, predictions: str | os.PathLike | None, items: list[Item]
) -> Predict:
    """Segment each item with ``segmenter``, or read its label map from the ``predictions`` folder."""
    if segmenter is not None:
        return lambda item, image, gt: segmenter(image, mpp=item.mpp)  # at the model's scale
    files = prediction_files(Path(predictions), [it.name for it in items])  # type: ignore[arg-type]
    return lambda item, image, gt: read_label_map(files[item.name], shape=gt.shape)


def _write(out: Path, table: pd.DataFrame, summary: dict[str, dict], diagnostic: _Tally | None) -> None:
    """The official files, and the relabelled diagnostic's beside them when it was scored."""
    write_results(out, table, summary)
    if diagnostic is not None:
        write_results(out, *diagnostic.result(), RELABEL_SUFFIX)


def evaluate(
    data: DataLike,
    splits: Sequence[str] | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    segmenter: Segmenter | None = None,
    predictions: str | os.PathLike | None = None,
    save_predictions: bool = False,
    relabel_gt: bool = False,
    record_history: bool = False,
    reason: str = "",
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Score ``segmenter`` (or the label maps ``<image>.png`` in ``predictions``) on ``splits`` of ``data``.

    Args:
        data: a :class:`~glandseg_core.datasets.Dataset`, a GlaS folder (None: ``$GLANDSEG_DATA``) or
            (uint8[H, W, 3] image, int32[H, W] label map) pairs (split ``test``).
        splits: e.g. ``["val"]`` (GlaS: train, val, testA, testB, all); None: every split of ``data``.
        out_dir: when given, ``per_image.csv`` and ``summary.json`` are written there; None writes nothing.
        segmenter: a loaded model (:func:`segmenters.load_segmenter`, with or without TTA); exactly one of
            ``segmenter`` and ``predictions``. Items whose ``mpp`` differs from its ``cfg.data_mpp`` are
            segmented at the model's scale.
        predictions: a folder of label maps named ``<image>.png`` or ``<image>_labels.png`` (or .tif/.bmp).
        save_predictions: also write each predicted label map as ``out_dir/predictions/<image>_labels.png``.
        relabel_gt: also write the connected-components diagnostic (module docstring) into ``out_dir``.
        record_history: append the test splits' figures to the segmenter's model folder
            ``test_history.jsonl`` with ``reason`` (the CLI does; a segmenter without a folder records nothing).
        progress: hears a :class:`~glandseg_core.progress.Step` (phase ``evaluate``, unit ``images``) per image.

    Returns:
        (per-image table, summary dict): the official figures (``relabel_gt`` never changes them).

    Raises:
        DatasetError, ImageError: with one-line messages naming the file or item.
        WriteError: a file could not be written (a full disk; one line naming it, no temporary file left).
        ValueError: not exactly one of segmenter and predictions; files asked for without ``out_dir``.
    """
    if (segmenter is None) == (predictions is None):
        raise ValueError("give exactly one of segmenter and predictions")
    if out_dir is None and (save_predictions or relabel_gt):
        raise ValueError("save_predictions and relabel_gt write files: give out_dir")
    items = as_dataset(data).items(splits)
    predict = _predictor(segmenter, predictions, items)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    save_to = out / "predictions" if out and save_predictions else None
    official, diagnostic = score_items(
        items, predict, relabel_gt=relabel_gt, save_to=save_to, progress=progress
    )
    table, summary = official.result()
    if out is not None:
        _write(out, table, summary, diagnostic if relabel_gt else None)
    model_dir = segmenter.path if segmenter is not None else None
    if record_history and model_dir is not None and model_dir.is_dir():
        record_test_scoring(model_dir, summary, tta=segmenter.tta, reason=reason)  # type: ignore[union-attr]
    return table, summary
