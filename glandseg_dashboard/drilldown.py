"""The Image drill-down's tables and views: one row per image, one per gland, and outcome overlays that show
merges and splits as such.

Label maps are int32[H, W] (0=background, 1..N glands); per-object rows come from
:func:`glandseg_core.metrics.per_object_scores`, the outcome classes from
:func:`glandseg_core.outputs.overlays.gland_outcomes`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from glandseg_core import metrics
from glandseg_core.outputs import export, overlays
from glandseg_core.outputs.overlays import GlandOutcomes

#: Per-image metric column -> short name in the image table (the model's label goes in front).
IMAGE_METRICS = {"f1": "F1", "object_dice": "Dice", "object_hausdorff": "Hausdorff"}


def image_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per image: image, grade, glands (annotated), then ``<model> F1 / Dice / Hausdorff`` per model."""
    merged: pd.DataFrame | None = None
    for model, df in tables.items():
        part = df[["image", "split", "grade", "n_gt", *IMAGE_METRICS]].rename(
            columns={"n_gt": "glands", **{m: f"{model} {name}" for m, name in IMAGE_METRICS.items()}}
        )
        keys = ["image", "split", "grade", "glands"]
        merged = part if merged is None else merged.merge(part, on=keys, how="outer")
    if merged is None:
        return pd.DataFrame(columns=["image", "grade", "glands"])
    return merged.drop(columns="split")


def default_models(labels: list[str]) -> list[str]:
    """The models shown at first: all but the poster's recipe (it stays one click away)."""
    return [m for m in labels if m != "Poster recipe"] or labels


def metric_columns(tables: dict[str, pd.DataFrame]) -> dict[str, bool]:
    """The image table's metric columns -> higher is better."""
    return {f"{m} {name}": name != "Hausdorff" for m in tables for name in IMAGE_METRICS.values()}


def number_format(column: str) -> str:
    """printf format of a metric column: Hausdorff 1 decimal, F1 and Dice 3."""
    return "%.1f" if "hausdorff" in column.lower() else "%.3f"


def _gt_outcome(row: dict, klass: GlandOutcomes) -> str:
    """What happened to one ground-truth gland: found / missed, whether a merge or split was involved, and its
    partner prediction in brackets ("found, in a merge (5)")."""
    gid = row["id"]
    words = ["found" if row["outcome"] == "matched" else "missed"]
    if any(gid in gts for gts in klass.merges.values()):
        words.append("in a merge")
    if gid in klass.splits:
        words.append(f"split in {len(klass.splits[gid])}")
    return ", ".join(words) + (f" ({row['partner']})" if row["partner"] else "")


def gland_rows(scores: dict[str, tuple[GlandOutcomes, list[dict]]]) -> pd.DataFrame:
    """One row per ground-truth gland: gland, area, then per model its outcome (with its partner prediction),
    Dice and Hausdorff.

    Args:
        scores: Model label -> (its :class:`GlandOutcomes`, ``metrics.per_object_scores(pred, gt)`` rows).
    """
    merged: pd.DataFrame | None = None
    for model, (klass, rows) in scores.items():
        gt = [r for r in rows if r["side"] == "gt"]
        part = pd.DataFrame(
            {
                "gland": [r["id"] for r in gt],
                "area (px)": [r["area"] for r in gt],
                f"{model} outcome (partner)": [_gt_outcome(r, klass) for r in gt],
                f"{model} Dice": [r["dice"] for r in gt],
                f"{model} Hausdorff": [r["hausdorff"] for r in gt],
            }
        )
        merged = part if merged is None else merged.merge(part, on=["gland", "area (px)"], how="outer")
    return merged if merged is not None else pd.DataFrame()


def partner_ids(rows: list[dict], gt_id: int) -> list[int]:
    """Predicted ids tied to GT gland ``gt_id``: those whose partner it is, plus its own partner."""
    ids = {r["id"] for r in rows if r["side"] == "pred" and r["partner"] == gt_id}
    ids |= {r["partner"] for r in rows if r["side"] == "gt" and r["id"] == gt_id and r["partner"]}
    return sorted(ids)


@st.cache_data(show_spinner="Scoring glands…", max_entries=32)
def analyse(pred: np.ndarray, gt: np.ndarray) -> tuple[GlandOutcomes, list[dict]]:
    """(outcome classes with merges and splits, per-object rows) of one label map against its ground truth."""
    return overlays.gland_outcomes(pred, gt), metrics.per_object_scores(pred, gt)


