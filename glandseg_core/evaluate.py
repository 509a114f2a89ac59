"""Score a segmenter, or a folder of label maps from any method, on GlaS splits.

Writes ``per_image.csv`` (one row per image) and ``summary.json`` (``{split: {pooled_f1, ...}}``; with more than
one split, ``all`` pools every evaluated image). :func:`compare_tta` scores a model folder without and with
test-time augmentation, side by side.

Test-set hygiene: every time a segmenter loaded from a folder is scored on Test A or Test B, one line per test
split is appended to that folder's ``test_history.jsonl`` (date, git commit, split, figures, TTA, reason), so a
model card can say how often its test sets were looked at and why (:func:`read_test_history`).

``relabel_gt=True`` adds a diagnostic, never a replacement: the same predictions scored against ground truth
whose ids are split into connected components (8-connectivity), the convention of several published GlaS
evaluations. It is written beside the official files as ``per_image_relabel_gt.csv`` and
``summary_relabel_gt.json``; the official figures, ``summary.json`` and the return value are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.measure import label as connected_components

from .data import GlasItem, find_items, load_item
from .errors import ImageError
from .files import atomic_write_text
from .imaging.io import read_label_map, write_label_png
from .metrics import ImageScores, SplitScores, pool_scores, score_image
from .segment import Segmenter, load_segmenter

log = logging.getLogger(__name__)

# Saved predictions are named <image>_labels.png (never a GlaS file name); --predictions reads both forms.
PREDICTION_SUFFIX = "_labels"
PREDICTION_EXTS = (".png", ".tif", ".tiff", ".bmp")
PER_IMAGE_COLUMNS = [
    "image", "split", "grade", "n_gt", "n_pred", "tp", "fp", "fn", "f1", "object_dice", "object_hausdorff",
    "pixel_iou", "count_score", "precision", "recall", "f2", "pixel_dice", "seconds",
]  # fmt: skip
TEST_SPLITS = ("testA", "testB")
TEST_HISTORY = "test_history.jsonl"
HISTORY_FIGURES = (
    "pooled_f1", "pooled_object_dice", "pooled_object_hausdorff", "mean_f1", "mean_object_dice",
    "mean_object_hausdorff", "tp", "fp", "fn", "n_images",
)  # fmt: skip
RELABEL_SUFFIX = (
    "_relabel_gt"  # per_image_relabel_gt.csv, summary_relabel_gt.json: the diagnostic's files
)
SUMMARY_KEYS = [
    "pooled_f1", "pooled_object_dice", "pooled_object_hausdorff", "mean_f1", "mean_object_dice",
    "mean_object_hausdorff", "tp", "fp", "fn", "n_images", "precision", "recall", "f2", "mean_pixel_iou",
    "mean_pixel_dice", "mean_count_score",
]  # fmt: skip


def _expand(splits: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for s in splits:
        for t in ("train", "val", "testA", "testB") if s == "all" else (s,):
            if t not in out:
                out.append(t)
    return out


def _row(item: GlasItem, s: ImageScores, seconds: float) -> dict:
    d = s.as_dict()
    return {
        "image": item.name,
        "split": item.split,
        "grade": item.grade,
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


def evaluate(
    data: str | os.PathLike | None,
    splits: list[str] | tuple[str, ...],
    out_dir: str | os.PathLike,
    *,
    segmenter: Segmenter | None = None,
    predictions: str | os.PathLike | None = None,
    save_predictions: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    relabel_gt: bool = False,
    reason: str = "",
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Score ``segmenter`` (or the label maps ``<image>.png`` in ``predictions``) on ``splits``.

    Args:
        data: GlaS folder (else ``$GLANDSEG_DATA``).
        splits: names from train, val, testA, testB, all.
        out_dir: where ``per_image.csv`` and ``summary.json`` go (and ``predictions/`` with ``save_predictions``).
        segmenter: a loaded model (:func:`segment.load_segmenter`, with or without TTA); exactly one of
            ``segmenter`` and ``predictions``.
        predictions: a folder of label maps named ``<image>.png`` or ``<image>_labels.png`` (or .tif/.bmp).
        save_predictions: also write each predicted label map as ``out_dir/predictions/<image>_labels.png``.
        progress: called as ``progress(done, total, image_name)``. reason: why, for ``test_history.jsonl``.
        relabel_gt: also write the connected-components diagnostic (module docstring) beside the official files.

    Returns:
        (per-image table, summary dict): the official figures (``relabel_gt`` never changes them).

    Raises:
        DatasetError, ImageError: with one-line messages naming the file.
    """
    if (segmenter is None) == (predictions is None):
        raise ValueError("give exactly one of segmenter and predictions")
    out_dir, items = Path(out_dir), find_items(data, _expand(splits))
    names = [it.name for it in items]
    pred_files = {} if predictions is None else prediction_files(Path(predictions), names)
    out_dir.mkdir(parents=True, exist_ok=True)
    official, diagnostic = _new_tally(), _new_tally()
    for i, item in enumerate(items):
        image, gt = load_item(item)
        t0 = time.perf_counter()
        if segmenter is not None:
            pred = segmenter(image)
        else:
            pred = read_label_map(pred_files[item.name], shape=gt.shape)
        seconds = time.perf_counter() - t0
        if save_predictions:
            (out_dir / "predictions").mkdir(exist_ok=True)
            write_label_png(out_dir / "predictions" / f"{item.name}{PREDICTION_SUFFIX}.png", pred)
        _add(official, item, score_image(pred, gt), seconds)
        if relabel_gt:
            _add(diagnostic, item, score_image(pred, relabel_components(gt)), seconds)
        if progress:
            progress(i + 1, len(items), item.name)
    table, summary = _write(out_dir, official, "")
    if relabel_gt:
        _write(out_dir, diagnostic, RELABEL_SUFFIX)
    if segmenter is not None and segmenter.path is not None and segmenter.path.is_dir():
        record_test_scoring(segmenter.path, summary, tta=segmenter.tta, reason=reason)
    return table, summary


