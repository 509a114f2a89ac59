"""Train: configure a run from a preset, launch it in the background, watch it, stop/resume, evaluate, promote."""

import datetime
import os
import re

import pandas as pd
import streamlit as st

import ui_cache
from glandseg_core import dashboard, jobs
from glandseg_core.config import PRESETS
from glandseg_core.data import data_root
from glandseg_core.infer import ModelError

ui_cache.ensure_router()
st.title("Train a model")
dev = jobs.device_info()
if dev["cuda"]:
    st.success(f"GPU available: {dev['name']}. Training runs on **cuda**.")
else:
    st.info(
        f"No GPU available: training runs on the **CPU** ({dev['cpus']} cores); big recipes take days."
    )
busy = jobs.busy_message()
if busy:
    st.warning(busy)
runs_root = ui_cache.runs_root()
data_dir = st.text_input("GlaS folder", os.environ.get("GLANDSEG_DATA", ""), key="train_data",
                         placeholder="the folder holding train_1.bmp, testA_1.bmp, … (or set GLANDSEG_DATA)")  # fmt: skip


def glas_folder() -> str:
    """The GlaS folder typed above, checked before anything is launched (DatasetError is a ValueError)."""
    if not data_dir.strip():
        raise ValueError("Enter the GlaS folder above first (the one holding train_1.bmp, …).")
    return str(data_root(data_dir.strip()))


def config_widget(spec: dict, key: str):  # one widget per RunConfig field, by its type
    name, kind, value = spec["name"], spec["kind"], spec["value"]
    if kind == "bool":
        return st.checkbox(name, value, key=key)
    if kind == "choice":
        return st.selectbox(name, spec["choices"], index=spec["choices"].index(value), key=key)
    if kind in ("int", "float"):
        return st.number_input(
            name, value=value, key=key, **({"step": 1} if kind == "int" else {"format": "%g"})
        )
    return st.text_input(name, value, key=key, help="comma-separated" if kind == "ints" else None)


with st.expander("New training run", expanded=not busy):
    presets = list(PRESETS)
    preset = st.selectbox("Preset", presets, index=presets.index("poster-maskrcnn"), key="train_preset",
                          help="poster-* copy the poster's hyperparameters; glandseg-* are our tuned recipes")  # fmt: skip
    with st.form(f"train_form_{preset}"):
        run_name = st.text_input(
            "Run folder name", f"{preset}-{datetime.date.today():%Y%m%d}", key=f"run_{preset}"
        )
        tabs = dict(zip(dashboard.GROUPS, st.tabs(list(dashboard.GROUPS)), strict=True))
        values = {}
        for spec in dashboard.field_specs(PRESETS[preset]):
            with tabs[spec["group"]]:
                values[spec["name"]] = config_widget(spec, f"cfg_{preset}_{spec['name']}")
        c1, c2 = st.columns(2)
        workers = c1.number_input(
            "Augmentation workers", min_value=0, max_value=64, step=1, key=f"workers_{preset}",
            value=min(6, dev["cpus"] - 1) if dev["cuda"] else 0,
            help="processes that build augmented batches, so a GPU is not kept waiting (0 = in the trainer)",
        )  # fmt: skip
        budget = c2.number_input(
            "Time budget (minutes, 0 = none)", min_value=0.0, step=5.0, format="%g", key=f"budget_{preset}",
            help="after two epochs the run times itself and shortens its schedule to end within the budget",
        )  # fmt: skip
        submitted = st.form_submit_button("Start training", type="primary")
    if submitted:
        try:
            if busy_now := jobs.busy_message():  # the lock first: it is the most useful answer
                raise jobs.TrainingBusy(busy_now)
            cfg = dashboard.config_from_values(values)
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_name):
                raise ValueError("run folder name: use letters, digits, '.', '_' and '-' only")
            pid = jobs.start_training(
                cfg, runs_root / run_name, data=glas_folder(), workers=int(workers), time_limit_minutes=float(budget)
            )
            st.session_state["train_selected"] = run_name
            st.success(f"Started {run_name} (pid {pid}) on {dev['device']}.")
        except (jobs.TrainingBusy, FileExistsError, ValueError, OSError) as e:
            st.error(str(e))

