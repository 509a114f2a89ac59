"""The Train page's live view of one run: status, progress bar, loss and validation curves, evaluation scores."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from . import figures, forms, runs


def progress(run_dir: Path, live: bool) -> None:
    """Draw the run's state; refreshes every 3 s while a training or an evaluation of it runs (``live``)."""

    @st.fragment(run_every=3 if live else None)
    def panel() -> None:
        s, ev = runs.run_status(run_dir), runs.evaluation_status(run_dir)
        if live and s["status"] not in ("running", "starting") and ev["status"] != "running":
            st.rerun()  # finished, stopped or failed: refresh the buttons too
        frac, text = forms.progress_text(s)
        loss = f" · loss {s['loss']:.4f}" if s["loss"] is not None else ""
        st.progress(frac, text=f"**{text}**{loss}")
        if s["status"] in ("failed", "dead") and s["error"]:
            st.error(f"{s['status']}: {s['error']}")
        log = runs.read_log(run_dir)
        if log.empty:
            st.caption("Curves appear after the first epoch.")
        else:
            left, right = st.columns(2)
            left.plotly_chart(figures.loss_figure(log), key="loss_chart")
            right.plotly_chart(figures.validation_figure(log), key="val_chart")
        if ev["status"] == "running":
            st.info("Evaluating on Test A and Test B…")
        elif ev["status"] == "failed":
            st.error(f"Evaluation failed: {ev['error']}")
        elif ev["summary"]:
            cols = ["n_images", "pooled_f1", "pooled_object_dice", "pooled_object_hausdorff"]
            st.dataframe(pd.DataFrame(ev["summary"]).T[cols])

    panel()
