"""Train: configure a run from a preset, launch it in the background, watch it, stop/resume, evaluate, promote."""

import datetime
import os

import streamlit as st

from glandseg_core.config import PRESETS
from glandseg_core.errors import DatasetError, ModelError, TrainingBusy
from ui import forms, inference, jobs, loaders, promote, run_panel, runs, safepaths, settings

loaders.ensure_router()
st.title("Train a model")
if settings.read_only():
    st.info("This dashboard is read-only (GLANDSEG_READONLY): training and promoting are switched off.")
    st.stop()
dev = runs.device_info()
if dev["cuda"]:
    st.success(f"GPU available: {dev['name']}. Training runs on **cuda**.")
else:
    st.info(
        f"No GPU available: training runs on the **CPU** ({dev['cpus']} cores); big recipes take days."
    )
busy = jobs.busy_message()
if busy:
    st.warning(busy)
runs_root = settings.runs_root()
data_dir = st.text_input("GlaS folder", os.environ.get("GLANDSEG_DATA", ""), key="train_data",
                         help=f"inside {settings.data_root()} (relative paths start there)",
                         placeholder="the folder holding train_1.bmp, testA_1.bmp, … (or set GLANDSEG_DATA)")  # fmt: skip


def glas_folder() -> str:
    """The GlaS folder typed above: inside the data root and holding train and val images (else ValueError)."""
    return str(jobs.check_data(safepaths.data_folder(data_dir)))


with st.expander("New training run", expanded=not busy):
    presets = list(PRESETS)
    preset = st.selectbox("Preset", presets, index=presets.index("poster-maskrcnn"), key="train_preset",
                          help="poster-* copy the poster's hyperparameters; glandseg-* are our tuned recipes")  # fmt: skip
    run_name = st.text_input("Run folder name", f"{preset}-{datetime.date.today():%Y%m%d}", key=f"run_{preset}",
                             help=f"a new folder in {runs_root}")  # fmt: skip
    replace: list[str] = []
    try:
        new_run = safepaths.inside(runs_root, run_name, "Run folder name")
        found = jobs.previous_attempt(new_run)
        if (new_run / "last.pt").exists():
            st.warning(f"`{new_run.name}` holds a run already: resume it below, or choose another name.")
        elif found and forms.confirm_replace(
            found, f"{new_run.name}/ (an earlier attempt)", f"run_ok_{run_name}"
        ):
            replace = found
    except ValueError as e:
        new_run = None
        st.error(str(e))
    values, workers, budget, submitted = forms.run_form(
        preset, PRESETS[preset], dev["cuda"], dev["cpus"]
    )
    if submitted:
        try:
            if busy_now := jobs.busy_message():  # the lock first: it is the most useful answer
                raise TrainingBusy(busy_now)
            cfg = forms.config_from_values(values)
            if new_run is None:
                raise ValueError("choose a valid run folder name first")
            pid = jobs.start_training(cfg, new_run, data=glas_folder(), workers=workers,
                                      time_limit_minutes=budget, replace=replace)  # fmt: skip
            st.session_state["train_selected"] = new_run.name
            st.success(f"Started {new_run.name} (pid {pid}) on {dev['device']}.")
        except (TrainingBusy, FileExistsError, ValueError, OSError) as e:
            st.error(str(e))

st.header("Runs")
rows = runs.list_runs(runs_root)
if not rows:
    st.info(f"No runs yet in `{runs_root}`.")
    st.stop()
best_f1 = st.column_config.NumberColumn("best val F1", format="%.3f")
st.dataframe(runs.runs_table(rows), hide_index=True, column_config={"best_val_f1": best_f1})
names = [r["name"] for r in rows]
if st.session_state.get("train_selected") not in names:
    st.session_state["train_selected"] = names[0]
name = st.selectbox("Run", names, key="train_selected")
run_dir = runs_root / name
info = next(r for r in rows if r["name"] == name)
live = (
    info["status"] in ("running", "starting") or runs.evaluation_status(run_dir)["status"] == "running"
)


run_panel.progress(run_dir, live)
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
    except (TrainingBusy, FileNotFoundError, ValueError, OSError) as e:
        st.error(str(e))
evaluating = runs.evaluation_status(run_dir)["status"] == "running"
if evaluating and b[2].button("Stop the evaluation", help="Ends the background evaluation"):
    st.toast("Evaluation stopped." if jobs.stop_evaluation(run_dir) else "No evaluation is running.")
if not evaluating and b[2].button("Evaluate on Test A + Test B", disabled=not info["has_best"]):
    try:
        jobs.start_evaluation(run_dir, data=str(safepaths.data_folder(data_dir)))
        st.rerun()
    except (FileNotFoundError, RuntimeError, DatasetError, ValueError, OSError) as e:
        st.error(str(e))

st.subheader(f"Promote to {settings.models_root().name}/")
cols = st.columns([2, 3, 1], vertical_alignment="bottom")
default_target = info["model"] if info["model"] in settings.ROLES else name
target_name = cols[0].text_input("Model folder name", default_target, key=f"promote_{name}",
                                 help=f"a folder in {settings.models_root()}")  # fmt: skip
try:
    target = safepaths.inside(settings.models_root(), target_name, "Model folder name")
    found = promote.replaced(target)
except ValueError as e:
    target, found = None, []
    st.error(str(e))
with cols[1]:
    confirm = forms.confirm_replace(found, f"{target_name}/", f"promote_ok_{name}_{target_name}")
if cols[2].button(
    "Promote", disabled=not info["has_best"] or not confirm or target is None, type="primary"
):
    try:
        promote.promote(run_dir, target, confirmed=found)
        inference.clear()
        st.success(f"Promoted {name} to {target}.")
    except (ModelError, ValueError, OSError) as e:
        st.error(str(e))
if found and not confirm:
    st.caption(f"`{target}` already holds these files: tick the box to replace them.")
if not info["has_best"]:
    st.caption("Evaluate and Promote need a best.pt (written after the first validated epoch).")