st.header("Runs")
runs = jobs.list_runs(runs_root)
if not runs:
    st.info(f"No runs yet in `{runs_root}`.")
    st.stop()
best_f1 = st.column_config.NumberColumn("best val F1", format="%.3f")
st.dataframe(dashboard.runs_table(runs), hide_index=True, column_config={"best_val_f1": best_f1})
names = [r["name"] for r in runs]
if st.session_state.get("train_selected") not in names:
    st.session_state["train_selected"] = names[0]
name = st.selectbox("Run", names, key="train_selected")
run_dir = runs_root / name
info = next(r for r in runs if r["name"] == name)
live = (
    info["status"] in ("running", "starting") or jobs.evaluation_status(run_dir)["status"] == "running"
)


@st.fragment(run_every=3 if live else None)
def progress_panel() -> None:
    """Live status, progress bar, curves and evaluation results; refreshes every 3 s while a job runs."""
    s, ev = jobs.run_status(run_dir), jobs.evaluation_status(run_dir)
    if live and s["status"] not in ("running", "starting") and ev["status"] != "running":
        st.rerun()  # finished, stopped or failed: refresh the buttons too
    frac, text = dashboard.progress_text(s)
    st.progress(frac, text=f"**{text}**" + (f" · loss {s['loss']:.4f}" if s["loss"] is not None else ""))
    if s["status"] in ("failed", "dead") and s["error"]:
        st.error(f"{s['status']}: {s['error']}")
    log = jobs.read_log(run_dir)
    if log.empty:
        st.caption("Curves appear after the first epoch.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(dashboard.loss_figure(log), key="loss_chart")
        right.plotly_chart(dashboard.validation_figure(log), key="val_chart")
    if ev["status"] == "running":
        st.info("Evaluating on Test A and Test B…")
    elif ev["status"] == "failed":
        st.error(f"Evaluation failed: {ev['error']}")
    elif ev["summary"]:
        cols = ["n_images", "pooled_f1", "pooled_object_dice", "pooled_object_hausdorff"]
        st.dataframe(pd.DataFrame(ev["summary"]).T[cols])


progress_panel()
b = st.columns(3)
if b[0].button(
    "Stop",
    disabled=info["status"] not in ("running", "starting"),
    help="After the current step; keeps last.pt",
):
    st.toast("Stop requested." if jobs.stop_training(run_dir) else "No trainer is running for this run.")
if b[1].button("Resume", disabled=live or not info["has_last"] or info["status"] == "finished"):
    try:
        st.toast(f"Resumed (pid {jobs.resume_training(run_dir, data=glas_folder())}).")
        st.rerun()
    except (jobs.TrainingBusy, FileNotFoundError, ValueError, OSError) as e:
        st.error(str(e))
if b[2].button(
    "Evaluate on Test A + Test B", disabled=not info["has_best"], help="Runs in the background"
):
    try:
        jobs.start_evaluation(run_dir, data=glas_folder())
        st.rerun()
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as e:
        st.error(str(e))

st.subheader("Promote to trained_models/")
cols = st.columns([2, 2, 1], vertical_alignment="bottom")
default_target = info["model"] if info["model"] in ui_cache.ROLES else name
target_name = cols[0].text_input("Model folder name", default_target, key=f"promote_{name}").strip()
target = ui_cache.models_root() / target_name
exists = (target / "weights.pt").exists()
confirm = (
    cols[1].checkbox(f"Overwrite the model in {target_name}/", key=f"promote_ok_{name}")
    if exists
    else True
)
if cols[2].button(
    "Promote", disabled=not info["has_best"] or not confirm or not target_name, type="primary"
):
    try:
        jobs.promote(run_dir, target, overwrite=exists and confirm)
        ui_cache.get_run.clear()
        ui_cache.segment.clear()
        st.success(f"Promoted {name} to {target}.")
    except (ModelError, ValueError, OSError) as e:
        st.error(str(e))
if exists and not confirm:
    st.caption(f"`{target}` already holds a model: tick the box to replace it.")
if not info["has_best"]:
    st.caption("Evaluate and Promote need a best.pt (written after the first validated epoch).")
