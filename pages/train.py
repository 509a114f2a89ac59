"""Train: configure a run from a preset (human labels, the poster's values marked, an epoch-time estimate), launch
it in the background (on the GPU or CPU), or fine-tune a model on an annotation set; watch its phases,
stop/resume, evaluate on val then (recorded) on Test A + B, or see a fine-tune before vs after; promote."""

import datetime
import os

import streamlit as st

from glandseg_core.config import PRESETS
from glandseg_core.errors import TrainingBusy
from glandseg_dashboard import (
    finetune_panel,
    forms,
    gpu_panel,
    jobs,
    loaders,
    run_panel,
    runs,
    safepaths,
    settings,
)

loaders.ensure_router()
st.title("Train a model")
if settings.read_only():
    st.info("This dashboard is read-only (GLANDSEG_READONLY): training and promoting are switched off.")
    st.stop()
dev = runs.device_info()
if dev["cuda"]:
    st.success(f"GPU available: {dev['name']}. Choose **GPU (cuda)** or **CPU** in each run's form.")
else:
    st.info(
        f"No GPU available: training runs on the **CPU** ({dev['cpus']} cores); big recipes take days. "
        "On a machine with a CUDA GPU this page offers the GPU, and the poster's recipe in one click."
    )
busy = jobs.busy_message()
if busy:
    st.warning(busy)
runs_root = settings.runs_root()
prefs = runs.remembered(
    runs_root
)  # the last started run's data folder and preset (runs/.dashboard.json)
data_dir = st.text_input(
    "GlaS folder",
    prefs.get("data_dir") or os.environ.get("GLANDSEG_DATA", ""),
    key="train_data",
    help=f"inside {settings.data_root()} (relative paths start there); remembered once a run starts",
    placeholder="the folder holding train_1.bmp, testA_1.bmp, … (or set GLANDSEG_DATA)",
)


def glas_folder() -> str:
    """The GlaS folder typed above: inside the data root and holding train and val images (else ValueError)."""
    return str(jobs.check_data(safepaths.data_folder(data_dir)))


with st.expander("New training run", expanded=not busy):
    presets = list(PRESETS)
    remembered_preset = prefs.get("preset") if prefs.get("preset") in presets else "poster-maskrcnn"
    preset = st.selectbox(
        "Preset",
        presets,
        index=presets.index(remembered_preset),
        key="train_preset",
        help="poster-* copy the poster's hyperparameters; glandseg-* are our tuned recipes",
    )
    run_panel.pretrained_starts(PRESETS[preset], f"cfg_{preset}_pretrained")
    folder = forms.run_folder(
        runs_root,
        f"{preset}-{datetime.date.today():%Y%m%d}",
        key=f"run_{preset}",
        ok_key="run_ok_",
        note=" (an earlier attempt)",
    )
    form = forms.run_form(preset, PRESETS[preset], dev["cuda"], dev["cpus"])
    run_panel.estimate(form.values, glas_folder, form.estimate, preset)
    if form.submitted:
        try:
            if busy_now := jobs.busy_message():  # the lock first: it is the most useful answer
                raise TrainingBusy(busy_now)
            cfg = forms.config_from_values(form.values)
            new_run = folder.checked()
            pid = jobs.start_training(
                cfg,
                new_run,
                data=glas_folder(),
                workers=form.workers,
                time_limit_minutes=form.budget,
                replace=folder.replace,
                device=form.device,
            )
            st.session_state["train_selected"] = new_run.name
            runs.remember(runs_root, data_dir=data_dir, preset=preset)  # for the next browser session
            st.success(f"Started {new_run.name} (pid {pid}) on {form.device or dev['device']}.")
        except (TrainingBusy, FileExistsError, ValueError, OSError) as e:
            st.error(str(e))

gpu_panel.poster_on_gpu(runs_root, glas_folder, dev)
finetune_panel.section(runs_root, dev)
run_panel.runs_section(runs_root, glas_folder)
