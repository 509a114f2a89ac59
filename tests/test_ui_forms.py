"""Tests for glandseg_dashboard.forms (config form specs, progress wording, time left), glandseg_dashboard.field_help (labels, units, help,
the poster's values), glandseg_dashboard.runs_table and settings, and glandseg_dashboard.figures' training curves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from glandseg_core.config import PRESETS, RunConfig, config_to_dict
from glandseg_dashboard import field_help, figures
from glandseg_dashboard import forms as dashboard
from glandseg_dashboard.runs import RUN_COLUMNS, remember, remembered, runs_table, time_left


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_form_specs_round_trip_every_preset(preset: str) -> None:
    cfg = PRESETS[preset]
    specs = dashboard.field_specs(cfg)
    assert [s["name"] for s in specs] == list(config_to_dict(cfg))
    kinds = {s["name"]: s["kind"] for s in specs}
    assert kinds["model"] == "choice" and kinds["train_lr"] == "float"
    assert kinds["train_epochs"] == "int" and kinds["name"] == "str"
    if cfg.model == "unet":
        assert kinds["unet_instance"] == "bool" and not any(n.startswith("maskrcnn_") for n in kinds)
    else:
        assert kinds["maskrcnn_anchor_sizes"] == "ints" and not any(n.startswith("unet_") for n in kinds)
    assert {s["group"] for s in specs} == set(dashboard.groups(cfg))
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
        cfg.params.anchor_sizes[0] == 16 and cfg.train_epochs == 3 and isinstance(cfg.train_epochs, int)
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


# ----------------------------------------------------------------------------- issue #14: words and phases


def test_every_field_has_a_human_label_and_a_help_line() -> None:
    assert field_help.missing_fields() == []
    for spec in dashboard.field_specs(PRESETS["glandseg-maskrcnn"]):
        label = field_help.label(spec["name"], spec["value"], "maskrcnn")
        assert "_" not in label, label  # never a bare field name
        assert field_help.help_text(spec["name"], spec["value"], "maskrcnn").strip()
    assert field_help.label("maskrcnn_rpn_post_nms_top_n_train", 2000, "maskrcnn") == (
        "Proposals kept per image in training (boxes)"
    )
    assert field_help.label("train_crop_size", 256, "unet") == "Training crop side (px)"


def test_the_posters_values_are_marked() -> None:
    poster = PRESETS["poster-maskrcnn"]
    marked = {
        s["name"]
        for s in dashboard.field_specs(poster)
        if field_help.label(s["name"], s["value"], "maskrcnn").endswith("· poster")
    }
    assert {"train_lr", "train_momentum", "train_weight_decay", "train_batch_size", "train_epochs",
            "train_optimizer", "train_lr_step_epochs", "train_lr_gamma", "maskrcnn_backbone"} <= marked  # fmt: skip
    assert "train_grad_clip" not in marked and "train_augment" not in marked  # not on the poster
    ours = PRESETS["glandseg-maskrcnn"]
    assert not field_help.label("train_lr", ours.train_lr, "maskrcnn").endswith("poster")
    assert "the poster used 0.005" in field_help.help_text("train_lr", ours.train_lr, "maskrcnn")
    assert "this is the poster's value" in field_help.help_text("train_lr", 0.005, "maskrcnn")
    assert field_help.label("train_epochs", 15, "unet").endswith("· poster")


def test_progress_wording_of_each_phase() -> None:
    base = {"status": "running", "epoch": 2, "epochs": 4, "step": 10, "steps": 10, "phase": "validate",
            "unit": "images", "done": 5, "total": 15}  # fmt: skip
    frac, text = dashboard.progress_text(base)
    assert frac == pytest.approx(0.5) and text == "running · epoch 2/4 · validating on val"
    assert dashboard.phase_progress(base) == (pytest.approx(1 / 3), "validating on val: 5/15 images")
    tune = {**base, "epoch": 4, "phase": "tune", "unit": "grid points", "done": 27, "total": 54}
    assert (
        dashboard.progress_text(tune)[1]
        == "running · all 4 epochs trained · tuning post-processing on val"
    )
    assert dashboard.phase_progress(tune)[1] == "tuning post-processing on val: 27/54 grid points"
    stopped = {"status": "stopped", "epoch": 4, "epochs": 4, "phase": "tune", "step": None, "steps": 10}
    assert dashboard.progress_text(stopped)[1] == (
        "stopped · 4/4 epochs done · stopped while tuning post-processing on val"
    )
    assert dashboard.phase_progress(stopped) is None
    assert [dashboard.duration(s) for s in (None, 12.4, 600, 7500)] == [
        "?", "about 12 s", "about 10 min", "about 2 h 5 min"]  # fmt: skip


def test_time_left_from_the_runs_own_pace() -> None:
    cfg = RunConfig(train_epochs=4, train_val_every=2)
    now = 1000.0
    s = {"status": "running", "phase": "train", "epoch": 2, "epochs": 4, "done": 10, "total": 40,
         "phase_started": now - 20, "time": now}  # fmt: skip
    log = pd.DataFrame([{"epoch": 1, "val_seconds": None}, {"epoch": 0, "val_seconds": 30.0}])
    left = time_left(s, cfg, log)
    assert left["phase"] == pytest.approx(60.0)  # 30 steps at 2 s
    assert left["training"] == pytest.approx(
        (30 + 2 * 40) * 2.0 + 2 * 30.0
    )  # + validations after 2 and 4
    assert time_left(s, cfg, pd.DataFrame())["training"] is None  # no validation timed yet: unknown
    assert time_left({**s, "status": "stopped"}, cfg, log) == {"phase": None, "training": None}


def test_settings_are_remembered_in_the_runs_root(tmp_path: Path) -> None:
    assert remembered(tmp_path / "runs") == {}
    remember(tmp_path / "runs", data_dir="/data/glas")
    remember(tmp_path / "runs", preset="glandseg-unet")
    assert remembered(tmp_path / "runs") == {"data_dir": "/data/glas", "preset": "glandseg-unet"}
    assert (tmp_path / "runs" / ".dashboard.json").is_file()


def _run_folder_page(root: str) -> None:
    """A script with the run-folder field alone; what it returns is written below it."""
    from pathlib import Path

    import streamlit as st

    from glandseg_dashboard import forms

    folder = forms.run_folder(Path(root), "new-run", key="name", ok_key="ok_", note=" (earlier)")
    st.write({"path": folder.path and folder.path.name, "replace": folder.replace})
    try:
        st.write({"checked": folder.checked().name})
    except ValueError as e:
        st.write({"checked": str(e)})


def test_run_folder_checks_the_name_warns_of_a_run_and_asks_before_replacing(tmp_path: Path) -> None:
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "last.pt").write_bytes(b"")
    (tmp_path / "tried").mkdir()
    (tmp_path / "tried" / "progress.json").write_text("{}")
    at = AppTest.from_function(_run_folder_page, args=(str(tmp_path),), default_timeout=30).run()

    def shown() -> dict:
        out: dict = {}
        for j in at.json:
            out.update(json.loads(j.value))  # st.write of a dict renders as st.json
        return out

    assert not at.exception and at.text_input(key="name").value == "new-run"
    assert shown() == {"path": "new-run", "replace": [], "checked": "new-run"} and not at.checkbox
    at.text_input(key="name").set_value("../up").run()
    assert "Run folder name '../up'" in at.error[0].value
    assert shown() == {"path": None, "replace": [], "checked": "choose a valid run folder name first"}
    at.text_input(key="name").set_value("done").run()
    assert "`done` holds a run already" in at.warning[0].value and not at.checkbox
    assert shown()["replace"] == []
    at.text_input(key="name").set_value("tried").run()
    box = at.checkbox(key="ok_tried")
    assert box.label == "Replace progress.json in tried/ (earlier)" and shown()["replace"] == []
    box.check().run()
    assert shown() == {"path": "tried", "replace": ["progress.json"], "checked": "tried"}
