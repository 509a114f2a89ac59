"""The Image drill-down's tables and views: one row per image, one per gland, and TP / FP / missed overlays.

Label maps are int32[H, W] (0=background, 1..N glands); per-object rows come from
:func:`glandseg_core.metrics.per_object_scores`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from glandseg_core import export, metrics, stats


def image_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per image: image, split, grade, n_gt, then ``<model> <metric>`` per model and metric."""
    merged: pd.DataFrame | None = None
    for model, df in tables.items():
        part = df[["image", "split", "grade", "n_gt", "n_pred", *stats.METRICS]].rename(
            columns={
                "n_pred": f"{model} glands",
                **{m: f"{model} {stats.METRICS[m][0]}" for m in stats.METRICS},
            }
        )
        if merged is None:
            merged = part
        else:
            merged = merged.merge(part, on=["image", "split", "grade", "n_gt"], how="outer")
    return merged if merged is not None else pd.DataFrame(columns=["image", "split", "grade", "n_gt"])


def gland_rows(scores: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per ground-truth gland: id, area, then per model its partner, outcome, Dice and Hausdorff.

    Args:
        scores: Model label -> ``metrics.per_object_scores(pred, gt)`` rows.
    """
    merged: pd.DataFrame | None = None
    for model, rows in scores.items():
        gt = pd.DataFrame(
            [r for r in rows if r["side"] == "gt"],
            columns=["id", "area", "partner", "outcome", "dice", "hausdorff"],
        )
        gt = gt[["id", "area", "partner", "outcome", "dice", "hausdorff"]].rename(
            columns={c: f"{model} {c}" for c in ("partner", "outcome", "dice", "hausdorff")}
        )
        merged = gt if merged is None else merged.merge(gt, on=["id", "area"], how="outer")
    return (
        merged.rename(columns={"id": "gland", "area": "area (px)"})
        if merged is not None
        else pd.DataFrame()
    )


def partner_ids(rows: list[dict], gt_id: int) -> list[int]:
    """Predicted ids tied to GT gland ``gt_id``: those whose partner it is, plus its own partner."""
    ids = {r["id"] for r in rows if r["side"] == "pred" and r["partner"] == gt_id}
    ids |= {r["partner"] for r in rows if r["side"] == "gt" and r["id"] == gt_id and r["partner"]}
    return sorted(ids)


@st.cache_data(show_spinner="Scoring glands…", max_entries=32)
def analyse(pred: np.ndarray, gt: np.ndarray) -> tuple[metrics.Outcomes, list[dict]]:
    """(TP / FP / missed outcomes, per-object rows) of one label map against its ground truth."""
    return metrics.object_outcomes(pred, gt), metrics.per_object_scores(pred, gt)


def views(
    image: np.ndarray,
    gt: np.ndarray,
    preds: dict[str, tuple[np.ndarray, metrics.Outcomes, list[dict]]],
    gland: int | None = None,
) -> list[tuple[str, np.ndarray]]:
    """(caption, RGB) for the image, the ground truth and each model's TP / FP / missed overlay.

    With ``gland`` (a ground-truth id), every view is dimmed except that gland (image, ground truth) or
    the predictions tied to it (`partner_ids`); a model with none shows the ground-truth gland's outline.
    """
    out = [
        ("Image", image if gland is None else export.highlight(image, gt, gland)),
        ("Ground truth (gland ids)", export.overlay(image, gt, ids=True)),
    ]
    if gland is not None:
        out[1] = (out[1][0], export.highlight(out[1][1], gt, gland))
    for label, (pred, outcomes, rows) in preds.items():
        view, caption = export.outcome_overlay(image, pred, gt, outcomes), label
        if gland is not None:
            ids = partner_ids(rows, gland)
            if ids:
                view = export.highlight(view, np.isin(pred, ids).astype(np.int32), 1)
                shown = ", ".join(map(str, ids[:5])) + (
                    f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                )
                caption += f": prediction{'s' if len(ids) > 1 else ''} {shown} for gland {gland}"
            else:
                view = export.highlight(view, gt, gland)
                caption += f": nothing predicted on gland {gland} (its outline shown)"
        out.append((caption, view))
    return out


def pred_rows(rows: list[dict]) -> pd.DataFrame:
    """The predicted-side rows of `metrics.per_object_scores` as a table (id, area, partner, ...)."""
    cols = ["id", "area", "partner", "outcome", "dice", "hausdorff"]
    return pd.DataFrame([r for r in rows if r["side"] == "pred"], columns=cols).rename(
        columns={"id": "prediction", "area": "area (px)", "partner": "partner gland"}
    )
