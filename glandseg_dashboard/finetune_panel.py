"""The Train page's "Fine-tune on this set" form: an annotation set (saved from Annotate), a model to start
from, the images held out for the before/after comparison (marked, or a seeded fraction), and the kind's
``finetune-*`` preset, editable like any run. Starting copies the set into the run (:mod:`.finetune`)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import streamlit as st

from glandseg_core.errors import ConfigError, DatasetError, ModelError, TrainingBusy

from . import finetune, forms, settings


def _held_out(set_dir: Path, names: list[str], in_test: list[str]) -> list[str]:
    """The images the user holds out: marked in a list, or a seeded fraction."""
    how = st.radio(
        "Held-out images (scored before and after, never trained on)",
        ("Mark images", "A fraction"),
        horizontal=True,
        key="ft_how",
    )
    if how == "Mark images":
        return st.multiselect(
            "Images to hold out",
            names,
            default=in_test or names[-1:],
            key=f"ft_held_{set_dir.name}",
            help="the set's own test images are marked at first; the others train (one or more check the training)",
        )
    c1, c2 = st.columns(2)
    fraction = c1.number_input("Fraction held out", 0.05, 0.9, 0.2, 0.05, key="ft_fraction")
    seed = c2.number_input("Seed", 0, 10_000, 0, 1, key="ft_seed", help="same seed, same images")
    try:
        chosen = finetune.held_out_by_fraction(set_dir, float(fraction), int(seed))
    except (ValueError, DatasetError) as e:
        st.error(str(e))
        return []
    st.caption(f"Held out: {', '.join(chosen) or 'none (raise the fraction)'}")
    return chosen


def _choices(runs_root: Path) -> tuple[Path, Path, list[str]] | None:
    """(set folder, base model, held-out names) chosen above the form, or None when there is nothing to choose."""
    root = settings.annotations_root()
    sets = finetune.annotation_sets(root)
    if not sets:
        st.info(
            f"No annotation sets yet in `{root}`. On the Annotate page, correct predictions and save them with "
            "**Save to set** under a name of your choice; the set appears here."
        )
        return None
    c1, c2 = st.columns(2)
    set_dir = root / c1.selectbox("Annotation set", sets, key="ft_set")
    models = finetune.base_models(settings.models_root(), runs_root)
    if not models:
        st.warning(f"No model to start from in {settings.models_root()} or {runs_root}.")
        return None
    base = models[
        c2.selectbox("Start from", list(models), key="ft_base", help="a shipped model or a run")
    ]
    try:
        names, in_test, problems = finetune.set_images(set_dir)
    except DatasetError as e:
        st.error(str(e))
        return None
    for line in problems:
        st.warning(line)
    st.caption(f"`{set_dir.name}`: {len(names)} annotated images ({', '.join(names)}).")
    return set_dir, base, _held_out(set_dir, names, in_test)


def _launch(choice: tuple[Path, Path, list[str]], folder: forms.RunFolder, form: forms.RunForm) -> None:
    set_dir, base, held = choice
    try:
        run_dir = folder.checked()
        cfg = forms.config_from_values(form.values)
        pid = finetune.start_finetune(
            cfg, run_dir, set_dir=set_dir, base=base, held_out=held, device=form.device,
            workers=form.workers, time_limit_minutes=form.budget, replace=folder.replace,
        )  # fmt: skip
        st.session_state["train_selected"] = run_dir.name
        st.success(f"Started {run_dir.name} (pid {pid}): fine-tuning {base.name} on {set_dir.name}.")
    except (TrainingBusy, FileExistsError, ValueError, OSError, DatasetError, ModelError) as e:
        st.error(str(e))


def section(runs_root: Path, dev: dict[str, Any]) -> None:
    """The "Fine-tune on this set" expander of the Train page."""
    with st.expander("Fine-tune on this set", expanded=False):
        st.caption(
            "Continue the training of a model on your own corrected images (from the Annotate page), "
            "then see it against "
            "the model it started from on images it never trained on."
        )
        choice = _choices(runs_root)
        if choice is None:
            return
        set_dir, base, _ = choice
        try:
            cfg = finetune.finetune_config(base)
        except (ModelError, ConfigError, ValueError) as e:
            st.error(f"Cannot fine-tune {base.name}: {e}")
            return
        folder = forms.run_folder(
            runs_root,
            f"finetune-{set_dir.name}-{datetime.date.today():%Y%m%d}",
            key=f"ft_run_{set_dir.name}",
            ok_key="ft_ok_",
        )
        st.caption(
            f"Preset **{cfg.name}**, starting from `{cfg.train_init}`; every field can be changed."
        )
        form = forms.run_form(
            cfg.name, cfg, dev["cuda"], dev["cpus"], key=f"ft_{base.name}_", estimate=False
        )
        if form.submitted:
            _launch(choice, folder, form)
