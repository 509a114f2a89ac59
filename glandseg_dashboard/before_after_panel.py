"""The Train page's before/after section of a fine-tuning run: the base model and the fine-tuned one on the
held-out images (table with the paired difference, per-image scores, overlays side by side). Scoring runs in
the background (:mod:`.before_after`); this module only draws and starts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from glandseg_core.errors import ImageError
from glandseg_core.outputs.overlays import outcome_legend

from . import before_after, finetune, panels

FORMATS = {
    "metric": st.column_config.TextColumn("metric"),
    "base": st.column_config.NumberColumn("before (base model)", format="%.3f"),
    "tuned": st.column_config.NumberColumn("after (fine-tuned)", format="%.3f"),
    "n": st.column_config.NumberColumn("images", format="%d"),
    "mean_diff": st.column_config.NumberColumn("mean per-image difference", format="%+.3f"),
    "ci_low": st.column_config.NumberColumn("95% CI low", format="%+.3f"),
    "ci_high": st.column_config.NumberColumn("95% CI high", format="%+.3f"),
    "note": st.column_config.TextColumn("note"),
}


def _scoring(run_dir: Path, s: dict[str, Any], ba: dict[str, Any]) -> None:
    """Start the scoring when the run has finished (once), show its progress, or why it failed."""
    if ba["status"] == "none" and s["status"] == "finished" and s["has_best"]:
        _start(run_dir)
        return
    if ba["status"] == "running":
        frac = ba["done"] / ba["total"] if ba["total"] else 0.0
        st.progress(
            min(1.0, frac), text=f"Scoring both models: {ba['done']}/{ba['total'] or '?'} images"
        )
        if st.button("Stop the scoring", key="ba_stop"):
            st.toast("Scoring stopped." if before_after.stop(run_dir) else "None is running.")
        return
    if ba["status"] == "failed":
        st.error(f"The before/after scoring failed: {ba['error']}")
    if s["has_best"] and s["status"] not in ("running", "starting"):
        label = "Score again" if ba["status"] == "done" else "Compare now (the best epoch so far)"
        if st.button(label, key="ba_start"):
            _start(run_dir)


def _start(run_dir: Path) -> None:
    try:
        before_after.start(run_dir)
        st.rerun(scope="app")
    except (FileNotFoundError, RuntimeError, OSError) as e:
        st.error(str(e))


def _overlays(run_dir: Path, per_image: pd.DataFrame, base_name: str) -> None:
    st.markdown("**Each held-out image**: ground truth, then each model's glands coloured by outcome.")
    panels.legend(dict(outcome_legend()), title="Colours:")
    st.caption("White outlines: the true glands inside a merge or a split.")
    for _, row in per_image.iterrows():
        name = str(row[("image", "")])
        try:
            views = before_after.overlays(run_dir, name)
        except ImageError as e:
            st.error(str(e))
            continue
        f1_b, f1_t = row[("base", "f1")], row[("fine-tuned", "f1")]
        cols = st.columns(3)
        cols[0].image(views["truth"], caption=f"{name}: ground truth")
        cols[1].image(views["base"], caption=f"before ({base_name}): F1 {f1_b:.3f}")
        cols[2].image(views["tuned"], caption=f"after (fine-tuned): F1 {f1_t:.3f}")


def section(run_dir: Path, s: dict[str, Any]) -> None:
    """Before vs after on the held-out images of the fine-tuning run ``run_dir`` (status ``s``)."""
    record = finetune.read_record(run_dir)
    base_name = Path(record.get("base", "?")).name
    held = record.get("held_out", [])
    st.subheader("Before vs after, on the held-out images")
    st.caption(
        f"Base model `{base_name}` against this run's best epoch, on the {len(held)} image"
        f"{'s' if len(held) != 1 else ''} held out of the fine-tuning ({', '.join(held)}), from set "
        f"`{Path(record.get('set', '?')).name}` (the run trained on its own copy of the set)."
    )
    ba = before_after.status(run_dir)
    _scoring(run_dir, s, ba)
    found = before_after.results(run_dir) if ba["status"] == "done" else None
    if found is None:
        if s["status"] != "finished":
            st.caption("The comparison is scored when the run finishes.")
        return
    table, per_image = found
    shown = [
        c for c in FORMATS if not (c.startswith("ci_") and table[c].isna().all())
    ]  # no interval: no column
    st.dataframe(table[shown], hide_index=True, column_config=FORMATS)
    st.caption(
        "before / after: pooled over the held-out images (the official GlaS figures). Difference: after − "
        "before, image by image, with a paired bootstrap 95% interval of its mean (F1 and Dice: higher is "
        "better; Hausdorff: lower is better)."
    )
    if len(per_image) < 2:
        st.info("One held-out image: the difference is that image's alone; no interval can be given.")
    per_image_view = per_image.copy()
    per_image_view.columns = [" ".join(c).strip() for c in per_image_view.columns]
    st.dataframe(per_image_view, hide_index=True)
    _overlays(run_dir, per_image, base_name)