def near_misses(pred: np.ndarray, gt: np.ndarray, rows: list[dict], min_dice: float = 0.5) -> list[str]:
    """One phrase per missed ground-truth gland whose partner prediction still reaches ``min_dice``: the
    50% rule at work ("gland 2: Dice 0.575, covers 48%")."""
    out = []
    for r in rows:
        if r["side"] == "gt" and r["outcome"] == "missed" and r["partner"] and r["dice"] >= min_dice:
            gland = gt == r["id"]
            cover = np.count_nonzero(gland & (pred == r["partner"])) / max(1, np.count_nonzero(gland))
            out.append(f"gland {r['id']}: Dice {r['dice']:.3f}, covers {cover:.0%}")
    return out


def views(
    image: np.ndarray,
    gt: np.ndarray,
    preds: dict[str, tuple[np.ndarray, GlandOutcomes, list[dict]]],
    gland: int | None = None,
    *,
    by_outcome: bool = True,
    ids: bool = False,
) -> list[tuple[str, np.ndarray]]:
    """(caption, RGB) for the image, the ground truth (with its ids) and each model's overlay.

    Model views are outcome overlays (``by_outcome``; merges and splits shown as such) or one colour per
    gland; ``ids`` writes the predicted ids on them. With ``gland`` (a ground-truth id), every view is dimmed
    except that gland (image, ground truth) or the predictions tied to it (`partner_ids`); a model with none
    shows the ground-truth gland's outline.
    """
    out = [
        ("Image", image if gland is None else export.highlight(image, gt, gland)),
        ("Ground truth (gland ids)", export.overlay(image, gt, ids=True)),
    ]
    if gland is not None:
        out[1] = (out[1][0], export.highlight(out[1][1], gt, gland))
    for label, (pred, klass, rows) in preds.items():
        if by_outcome:
            view = overlays.outcome_overlay(image, pred, gt, klass, ids=ids)
        else:
            view = overlays.overlay(image, pred, ids=ids)
        caption = label
        if gland is not None:
            ids_of = partner_ids(rows, gland)
            if ids_of:
                view = export.highlight(view, np.isin(pred, ids_of).astype(np.int32), 1)
                shown = ", ".join(map(str, ids_of[:5])) + (
                    f" and {len(ids_of) - 5} more" if len(ids_of) > 5 else ""
                )
                caption += f": prediction{'s' if len(ids_of) > 1 else ''} {shown} for gland {gland}"
            else:
                view = export.highlight(view, gt, gland)
                caption += f": nothing predicted on gland {gland} (its outline shown)"
        out.append((caption, view))
    return out


def _pred_outcome(row: dict, klass: GlandOutcomes) -> str:
    """TP / FP, or merge / split with what GlaS counted it as ("split (FP)")."""
    kind = klass.pred.get(row["id"], row["outcome"])
    return f"{kind} ({row['outcome']})" if kind in ("merge", "split") else kind


def pred_rows(klass: GlandOutcomes, rows: list[dict]) -> pd.DataFrame:
    """The predicted glands of one model: id, area, outcome (TP / FP / merge / split), partner, Dice,
    Hausdorff."""
    pred = [r for r in rows if r["side"] == "pred"]
    return pd.DataFrame(
        {
            "prediction": [r["id"] for r in pred],
            "area (px)": [r["area"] for r in pred],
            "outcome": [_pred_outcome(r, klass) for r in pred],
            "partner gland": [r["partner"] or None for r in pred],
            "Dice": [r["dice"] for r in pred],
            "Hausdorff": [r["hausdorff"] for r in pred],
        }
    )


def score_line(row: pd.Series, models: list[str]) -> str:
    """One image's scores per model in one line: F1 and Dice with 3 decimals, Hausdorff with 1."""
    parts = []
    for m in models:
        if pd.notna(row.get(f"{m} F1")):
            f1, dice, haus = (row[f"{m} {name}"] for name in IMAGE_METRICS.values())
            parts.append(f"**{m}**: F1 {f1:.3f}, Dice {dice:.3f}, Hausdorff {haus:.1f} px")
    return " · ".join(parts)
