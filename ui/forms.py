"""Non-UI logic of the dashboard's Train page: config form specs, progress wording, run table, plotly curves.

No streamlit here (the page renders what these functions return), so everything is testable on its own.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from .config import (
    AUGMENT_POLICIES,
    MASKRCNN_BACKBONES,
    MODEL_KINDS,
    OPTIMIZERS,
    SCHEDULES,
    RunConfig,
    config_from_dict,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODEL_KINDS,
    "maskrcnn_backbone": MASKRCNN_BACKBONES,
    "train_optimizer": OPTIMIZERS,
    "train_lr_schedule": SCHEDULES,
    "train_augment": AUGMENT_POLICIES,
}
GROUPS = ("General", "Training", "U-Net", "Mask R-CNN")
_PREFIX_GROUP = {"unet": "U-Net", "maskrcnn": "Mask R-CNN", "train": "Training"}
RUN_COLUMNS = [
    "name",
    "model",
    "recipe",
    "status",
    "epoch",
    "epochs",
    "best_val_f1",
    "best_epoch",
    "updated",
]


def field_specs(cfg: RunConfig) -> list[dict[str, Any]]:
    """One spec per RunConfig field (from ``dataclasses.fields``), for generating a form.

    Returns:
        ``[{"name", "kind", "value", "choices", "group"}]`` in field order; kind is ``bool``, ``int``,
        ``float``, ``choice``, ``str`` or ``ints`` (a tuple, edited as "a,b,c" text); group is one of ``GROUPS``.
    """
    specs = []
    for f in dataclasses.fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name in CHOICES:
            kind = "choice"
        elif isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, tuple):
            kind, value = "ints", ",".join(str(v) for v in value)
        else:
            kind = {int: "int", float: "float"}.get(type(value), "str")
        group = _PREFIX_GROUP.get(f.name.split("_", 1)[0], "General")
        specs.append(
            {
                "name": f.name,
                "kind": kind,
                "value": value,
                "choices": CHOICES.get(f.name),
                "group": group,
            }
        )
    return specs


def config_from_values(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from form values (``ints`` fields as "a,b,c" text).

    Raises:
        ValueError: a value is malformed or fails RunConfig's checks (one line).
    """
    d = dict(values)
    default = RunConfig()
    for key, value in d.items():
        if isinstance(getattr(default, key, None), tuple) and isinstance(value, str):
            try:
                d[key] = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
            except ValueError:
                raise ValueError(
                    f"{key} takes whole numbers separated by commas, got {value!r}"
                ) from None
        elif (
            isinstance(getattr(default, key, None), int)
            and isinstance(value, float)
            and value.is_integer()
        ):
            d[key] = int(value)
    if not str(d.get("name", "")).strip():
        raise ValueError("name must not be empty")
    return config_from_dict(d)


def progress_text(status: dict[str, Any]) -> tuple[float, str]:
    """(fraction done in 0..1, one-line wording) of a :func:`glandseg_core.jobs.run_status` dict."""
    epochs, epoch = status.get("epochs") or 0, status.get("epoch") or 0
    steps, step = status.get("steps") or 0, status.get("step") or 0
    if status["status"] in ("running", "dead") and epochs and steps:
        frac, text = (
            (max(epoch, 1) - 1 + step / steps) / epochs,
            f"epoch {epoch}/{epochs} · step {step}/{steps}",
        )
    elif status["status"] == "starting":
        frac, text = (epoch / epochs if epochs else 0.0), "starting (loading data and model)"
    else:
        frac = 1.0 if status["status"] == "finished" else epoch / epochs if epochs else 0.0
        text = f"{epoch}/{epochs or '?'} epochs done"
    return min(1.0, max(0.0, frac)), f"{status['status']} · {text}"


def runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs of :func:`glandseg_core.jobs.list_runs` as a display table (``updated`` as local time)."""
    table = pd.DataFrame(runs, columns=RUN_COLUMNS)
    table["updated"] = [time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in table["updated"]]
    return table


_LAYOUT = {"xaxis_title": "epoch", "height": 340, "margin": {"t": 40, "b": 10},
           "legend": {"orientation": "h", "yanchor": "top", "y": -0.25}}  # fmt: skip


def loss_figure(log: pd.DataFrame) -> go.Figure:
    """Training loss and its components per epoch (``log.jsonl`` rows)."""
    import plotly.graph_objects as go

    cols = [c for c in log if c == "train_loss" or c.startswith("loss_")]
    fig = go.Figure([go.Scatter(x=log["epoch"], y=log[c], name=c, mode="lines+markers") for c in cols])
    return fig.update_layout(title="Training loss", **_LAYOUT)


def validation_figure(log: pd.DataFrame) -> go.Figure:
    """Validation F1 and object Dice (left axis, 0..1) and object Hausdorff (right axis, pixels)."""
    import plotly.graph_objects as go

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