_Tally = tuple[list[dict], dict[str, list[ImageScores]]]  # per-image rows, scores by split


def _new_tally() -> _Tally:
    return [], {}


def _add(tally: _Tally, item: GlasItem, s: ImageScores, seconds: float) -> None:
    tally[0].append(_row(item, s, seconds))
    tally[1].setdefault(item.split, []).append(s)


def _write(out_dir: Path, tally: _Tally, suffix: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Write ``per_image<suffix>.csv`` and ``summary<suffix>.json``; the relabelled diagnostic says what it is."""
    table, summary = pd.DataFrame(tally[0], columns=PER_IMAGE_COLUMNS), summarise(tally[1])
    atomic_write_text(out_dir / f"per_image{suffix}.csv", table.to_csv(index=False, float_format="%.6g"))
    note = "ground-truth ids split into connected components (8-connectivity); NOT the official GlaS figures"
    text = json.dumps({"diagnostic": note, **summary} if suffix else summary, indent=2)
    atomic_write_text(out_dir / f"summary{suffix}.json", text + "\n")
    return table, summary


def relabel_components(gt: np.ndarray) -> np.ndarray:
    """A diagnostic ground truth: each id split into its 8-connected pieces (int32[H, W], 0=background, 1..N).

    Never used for the official figures (GLAS_METRICS.md: one id is one object, however many pieces it has).
    """
    return connected_components(gt, background=0, connectivity=2).astype(np.int32)


def read_relabel_summary(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The connected-components diagnostic of an evaluation (``{split: summary}``), or {} when not written."""
    path = Path(out_dir) / f"summary{RELABEL_SUFFIX}.json"
    if not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, dict)}


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_commit(folder: Path) -> str:
    """The short commit of the repository holding ``folder``, ``+dirty`` when the folder's tracked files differ
    from it; ``unknown`` outside a repository."""
    try:
        commit = _git(folder, "rev-parse", "--short", "HEAD")
        return commit + (
            "+dirty" if _git(folder, "status", "--porcelain", "--untracked-files=no", "--", ".") else ""
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_test_scoring(
    model_dir: str | os.PathLike, summary: dict[str, dict], *, tta: bool = False, reason: str = ""
) -> int:
    """Append one line per test split of ``summary`` to ``model_dir/test_history.jsonl``.

    Each line: ``{"date", "commit", "split", "tta", "reason", "figures": {pooled_f1, ...}}``. Splits other than
    Test A / Test B are not recorded (``val`` may be scored as often as selection needs).

    Returns:
        How many lines were appended.
    """
    model_dir = Path(model_dir)
    splits = [s for s in TEST_SPLITS if s in summary]
    if not splits:
        return 0
    date = datetime.now(UTC).isoformat(timespec="seconds")
    commit = _git_commit(model_dir)
    lines = []
    for split in splits:
        figures = {k: summary[split][k] for k in HISTORY_FIGURES if k in summary[split]}
        rec = {
            "date": date,
            "commit": commit,
            "split": split,
            "tta": tta,
            "reason": reason,
            "figures": figures,
        }
        lines.append(json.dumps(rec) + "\n")
    with open(model_dir / TEST_HISTORY, "a", encoding="utf-8") as f:
        f.write("".join(lines))
    return len(lines)


def read_test_history(model_dir: str | os.PathLike) -> list[dict]:
    """The records of ``model_dir/test_history.jsonl``, oldest first ([] when there is none; torn lines skipped)."""
    path = Path(model_dir) / TEST_HISTORY
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("split") in TEST_SPLITS:
            out.append(rec)
    return out


def format_summary(summary: dict[str, dict]) -> str:
    """A small text table of the pooled and mean figures per split."""
    lines = [
        f"{'split':<7} {'n':>3} {'F1':>6} {'objDice':>8} {'objHaus':>8} | {'meanF1':>6} {'meanDice':>8} {'meanHaus':>8}"
    ]
    for split, s in summary.items():
        lines.append(
            f"{split:<7} {s['n_images']:>3} {s['pooled_f1']:>6.3f} {s['pooled_object_dice']:>8.3f} {s['pooled_object_hausdorff']:>8.1f} | "
            f"{s['mean_f1']:>6.3f} {s['mean_object_dice']:>8.3f} {s['mean_object_hausdorff']:>8.1f}"
        )
    return "\n".join(lines)


_TTA_METRICS = (
    ("pooled_f1", "f1"),
    ("pooled_object_dice", "object_dice"),
    ("pooled_object_hausdorff", "object_hausdorff"),
)


def _tta_row(split: str, plain: dict, tta: dict, tables: dict[str, pd.DataFrame]) -> dict[str, object]:
    row: dict[str, object] = {"split": split, "n_images": plain["n_images"]}
    for key, short in _TTA_METRICS:
        row[short], row[f"{short}_tta"], row[f"d_{short}"] = plain[key], tta[key], tta[key] - plain[key]
    for name, t in tables.items():
        sel = t if split == "all" else t[t["split"] == split]
        row[f"sec_per_image_{name}"] = float(sel["seconds"].mean())
    return row


def compare_tta(
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None,
    splits: Sequence[str],
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Evaluate a model folder without and with TTA on ``splits``, side by side.

    Args:
        model_dir: e.g. ``trained_models/unet``. data: the GlaS folder (else ``$GLANDSEG_DATA``).
        splits: e.g. ``["val", "testA", "testB"]``.
        out_dir: where ``plain/`` and ``tta/`` (each ``per_image.csv``, ``summary.json``) and ``tta_report.csv``
            go; a temporary folder when None.
        device: ``cpu``, ``cuda`` or None for automatic.

    Returns:
        One row per split (and ``all``): pooled F1, object Dice and object Hausdorff without and with TTA, their
        differences (``d_*``; higher is better for F1 and Dice, lower for Hausdorff) and seconds per image.
    """
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="glandseg-tta-"))
    segmenter = load_segmenter(model_dir, device=device)
    tables, summaries = {}, {}
    for name, flag in (("plain", False), ("tta", True)):
        segmenter.tta = flag
        t0 = time.perf_counter()
        tables[name], summaries[name] = evaluate(
            data, list(splits), out / name, segmenter=segmenter, reason=f"TTA comparison ({name})"
        )
        log.info("%s: %d images in %.1f s", name, len(tables[name]), time.perf_counter() - t0)
    rows = [
        _tta_row(split, plain, summaries["tta"][split], tables)
        for split, plain in summaries["plain"].items()
    ]
    report = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    report.to_csv(out / "tta_report.csv", index=False, float_format="%.4f")
    return report
