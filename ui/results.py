"""Cached loaders of precomputed results for the Metrics and Image drill-down pages.

A model folder (``$GLANDSEG_MODELS/<name>/``, else ``trained_models/<name>/`` beside this file) holds
``per_image.csv``, ``metrics.json`` (the ``evaluate`` summary; ``summary.json`` is read when it is
missing) and ``predictions/<image>_labels.png`` label maps (``evaluate --save-predictions``). Nothing is
recomputed on page load: files are read once per modification time. Label maps are int32 (H, W),
0 = background, 1..N glands.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from glandseg_core import export, metrics, stats
from glandseg_core.data import DatasetError, item_by_name, load_item
from glandseg_core.evaluate import PREDICTION_SUFFIX
from glandseg_core.io import ImageError, read_image, read_label_map

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"
KIND_LABELS = {"unet": "U-Net", "maskrcnn": "Mask R-CNN"}
COLOURS = {"U-Net": "#1f77b4", "Mask R-CNN": "#d62728"}
EVAL_HINT = (
    "python -m glandseg_core evaluate --model {d} --out {d} --split testA testB --save-predictions"
)


@dataclass(frozen=True)
class ModelFolder:
    """One model folder: display label (``U-Net`` / ``Mask R-CNN``), kind and preset name (config.json), path."""

    label: str
    kind: str
    path: str
    preset: str = ""


def models_root() -> Path:
    """``$GLANDSEG_MODELS``, else ``trained_models/`` beside this file."""
    return Path(os.environ.get("GLANDSEG_MODELS") or HERE / "trained_models")


def _mtime(path: Path) -> float:
    """Modification time, or -1 when the path does not exist (part of every cache key)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def _kind_and_preset(folder: Path) -> tuple[str, str]:
    """The model kind ("unet" / "maskrcnn") and preset name from config.json; the kind is guessed from the
    folder name when config.json does not say."""
    try:
        config = json.loads((folder / "config.json").read_text())
        kind, preset = str(config.get("model", "")), str(config.get("name", ""))
    except (OSError, ValueError, AttributeError):
        kind, preset = "", ""
    if kind:
        return kind, preset
    low = folder.name.lower().replace("-", "").replace("_", "")
    return ("maskrcnn" if "mask" in low else "unet" if "unet" in low else ""), preset


@st.cache_data(show_spinner=False, ttl=60)
def _scan(root: str, stamp: float) -> list[ModelFolder]:
    folders = []
    for d in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if d.is_dir() and any(
            (d / f).exists() for f in ("per_image.csv", "metrics.json", "config.json")
        ):
            kind, preset = _kind_and_preset(d)
            folders.append(ModelFolder(KIND_LABELS.get(kind, d.name), kind, str(d), preset))
    order = list(KIND_LABELS)
    folders.sort(key=lambda f: (order.index(f.kind) if f.kind in order else len(order), f.path))
    labels = [f.label for f in folders]
    return [
        ModelFolder(f"{f.label} ({Path(f.path).name})", f.kind, f.path, f.preset)
        if labels.count(f.label) > 1
        else f
        for f in folders
    ]


def is_poster_recipe(model: ModelFolder) -> bool:
    """Whether the folder holds the poster's recipe (its config names a ``poster-*`` preset)."""
    return model.preset.startswith("poster-")


def find_models() -> tuple[dict[str, ModelFolder], list[str]]:
    """Model folders under the models root by label, and a plain message per expected model not found."""
    root = models_root()
    folders = {f.label: f for f in _scan(str(root), _mtime(root))}
    kinds = {f.kind for f in folders.values()}
    missing = [
        f"No {label} model folder in `{root}` (a sub-folder whose config.json says "
        f'`"model": "{kind}"`); showing the other model only.'
        for kind, label in KIND_LABELS.items()
        if kind not in kinds
    ]
    return folders, missing


@st.cache_data(show_spinner=False, max_entries=32)
def _read_csv(path: str, stamp: float) -> pd.DataFrame:
    return pd.read_csv(path)


