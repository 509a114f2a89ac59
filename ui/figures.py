"""Plotly figures of the dashboard: per-image metric distributions, paired differences, training curves.

Every figure is built from plain tables (``per_image.csv`` rows, ``log.jsonl`` rows); the pages only draw them.
Points carry the image name in ``customdata[0]`` so a click can open the drill-down (:func:`clicked_image`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from glandseg_core import stats

from .settings import ROLES

COLOURS = {ROLES["unet"]: "#1f77b4", ROLES["maskrcnn"]: "#d62728"}


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


# --------------------------------------------------------------------------------------- training curves

_LAYOUT = {"xaxis_title": "epoch", "height": 340, "margin": {"t": 40, "b": 10},
           "legend": {"orientation": "h", "yanchor": "top", "y": -0.25}}  # fmt: skip


def loss_figure(log: pd.DataFrame) -> go.Figure:
    """Training loss and its components per epoch (``log.jsonl`` rows)."""
    cols = [c for c in log if c == "train_loss" or c.startswith("loss_")]
    fig = go.Figure([go.Scatter(x=log["epoch"], y=log[c], name=c, mode="lines+markers") for c in cols])
    return fig.update_layout(title="Training loss", **_LAYOUT)


def validation_figure(log: pd.DataFrame) -> go.Figure:
    """Validation F1 and object Dice (left axis, 0..1) and object Hausdorff (right axis, pixels)."""
    rows = log.dropna(subset=["val_f1"]) if "val_f1" in log else log.iloc[:0]
    names = {"val_f1": "F1", "val_object_dice": "object Dice"}
    fig = go.Figure(
        [
            go.Scatter(x=rows["epoch"], y=rows[c], name=n, mode="lines+markers")
            for c, n in names.items()
            if c in rows
        ]
    )
    haus = rows["val_object_hausdorff"] if "val_object_hausdorff" in rows else pd.Series(dtype=float)
    fig.add_scatter(
        x=rows["epoch"], y=haus, name="object Hausdorff (px, right)", yaxis="y2", line={"dash": "dot"}
    )
    right = {"overlaying": "y", "side": "right", "title": "Hausdorff (px)", "showgrid": False}
    if len(haus):
        right["range"] = [0, 1.1 * float(haus.max())]
    return fig.update_layout(
        title="Validation", yaxis={"range": [0, 1], "title": "F1, Dice"}, yaxis2=right, **_LAYOUT
    )
