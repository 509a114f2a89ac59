"""Tests for ui.forms (config form specs, progress wording), ui.runs_table and ui.figures' training curves."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from glandseg_core.config import PRESETS, RunConfig
from ui import figures
from ui import forms as dashboard
from ui.runs import RUN_COLUMNS, runs_table


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_form_specs_round_trip_every_preset(preset: str) -> None:
    cfg = PRESETS[preset]
    specs = dashboard.field_specs(cfg)
    assert [s["name"] for s in specs] == [f.name for f in dataclasses.fields(RunConfig)]
    kinds = {s["name"]: s["kind"] for s in specs}
    assert (
        kinds["model"] == "choice" and kinds["unet_instance"] == "bool" and kinds["train_lr"] == "float"
    )
    assert (
        kinds["train_epochs"] == "int"
        and kinds["maskrcnn_anchor_sizes"] == "ints"
        and kinds["name"] == "str"
    )
    assert {s["group"] for s in specs} == set(dashboard.GROUPS)
    assert dashboard.config_from_values({s["name"]: s["value"] for s in specs}) == cfg


def test_form_values_are_checked() -> None:
    values = {s["name"]: s["value"] for s in dashboard.field_specs(PRESETS["poster-maskrcnn"])}
    with pytest.raises(ValueError, match="whole numbers"):
        dashboard.config_from_values({**values, "maskrcnn_anchor_sizes": "32,a"})
    with pytest.raises(ValueError, match="5 sizes"):
        dashboard.config_from_values({**values, "maskrcnn_anchor_sizes": "32,64"})
    with pytest.raises(ValueError, match="name"):
        dashboard.config_from_values({**values, "name": " "})
    with pytest.raises(ValueError, match="train_optimizer"):
        dashboard.config_from_values({**values, "train_optimizer": "adam"})
    cfg = dashboard.config_from_values(
        {**values, "maskrcnn_anchor_sizes": "16, 32,64,128,256", "train_epochs": 3.0}
    )
    assert (
        cfg.maskrcnn_anchor_sizes[0] == 16
        and cfg.train_epochs == 3
        and isinstance(cfg.train_epochs, int)
    )


def test_progress_text() -> None:
    running = {"status": "running", "epoch": 3, "epochs": 10, "step": 5, "steps": 10}
    frac, text = dashboard.progress_text(running)
    assert frac == pytest.approx(0.25) and text == "running · epoch 3/10 · step 5/10"
    assert dashboard.progress_text({**running, "status": "finished"})[0] == 1.0
    frac, text = dashboard.progress_text(
        {"status": "stopped", "epoch": 2, "epochs": 10, "step": None, "steps": 10}
    )
    assert frac == pytest.approx(0.2) and "2/10 epochs done" in text
    assert dashboard.progress_text({"status": "new", "epoch": None, "epochs": None})[0] == 0.0


def test_runs_table_and_figures() -> None:
    runs = [{"name": "a", "model": "unet", "recipe": "r", "status": "finished", "epoch": 2, "epochs": 2,
             "best_val_f1": 0.5, "best_epoch": 2, "updated": 0.0, "extra": 1}]  # fmt: skip
    table = runs_table(runs)
    assert list(table.columns) == RUN_COLUMNS and isinstance(table["updated"][0], str)
    log = pd.DataFrame(
        [
            {"epoch": 1, "train_loss": 1.0, "loss_dice": 0.4, "val_f1": 0.2, "val_object_dice": 0.3, "val_object_hausdorff": 90.0},
            {"epoch": 2, "train_loss": 0.8, "loss_dice": 0.3},  # validated every other epoch
        ]
    )  # fmt: skip
    loss = figures.loss_figure(log)
    assert {t.name for t in loss.data} == {"train_loss", "loss_dice"}
    val = figures.validation_figure(log)
    assert [t.name for t in val.data][:2] == ["F1", "object Dice"] and len(val.data[0].x) == 1
    assert val.layout.yaxis2.range == (0, pytest.approx(99.0))
    assert len(figures.validation_figure(log[["epoch", "train_loss"]]).data) == 1  # no validation yet