def per_image(model: ModelFolder) -> pd.DataFrame | None:
    """The folder's per_image.csv (None when absent)."""
    path = Path(model.path) / "per_image.csv"
    return _read_csv(str(path), _mtime(path)) if path.is_file() else None


@st.cache_data(show_spinner=False, max_entries=32)
def _read_json(path: str, stamp: float) -> dict:
    return json.loads(Path(path).read_text())


def summary(model: ModelFolder) -> dict | None:
    """The folder's metrics.json (else summary.json): ``{split: {pooled_f1, ...}}``; None when absent."""
    for name in ("metrics.json", "summary.json"):
        path = Path(model.path) / name
        if path.is_file():
            try:
                return _read_json(str(path), _mtime(path))
            except ValueError:
                return None
    return None


def load_results(
    models: dict[str, ModelFolder],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict], list[str]]:
    """(per-image tables by label, summaries by label, one message per folder without per_image.csv)."""
    tables, sums, problems = {}, {}, []
    for label, m in models.items():
        df = per_image(m)
        if df is None:
            problems.append(
                f"{label} (`{m.path}`) has no per_image.csv; run `{EVAL_HINT.format(d=m.path)}`."
            )
            continue
        tables[label] = df
        if (s := summary(m)) is not None:
            sums[label] = s
    return tables, sums, problems


@st.cache_data(show_spinner=False, max_entries=64)
def _read_prediction(path: str, stamp: float) -> np.ndarray:
    return read_label_map(path)


