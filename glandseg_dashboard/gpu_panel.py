"""The Train page on a machine with a CUDA GPU: the poster's recipe (``poster-maskrcnn``: Mask R-CNN R50-FPN from
COCO weights, SGD 0.005, 200 epochs) as a one-click GPU run, with its COCO start checked first and, when the
weights file is missing, where it is looked for and a "Train from scratch instead" button (issue #22, item 5)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from glandseg_core.config import PRESETS
from glandseg_core.errors import DatasetError, TrainingBusy

from . import field_help, jobs, safepaths

POSTER = "poster-maskrcnn"


def _start(runs_root: Path, data: Callable[[], str], dev: dict[str, Any], scratch: bool) -> None:
    cfg = PRESETS[POSTER]
    cfg = dataclasses.replace(cfg, pretrained="none", name=f"{POSTER}-scratch") if scratch else cfg
    name = f"{cfg.name}-gpu-{datetime.datetime.now():%Y%m%d-%H%M}"
    try:
        run_dir = safepaths.inside(runs_root, name, "Run folder name")
        workers = max(0, min(6, dev["cpus"] - 1))
        pid = jobs.start_training(cfg, run_dir, data=data(), workers=workers, device="cuda")
        st.session_state["train_selected"] = run_dir.name
        st.success(f"Started {run_dir.name} (pid {pid}) on the GPU ({dev['name']}).")
    except (TrainingBusy, FileExistsError, ValueError, OSError, DatasetError) as e:
        st.error(str(e))


def poster_on_gpu(runs_root: Path, data: Callable[[], str], dev: dict[str, Any]) -> None:
    """The one-click GPU run of the poster's recipe (only shown when CUDA is present)."""
    if not dev["cuda"]:
        return
    cfg = PRESETS[POSTER]
    with st.container(border=True):
        st.markdown(
            f"**The poster's recipe on this GPU** ({dev['name']}): Mask R-CNN ResNet-50-FPN from COCO weights, "
            f"SGD lr {cfg.train_lr:g}, batch {cfg.train_batch_size}, {cfg.train_epochs} epochs, on the GlaS "
            "folder above. One click starts it on cuda; the run appears under Runs."
        )
        ok, words = field_help.start_words(cfg)
        if not ok:
            st.warning(f"Its COCO start: {words}")
        c1, c2 = st.columns(2)
        if c1.button("Train the poster's recipe on the GPU", type="primary", key="gpu_poster"):
            _start(runs_root, data, dev, scratch=False)
        if not ok and c2.button(
            "Train from scratch instead",
            key="gpu_poster_scratch",
            help="the same recipe with random weights (no COCO file needed)",
        ):
            _start(runs_root, data, dev, scratch=True)
