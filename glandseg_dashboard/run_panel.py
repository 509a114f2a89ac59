"""The Train page's live parts: the Runs table, one run's phases with time left, its curves, Stop / Resume,
evaluation (``val`` first, Test A + B as a recorded second step) and Promote.

Everything below the form is one fragment that reruns every 3 s while any training or evaluation runs, so the
table, the progress and the buttons follow the run's real state (issue #14: the table said "starting / None"
and "need a best.pt" stayed after best.pt existed, because only the progress bar refreshed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from glandseg_core.config import RunConfig
from glandseg_core.errors import DatasetError, ModelError, TrainingBusy
from glandseg_core.evaluation import TEST_HISTORY, read_test_history
from glandseg_core.models.pretrained import NAMED_STARTS

from . import (
    before_after,
    before_after_panel,
    field_help,
    figures,
    finetune,
    forms,
    inference,
    jobs,
    promote,
    runs,
    safepaths,
    settings,
)

LIVE = ("running", "starting")
SCORES = ["n_images", "pooled_f1", "pooled_object_dice", "pooled_object_hausdorff"]
FORMATS = {
    "pooled_f1": st.column_config.NumberColumn("F1", format="%.3f"),
    "pooled_object_dice": st.column_config.NumberColumn("object Dice", format="%.3f"),
    "pooled_object_hausdorff": st.column_config.NumberColumn("object Hausdorff (px)", format="%.1f"),
    "best_val_f1": st.column_config.NumberColumn("best val F1", format="%.3f"),
}


def pretrained_starts(cfg: RunConfig, form_key: str) -> None:
    """Whether each pretrained start of ``cfg``'s model can be loaded now (no download), in plain words; when
    the preset's own start is missing, a button sets the form's *Pretrained start* (``form_key``) to none."""
    lines = []
    for start in dict.fromkeys([*NAMED_STARTS, cfg.pretrained]):
        option = dataclasses.replace(cfg, pretrained=start)
        ok, words = field_help.start_words(option)
        if start != cfg.pretrained and start != "none" and not ok and "does not fit" in words:
            continue  # does not fit this model at all (e.g. coco for a U-Net): not an option here
        chosen = " ← this preset" if start == cfg.pretrained else ""
        short = words if ok else words.split(". ")[0]
        lines.append(
            f"- **{start}**{chosen}: {':green[available]' if ok else ':orange[not available]'} · {short}"
        )
    st.markdown("**Pretrained starts** (the form's *Pretrained start*):\n" + "\n".join(lines))
    ok, words = field_help.start_words(cfg)
    if not ok and st.session_state.get(form_key, cfg.pretrained) == cfg.pretrained:
        st.warning(f"This preset starts from **{cfg.pretrained}**: {words}")
        st.button(
            "Train from scratch instead",
            key=f"scratch_{form_key}",
            on_click=lambda: st.session_state.__setitem__(form_key, "none"),
            help="sets the form's Pretrained start to none (random weights)",
        )


def estimate(values: dict[str, Any], data: Callable[[], str], clicked: bool, preset: str) -> None:
    """Time 2-3 training steps of the form's config in a child process, scaled to one epoch (on request)."""
    key = f"estimate_{preset}"
    if clicked:
        try:
            cfg = forms.config_from_values(values)
            with st.spinner(
                "Timing 3 training steps and one val image (a minute or two on a busy CPU)…"
            ):
                st.session_state[key] = {"cfg": cfg, **jobs.estimate_epoch(cfg, data())}
        except (DatasetError, ValueError, RuntimeError) as e:
            st.session_state.pop(key, None)
            st.error(f"No estimate: {e}")
    est = st.session_state.get(key)
    if not est:
        st.caption("**Estimate time per epoch** times a few steps of this config before you start.")
        return
    cfg = est["cfg"]
    st.info(
        f"**Estimated time per epoch: {forms.duration(est['epoch_seconds'])}** — {est['steps_per_epoch']} steps × "
        f"{est['step_seconds']:.{2 if est['step_seconds'] < 1 else 1}f} s ({est['measured_steps']} steps timed after a warm-up) + validation "
        f"{forms.duration(est['val_seconds'])} ({est['val_images']} images). {cfg.train_epochs} epoch"
        f"{'s' if cfg.train_epochs != 1 else ''}: "
        f"{forms.duration(est['train_seconds'] * cfg.train_epochs + est['val_seconds'] * cfg.train_epochs / cfg.train_val_every + est.get('tune_seconds', 0))}"
        f", post-processing tuning included ({forms.duration(est.get('tune_seconds', 0))}, {est.get('tune_points', 0)} grid points)."
        " An estimate: a busy machine or another training changes it."
    )