def prediction(model: ModelFolder, name: str, image: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The model's label map of ``name``: saved prediction, else `ui_cache.segment`; (None, why)."""
    path = Path(model.path) / "predictions" / f"{name}{PREDICTION_SUFFIX}.png"
    if path.is_file():
        try:
            labels = _read_prediction(str(path), _mtime(path))
        except ImageError as e:
            return None, str(e)
        if labels.shape == image.shape[:2]:
            return labels, "saved prediction"
        return None, f"{path.name} is {labels.shape[::-1]} but the image is {image.shape[1::-1]}"
    if not (Path(model.path) / "weights.pt").is_file():
        return None, f"no predictions/{path.name} and no weights.pt in `{model.path}`"
    try:
        from ui_cache import model_stamp, segment

        with st.spinner(f"Segmenting {name} with {model.label} (no saved prediction)…"):
            labels, _seconds = segment(model.path, image, stamp=model_stamp(model.path))
        return np.asarray(labels, dtype=np.int32), "segmented now (no saved prediction)"
    except Exception as e:  # noqa: BLE001  any model failure is shown, not raised
        return None, f"no saved prediction and segmenting failed: {e}"


@st.cache_data(show_spinner=False, max_entries=32)
def _glas_item(root: str, name: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    return load_item(item_by_name(root, name))


@st.cache_data(show_spinner=False, max_entries=32)
def _sample_item(image_path: str, anno_path: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(image_path)
    return image, read_label_map(anno_path, shape=image.shape[:2])


def sample_names() -> list[str]:
    """Names of the bundled samples (``samples/<name>.png`` with ``<name>_anno.png``)."""
    return sorted(p.stem for p in SAMPLES.glob("*.png") if (SAMPLES / f"{p.stem}_anno.png").is_file())


def glas_image(name: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(image uint8[H, W, 3], ground truth int32[H, W], source) from $GLANDSEG_DATA, else samples/."""
    root = os.environ.get("GLANDSEG_DATA")
    if root:
        try:
            image, gt = _glas_item(root, name, _mtime(Path(root)))
            return image, gt, f"GLANDSEG_DATA ({root})"
        except (DatasetError, ImageError) as e:
            return None, None, str(e)
    img, anno = SAMPLES / f"{name}.png", SAMPLES / f"{name}_anno.png"
    if img.is_file() and anno.is_file():
        try:
            return (*_sample_item(str(img), str(anno), _mtime(img)), "bundled sample")
        except ImageError as e:
            return None, None, str(e)
    return None, None, f"{name} is not among the bundled samples in `{SAMPLES}`"


# ------------------------------------------------------------------------------------------ figures


def _colour(label: str, k: int) -> str:
    """Fixed colour per model label, else a plotly default."""
    return COLOURS.get(label.split(" (")[0], ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")[k % 4])


def distribution_figure(tables: dict[str, pd.DataFrame], metric: str) -> go.Figure:
    """Box per model with every image as a jittered point (hover: image, grade; customdata: image)."""
    label, higher_better = stats.METRICS[metric]
    fig = go.Figure()
    rng = np.random.default_rng(0)
    for k, (model, df) in enumerate(tables.items()):
        colour = _colour(model, k)
        fig.add_trace(
            go.Box(
                x=[k] * len(df),
                y=df[metric],
                name=model,
                boxpoints=False,
                marker_color=colour,
                hoverinfo="skip",
                showlegend=False,
                width=0.6,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=k + rng.uniform(-0.22, 0.22, len(df)),
                y=df[metric],
                mode="markers",
                name=model,
                marker={
                    "color": colour,
                    "size": 7,
                    "opacity": 0.75,
                    "line": {"width": 0.5, "color": "white"},
                },
                customdata=np.stack([df["image"], df["grade"]], axis=1),
                hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]})<br>"
                + label
                + ": %{y:.3f}<extra>"
                + model
                + "</extra>",
                showlegend=False,
            )
        )
    arrow = "higher is better" if higher_better else "lower is better"
    fig.update_layout(
        title=f"{label} per image ({arrow})",
        height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={
            "tickvals": list(range(len(tables))),
            "ticktext": list(tables),
            "range": [-0.6, len(tables) - 0.4],
        },
        yaxis_title=label,
        dragmode=False,
    )
    return fig


def difference_figure(res: stats.PairedResult, label_a: str, label_b: str, metric: str) -> go.Figure:
    """Per-image differences b - a, sorted, with the mean and its bootstrap 95% CI band."""
    label, higher_better = stats.METRICS[metric]
    d = res.diffs.sort_values()
    better = label_b if higher_better else label_a
    colours = np.where(
        d.to_numpy() > 0, _colour(better, 0), _colour(label_a if better == label_b else label_b, 1)
    )
    fig = go.Figure(
        go.Scatter(
            x=list(range(len(d))),
            y=d.to_numpy(),
            mode="markers",
            customdata=d.index.to_numpy()[:, None],
            marker={"color": np.where(d.to_numpy() == 0, "#888888", colours), "size": 7},
            hovertemplate="<b>%{customdata[0]}</b><br>difference: %{y:+.3f}<extra></extra>",
            showlegend=False,
        )
    )
    if np.isfinite(res.ci_low):
        fig.add_hrect(y0=res.ci_low, y1=res.ci_high, fillcolor="orange", opacity=0.25, line_width=0)
    if np.isfinite(res.mean_diff):
        fig.add_hline(y=res.mean_diff, line_color="orange", annotation_text="mean")
    fig.add_hline(y=0, line_color="grey", line_dash="dot")
    fig.update_layout(
        title=f"{label}: {label_b} − {label_a} per image",
        height=380,
        dragmode=False,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="images, sorted by difference",
        yaxis_title=f"difference ({'> 0' if higher_better else '< 0'}: {label_b} better)",
        xaxis_showticklabels=False,
    )
    return fig


def clicked_image(event: object) -> str | None:
    """The image name of the first point selected in a plotly chart event (customdata[0]), else None."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    for p in points:
        cd = p.get("customdata")
        if cd:
            return str(cd[0] if isinstance(cd, (list, tuple)) else cd)
    return None


# ------------------------------------------------------------------------------------------ drill-down


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


def results_or_stop():
    """The models and their precomputed results for a results page; warns about what is missing and stops
    the page when nothing can be shown. Returns (models, tables, summaries) as :func:`load_results` does."""
    models, missing = find_models()
    for msg in missing:
        st.warning(msg)
    tables, summaries, problems = load_results(models)
    for msg in problems:
        st.warning(msg)
    if not tables:
        st.error(f"No model results to show. Put model folders with per_image.csv in `{models_root()}`.")
        st.stop()
    return models, tables, summaries
