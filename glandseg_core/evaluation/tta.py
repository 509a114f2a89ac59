"""Score a model folder without and with test-time augmentation, side by side (``glandseg tta``)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..datasets import DataLike
from ..segmenters import load_segmenter
from .scoring import evaluate

log = logging.getLogger(__name__)

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
    data: DataLike,
    splits: Sequence[str],
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
    *,
    record_history: bool = False,
) -> pd.DataFrame:
    """Evaluate a model folder without and with TTA on ``splits``, side by side.

    Args:
        model_dir: e.g. ``trained_models/unet``. data: a data set, a GlaS folder (None: ``$GLANDSEG_DATA``)
            or (image, label map) pairs.
        splits: e.g. ``["val", "testA", "testB"]``.
        out_dir: where ``plain/`` and ``tta/`` (each ``per_image.csv``, ``summary.json``) and ``tta_report.csv``
            go; a temporary folder when None.
        device: ``cpu``, ``cuda`` or None for automatic.
        record_history: append each test-split scoring to the folder's ``test_history.jsonl`` (the CLI does).

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
            data,
            list(splits),
            out / name,
            segmenter=segmenter,
            record_history=record_history,
            reason=f"TTA comparison ({name})",
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