def _progress(run_dir: Path, s: dict[str, Any]) -> None:
    """The run's overall bar, its phase bar with time left, and why it stopped or failed."""
    frac, text = forms.progress_text(s)
    loss = f" · loss {s['loss']:.4f}" if s["loss"] is not None and s.get("phase") == "train" else ""
    st.progress(frac, text=f"**{text}**{loss}")
    phase = forms.phase_progress(s)
    if phase:
        left = runs.time_left(s, runs.load_run_config(run_dir), runs.read_log(run_dir))
        st.progress(phase[0], text=f"{phase[1]} · {forms.duration(left['phase'])} left in this phase")
        if left["training"] is not None:
            st.caption(
                f"Training: {forms.duration(left['training'])} left at the pace so far "
                "(an estimate; post-processing tuning follows)."
            )
    if s["status"] == "stopped":
        st.info(_stopped_words(s))
    if s["status"] in ("failed", "dead") and s["error"]:
        cfg = runs.load_run_config(run_dir)
        ok, words = field_help.start_words(cfg) if cfg is not None else (True, "")
        # a missing pretrained file: which file and where, in words (the trainer's line names CLI options)
        st.error(f"{s['status']}: {s['error'] if ok else 'its pretrained start is missing: ' + words}")


def _stopped_words(s: dict[str, Any]) -> str:
    """Why a run stopped and what Resume does: the trainer's own words (``resume`` in ``progress.json``) when
    it gave them and an epoch had finished (else the button is Restart), else what Resume does in general."""
    message = s["message"] or ""
    if s.get("resume") and s["has_last"]:
        return f"Stopped: {message}. Resume {s['resume']}."
    then = (
        "Resume continues from the last finished epoch (last.pt)."
        if s["has_last"]
        else "No epoch had finished: Restart trains it from the start."
    )
    return f"Stopped{': ' + message if message else ''}. {then}"


def _curves(run_dir: Path) -> None:
    log = runs.read_log(run_dir)
    if log.empty:
        st.caption("Curves appear after the first epoch.")
        return
    left, right = st.columns(2)
    left.plotly_chart(figures.loss_figure(log), key="loss_chart")
    right.plotly_chart(figures.validation_figure(log), key="val_chart")


def _stop_resume(run_dir: Path, s: dict[str, Any], data: Callable[[], str]) -> None:
    b = st.columns(3)
    if b[0].button(
        "Stop",
        disabled=s["status"] not in LIVE,
        key="train_stop",
        help="Ends the run within seconds in any phase; last.pt keeps the last finished epoch",
    ):
        st.toast("Stopping…" if jobs.stop_training(run_dir) else "No trainer is running for this run.")
    can_go_on = s["status"] in ("stopped", "failed", "dead") and not s["alive"]
    label = "Resume" if s["has_last"] or not can_go_on else "Restart"
    if b[1].button(
        label,
        disabled=not can_go_on,
        key="train_resume",
        help="Continue from last.pt (a run stopped while tuning redoes only the tuning)",
    ):
        try:
            own = finetune.run_data(run_dir)  # a fine-tuning run reads its own copy of the set
            st.toast(f"{label}d (pid {finetune.resume(run_dir, own or data())}).")
            st.rerun(scope="app")
        except (TrainingBusy, FileNotFoundError, DatasetError, ValueError, OSError) as e:
            st.error(str(e))


def _eval_state(run_dir: Path, kind: str, title: str) -> None:
    ev = runs.evaluation_status(run_dir, kind)
    if ev["status"] == "running":
        frac = ev["done"] / ev["total"] if ev["total"] else 0.0
        st.progress(min(1.0, frac), text=f"{title}: image {ev['done']}/{ev['total'] or '?'}")
        if st.button("Stop the evaluation", key=f"eval_stop_{kind}"):
            st.toast(
                "Evaluation stopped." if jobs.stop_evaluation(run_dir, kind) else "None is running."
            )
    elif ev["status"] == "failed":
        st.error(f"{title} failed: {ev['error']}")
    elif ev["summary"]:
        table = pd.DataFrame(ev["summary"]).T
        st.dataframe(table[[c for c in SCORES if c in table]], column_config=FORMATS)


