"""The results pages' choice of data set (GlaS Test A / B, or any evaluated set such as an annotation set), that
set's scores per model, its images with their ground truth, and the Metrics page's "Score both models on this
set" with its progress. Files and jobs: :mod:`glandseg_dashboard.evaluated_sets`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from glandseg_core.datasets import as_dataset
from glandseg_core.errors import DatasetError, ImageError
from glandseg_core.evaluation import RELABEL_SUFFIX, read_relabel_summary

from . import evaluated_sets, pickers, settings
from . import results as ur
from .evaluated_sets import DataSet

GLAS = "glas"
COMPONENTS_DIR = (
    "components"  # <model folder>/components/: the diagnostic scored from its saved predictions
)
GLAS_LABEL = "GlaS Test A / Test B (the model folders' own scores)"
UNKNOWN_GRADE = (
    "unknown"  # per_image.csv's grade of an image without a GlaS grade (glandseg_core.evaluation)
)


def pick_set(prefix: str) -> DataSet | None:
    """The "Data set" choice of a results page, remembered across pages; None for GlaS."""
    sets = {s.key: s for s in evaluated_sets.find_sets()}
    if not sets:
        return None
    options = [GLAS, *sets]
    key = "results_set"  # shared by Metrics and the drill-down: the set looked at stays the same
    pickers.sticky(key, options)
    choice = st.selectbox(
        "Data set",
        options,
        key=key,
        format_func=lambda k: GLAS_LABEL if k == GLAS else sets[k].label,
        help="GlaS, or a set scored with `glandseg evaluate --data DIR --out DIR/evaluations/<model>` "
        "(annotation sets saved on the Annotate page are listed, scored or not).",
    )
    pickers.remember(key, choice)
    return None if choice == GLAS else sets[choice]


def set_models(ds: DataSet) -> dict[str, ur.ModelFolder]:
    """The models scored on ``ds``, by label; a model folder of that name lends its label and weights."""
    folders = {Path(m.path).name: m for m in ur.find_models()[0].values()}
    scored = evaluated_sets.scored_models(ds.folder)
    order = [*[n for n in folders if n in scored], *[n for n in scored if n not in folders]]
    out = {}
    for name in order:
        scores = scored[name]
        m = folders.get(name)
        if m is None:
            m = ur.ModelFolder(name, "", str(settings.models_root() / name))
        out[m.label] = ur.ModelFolder(m.label, m.kind, m.path, m.preset, scores=str(scores))
    return out


def components(models: dict[str, ur.ModelFolder]) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """The connected-components diagnostic (per-image tables and summaries) of the models that have it, beside
    their scores or in their ``components/`` folder."""
    tables, sums = {}, {}
    for label, m in models.items():
        for folder in (m.results, m.results / COMPONENTS_DIR):
            path = folder / f"per_image{RELABEL_SUFFIX}.csv"
            if path.is_file():
                tables[label] = pd.read_csv(path)
                sums[label] = read_relabel_summary(folder)
                break
    return tables, sums


def split_sets(tables: dict[str, pd.DataFrame]) -> dict[str, tuple[str, ...]]:
    """A set's split choices: all its images, then each split it has."""
    splits = sorted({s for df in tables.values() for s in df["split"].astype(str)})
    return {"All images": tuple(splits), **({s: (s,) for s in splits} if len(splits) > 1 else {})}


def grade_choices(tables: dict[str, pd.DataFrame]) -> list[str]:
    """A set's grade choices: the GlaS grades its images have (then ``unknown`` for the others, if any); none when
    no image has a grade (an annotation set of the user's own images): the page shows no Grade choice then."""
    grades = {str(g) for df in tables.values() for g in df["grade"]}
    known = sorted(grades - {UNKNOWN_GRADE})
    return known + [UNKNOWN_GRADE] if known and UNKNOWN_GRADE in grades else known


@st.cache_data(show_spinner=False, max_entries=32)
def _set_item(folder: str, name: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    item = next((it for it in as_dataset(folder).items(None) if it.name == name), None)
    if item is None:
        raise DatasetError(f"{folder} holds no image {name}")
    return item.load_annotated()


def set_image(ds: DataSet, name: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(image, ground truth, source) of image ``name`` of the set (None, None, why on failure)."""
    try:
        image, gt = _set_item(str(ds.folder), name, settings.mtime(ds.folder / "labels"))
    except (DatasetError, ImageError) as e:
        return None, None, str(e)
    return image, gt, f"{ds.label} ({ds.folder})"


def _score_state(ds: DataSet, names: list[str]) -> dict[str, dict]:
    return {n: evaluated_sets.status(ds.folder, n) for n in names}


def score_panel(ds: DataSet) -> None:
    """The "Score both models on this set" button, and each model's progress while it runs."""
    names = [r for r in settings.ROLES if (settings.models_root() / r / "weights.pt").is_file()]
    state = _score_state(ds, names)
    running = any(s["status"] == "running" for s in state.values())
    if running:
        _progress(ds, names)
    for name, s in state.items():
        if s["status"] == "failed":
            st.error(f"Scoring {name} on {ds.folder.name} failed: {s['error'] or 'see eval.out'}")
    can = bool(names) and not settings.read_only() and not running
    if st.button("Score both models on this set", disabled=not can, key="metrics_score_set"):
        try:
            for name in names:
                evaluated_sets.start_scoring(ds.folder, settings.models_root() / name)
        except (DatasetError, RuntimeError, OSError) as e:
            st.error(f"Cannot score {ds.folder.name}: {e}")
        else:
            st.rerun()
    if not names:
        st.caption(f"No model folder with weights.pt in `{settings.models_root()}` to score with.")


@st.fragment(run_every=2)
def _progress(ds: DataSet, names: list[str]) -> None:
    state = _score_state(ds, names)
    for name, s in state.items():
        if s["status"] == "running":
            done, total = s["done"], max(1, s["total"])
            st.progress(
                min(1.0, done / total),
                text=f"Scoring {name} on {ds.folder.name}: {done} of {total} images",
            )
    if not any(s["status"] == "running" for s in state.values()):
        st.rerun()  # finished: the whole page shows the new table


def results_or_stop(ds: DataSet, *, score: bool = True) -> tuple[dict, dict, dict]:
    """(models, per-image tables, summaries) of a set, as :func:`results.results_or_stop` gives for GlaS;
    stops the page (after the score button, with ``score``) when no model has scored the set yet."""
    if score:
        score_panel(ds)
    models = set_models(ds)
    tables, sums, problems = ur.load_results(models)
    for msg in problems:
        st.warning(msg)
    if not tables:
        press = "Press “Score both models on this set”" + ("" if score else " on the Metrics page")
        st.info(
            f"No scores on {ds.label} yet. {press}, or run `glandseg evaluate "
            f"--model trained_models/unet --data {ds.folder} --out {evaluated_sets.evaluation_dir(ds.folder, 'unet')} "
            "--save-predictions`."
        )
        st.stop()
    return models, tables, sums
