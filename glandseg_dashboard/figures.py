"""Plotly figures of the dashboard: per-image metric distributions, paired differences, training curves.

Every figure is built from plain tables (``per_image.csv`` rows, ``log.jsonl`` rows); the pages only draw them.
Points carry the image name in ``customdata[0]`` so a click can open the drill-down (:func:`clicked_image`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from glandseg_core import stats

from . import palette

_BAND = "#9aa5b1"  # the confidence band: a neutral grey-blue, no model's colour
_MEAN = "#2d2430"
_LEGEND = {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "title": None}


def _colours(labels: list[str], colours: dict[str, str] | None) -> dict[str, str]:
    """Label -> colour: the given ones, else the palette's by label (U-Net, Mask R-CNN, ...), else greys."""
    given = colours or {}
    kinds = {
        "U-Net": "unet",
        "Mask R-CNN": "maskrcnn",
        "Poster recipe": "poster-maskrcnn",
    }
    return {
        lab: given.get(lab) or palette.model_colour(kinds.get(lab.split(" (")[0], ""), k=k)
        for k, lab in enumerate(labels)
    }


def distribution_figure(
    tables: dict[str, pd.DataFrame], metric: str, colours: dict[str, str] | None = None
) -> go.Figure:
    """Box per model with every image as a jittered point (hover: image, grade; customdata: image), one
    colour per model (``colours``: label -> colour, else :mod:`glandseg_dashboard.palette`) and a legend."""
    label, higher_better = stats.METRICS[metric]
    fig = go.Figure()
    rng = np.random.default_rng(0)
    colour_of = _colours(list(tables), colours)
    for k, (model, df) in enumerate(tables.items()):
        colour = colour_of[model]
        fig.add_trace(
            go.Box(
                x=[k] * len(df),
                y=df[metric],
                name=model,
                legendgroup=model,
                boxpoints=False,
                marker_color=colour,
                hoverinfo="skip",
                width=0.6,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=k + rng.uniform(-0.22, 0.22, len(df)),
                y=df[metric],
                mode="markers",
                name=model,
                legendgroup=model,
                marker={
                    "color": colour,
                    "size": 7,
                    "opacity": 0.75,
                    "line": {"width": 0.5, "color": "white"},
                },
                customdata=np.stack([df["image"], df["grade"]], axis=1),
                hovertemplate=f"<b>%{{customdata[0]}}</b> (%{{customdata[1]}})<br>{label}: {_y(metric)}"
                f"<extra>{model}</extra>",
                showlegend=False,
            )
        )
    arrow = "higher is better" if higher_better else "lower is better"
    fig.update_layout(
        title={"text": f"{label} per image ({arrow})", "y": 0.98},
        height=400,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        xaxis={
            "tickvals": list(range(len(tables))),
            "ticktext": list(tables),
            "range": [-0.6, len(tables) - 0.4],
        },
        yaxis_title=label,
        legend=_LEGEND,
        dragmode=False,
    )
    return fig


def difference_figure(
    res: stats.PairedResult,
    label_a: str,
    label_b: str,
    metric: str,
    colours: dict[str, str] | None = None,
) -> go.Figure:
    """Per-image differences b - a, sorted, each point in the colour of the model it favours, with the mean
    difference and its bootstrap 95% CI band, all named in the legend."""
    label, higher_better = stats.METRICS[metric]
    d = res.diffs.sort_values()
    colour_of = _colours([label_a, label_b], colours)
    values = d.to_numpy()
    b_better = values > 0 if higher_better else values < 0
    fig = go.Figure()
    groups = (
        (b_better, f"{label_b} better", colour_of[label_b]),
        ((values != 0) & ~b_better, f"{label_a} better", colour_of[label_a]),
        (values == 0, "no difference", "#888888"),
    )
    fmt = _y(metric, "+")
    for sel, name, colour in groups:
        if not sel.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=np.flatnonzero(sel),
                y=values[sel],
                mode="markers",
                name=name,
                customdata=d.index.to_numpy()[sel][:, None],
                marker={"color": colour, "size": 7},
                hovertemplate="<b>%{customdata[0]}</b><br>difference: " + fmt + "<extra></extra>",
            )
        )
    if np.isfinite(res.ci_low):
        fig.add_hrect(y0=res.ci_low, y1=res.ci_high, fillcolor=_BAND, opacity=0.35, line_width=0)
        fig.add_trace(_legend_entry("95% CI of the mean difference (bootstrap)", _BAND, "square"))
    if np.isfinite(res.mean_diff):
        fig.add_hline(y=res.mean_diff, line_color=_MEAN, line_width=2)
        fig.add_trace(_legend_entry("mean difference", _MEAN, "line-ew-open"))
    fig.add_hline(y=0, line_color="grey", line_dash="dot")
    fig.update_layout(
        title={"text": f"{label}: {label_b} − {label_a} per image", "y": 0.98},
        height=460,
        dragmode=False,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="images, sorted by difference",
        yaxis_title=f"difference ({'> 0' if higher_better else '< 0'}: {label_b} better)",
        xaxis_showticklabels=False,
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0, "title": None},
    )
    return fig


def _y(metric: str, sign: str = "") -> str:
    """Plotly's hover format of a metric value: Hausdorff with 1 decimal, F1 and Dice with 3."""
    return f"%{{y:{sign}.1f}}" if metric == "object_hausdorff" else f"%{{y:{sign}.3f}}"


def _legend_entry(name: str, colour: str, symbol: str) -> go.Scatter:
    """A legend-only trace (no data) for a shape drawn with add_hrect / add_hline."""
    return go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        name=name,
        hoverinfo="skip",
        marker={"color": colour, "size": 12, "symbol": symbol, "line": {"width": 2, "color": colour}},
    )


def clicked_image(event: object) -> str | None:
    """The image name of the first point selected in a plotly chart event (customdata[0]), else None."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    for p in points:
        cd = p.get("customdata")
        if cd:
            return str(cd[0] if isinstance(cd, (list, tuple)) else cd)
    return None


# --------------------------------------------------------------------------------------- training curves

_LAYOUT = {
    "xaxis_title": "epoch",
    "height": 340,
    "margin": {"t": 40, "b": 10},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.25},
}


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