def _evaluate(run_dir: Path, s: dict[str, Any], data: Callable[[], str]) -> None:
    """Step 1: ``val`` (as often as needed). Step 2: Test A + B, only on request, and recorded."""
    st.subheader("Evaluate")
    val, test = runs.evaluation_status(run_dir, "val"), runs.evaluation_status(run_dir, "test")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**1 · On val** (the split that chooses models; score it as often as you like)")
        if st.button(
            "Evaluate on val", disabled=not s["has_best"] or val["status"] == "running", key="eval_val"
        ):
            _launch_eval(run_dir, data, ("val",), "")
        _eval_state(run_dir, "val", "val")
    with c2:
        looks = read_test_history(run_dir)
        st.markdown("**2 · On Test A + Test B** (recorded)")
        st.caption(
            f"Each scoring is appended to this run's `{TEST_HISTORY}` ({len(looks)} so far) and carried into "
            "the model card by Promote. Score the tests once, for a model already chosen on val."
        )
        sure = st.checkbox(
            "I chose this model on val: record this look at Test A and B",
            key=f"eval_ok_{run_dir.name}",
            disabled=val["status"] != "done",
        )
        ready = s["has_best"] and sure and val["status"] == "done" and test["status"] != "running"
        if st.button("Evaluate on Test A + Test B (recorded)", disabled=not ready, key="eval_test"):
            f1 = (val["summary"] or {}).get("val", {}).get("pooled_f1")
            _launch_eval(
                run_dir,
                data,
                ("testA", "testB"),
                f"Train page, chosen on val (F1 {f1:.3f})" if f1 else "Train page",
            )
        _eval_state(run_dir, "test", "Test A + B")
    if not s["has_best"]:
        st.caption("Evaluate and Promote need a best.pt (written after the first validated epoch).")


def _launch_eval(run_dir: Path, data: Callable[[], str], splits: tuple[str, ...], reason: str) -> None:
    try:
        jobs.start_evaluation(run_dir, data=data(), splits=splits, reason=reason)
        st.rerun(scope="app")
    except (FileNotFoundError, RuntimeError, DatasetError, ValueError, OSError) as e:
        st.error(str(e))


def _promote(run_dir: Path, info: dict[str, Any]) -> None:
    name = run_dir.name
    st.subheader(f"Promote to {settings.models_root().name}/")
    cols = st.columns([2, 3, 1], vertical_alignment="bottom")
    beside = bool(finetune.read_record(run_dir))  # a fine-tuned model goes beside the shipped ones
    default_target = info["model"] if info["model"] in settings.ROLES and not beside else name
    target_name = cols[0].text_input(
        "Model folder name",
        default_target,
        key=f"promote_{name}",
        help=f"a folder in {settings.models_root()}",
    )
    try:
        target = safepaths.inside(settings.models_root(), target_name, "Model folder name")
        found = promote.replaced(target)
    except ValueError as e:
        target, found = None, []
        st.error(str(e))
    if beside and found:
        st.error(
            f"`{target_name}` holds a model: a fine-tuned model is kept beside it, under a new name."
        )
        target, found = None, []
    with cols[1]:
        confirm = forms.confirm_replace(found, f"{target_name}/", f"promote_ok_{name}_{target_name}")
    if (
        cols[2].button(
            "Promote", disabled=not info["has_best"] or not confirm or target is None, type="primary"
        )
        and target is not None
    ):
        try:
            promote.promote(run_dir, target, confirmed=found)
            inference.clear()
            st.success(f"Promoted {name} to {target}.")
        except (ModelError, ValueError, OSError) as e:
            st.error(str(e))
    if found and not confirm:
        st.caption(f"`{target}` already holds these files: tick the box to replace them.")


def _any_live(root: Path) -> bool:
    """Whether a training or an evaluation runs, or a trainer process is still starting or finishing."""
    if jobs.busy_message() is not None:
        return True
    rows = runs.list_runs(root)
    return (
        any(r["status"] in LIVE for r in rows)
        or any(
            runs.evaluation_status(Path(r["path"]), k)["status"] == "running"
            for r in rows
            for k in runs.EVALS
        )
        or any(before_after.status(Path(r["path"]))["status"] == "running" for r in rows)
    )


def runs_section(root: Path, data: Callable[[], str]) -> None:
    """The Runs table and the selected run (``data()`` gives the checked GlaS folder, or raises ValueError)."""
    live = _any_live(root)

    @st.fragment(run_every=3 if live else None)
    def section() -> None:
        if _any_live(root) != live:
            st.rerun(scope="app")  # a run started or ended: refresh everything, and the refresh rate
        st.header("Runs")
        rows = runs.list_runs(root)
        if not rows:
            st.info(f"No runs yet in `{root}`.")
            return
        st.dataframe(runs.runs_table(rows), hide_index=True, column_config=FORMATS)
        names = [r["name"] for r in rows]
        if st.session_state.get("train_selected") not in names:
            st.session_state["train_selected"] = names[0]
        name = st.selectbox("Run", names, key="train_selected")
        run_dir, info = root / name, next(r for r in rows if r["name"] == name)
        s = runs.run_status(run_dir)
        _progress(run_dir, s)
        _stop_resume(run_dir, s, data)
        _curves(run_dir)
        if finetune.read_record(run_dir):
            before_after_panel.section(run_dir, s)
        else:
            _evaluate(run_dir, s, data)
        _promote(run_dir, info)

    section()
