"""Cached loaders of precomputed results for the Metrics and Image drill-down pages.

A model folder (``$GLANDSEG_MODELS/<name>/``, else ``trained_models/<name>/`` beside app.py) holds
``per_image.csv``, ``metrics.json`` (the ``evaluate`` summary; ``summary.json`` is read when it is
missing) and ``predictions/<image>_labels.png`` label maps (``evaluate --save-predictions``). Nothing is
recomputed on page load: files are read once per modification time. Label maps are int32 (H, W),
0 = background, 1..N glands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from glandseg_core.checkpoints import WEIGHTS
from glandseg_core.datasets.glas import item_by_name, load_item
from glandseg_core.errors import DatasetError, ImageError, ModelError
from glandseg_core.evaluation import PREDICTION_SUFFIX
from glandseg_core.imaging.io import read_image, read_label_map

from . import inference, settings
from .settings import ROLES, models_root, mtime

EVAL_HINT = (
    "python -m glandseg_core evaluate --model {d} --out {d} --split testA testB --save-predictions"
)


@dataclass(frozen=True)
class ModelFolder:
    """One model folder: display label (``U-Net`` / ``Mask R-CNN``), kind and preset name (config.json), path."""

    label: str
    kind: str
    path: str
    preset: str = ""
    scores: str = (
        ""  # the folder of its per_image.csv, metrics.json and predictions/ (default: ``path``)
    )

    @property
    def results(self) -> Path:
        return Path(self.scores or self.path)


def _kind_and_preset(folder: Path) -> tuple[str, str]:
    """The model kind (a registered kind's name) and preset name from config.json; ``""`` when it does not
    say."""
    try:
        config = json.loads((folder / "config.json").read_text())
        kind, preset = str(config.get("model", "")), str(config.get("name", ""))
    except (OSError, ValueError, AttributeError):
        kind, preset = "", ""
    return kind, preset


def _label(kind: str, preset: str, name: str) -> str:
    """Display name of a model folder: "Poster recipe" for a ``poster-*`` preset, the role's name
    (``ROLES``), else the folder name."""
    if preset.startswith("poster-"):
        return "Poster recipe"
    return ROLES.get(kind, name)


@st.cache_data(show_spinner=False, ttl=60)
def _scan(root: str, stamp: float) -> list[ModelFolder]:
    folders = []
    for d in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if d.is_dir() and any(
            (d / f).exists() for f in ("per_image.csv", "metrics.json", "config.json")
        ):
            kind, preset = _kind_and_preset(d)
            folders.append(ModelFolder(_label(kind, preset, d.name), kind, str(d), preset))
    order = [*ROLES.values(), "Poster recipe"]
    folders.sort(key=lambda f: (order.index(f.label) if f.label in order else len(order), f.path))
    labels = [f.label for f in folders]
    return [
        ModelFolder(f"{f.label} ({Path(f.path).name})", f.kind, f.path, f.preset)
        if labels.count(f.label) > 1
        else f
        for f in folders
    ]


def is_poster_recipe(model: ModelFolder) -> bool:
    """Whether the folder holds the poster's recipe (its config names a ``poster-*`` preset)."""
    return model.preset.startswith("poster-")


def find_models() -> tuple[dict[str, ModelFolder], list[str]]:
    """Model folders under the models root by label, and a plain message per expected model not found."""
    root = models_root()
    folders = {f.label: f for f in _scan(str(root), mtime(root))}
    kinds = {f.kind for f in folders.values() if not is_poster_recipe(f)}
    missing = [
        f"No {label} model folder in `{root}` (a sub-folder whose config.json says "
        f'`"model": "{kind}"`); showing the other model only.'
        for kind, label in ROLES.items()
        if kind not in kinds
    ]
    return folders, missing


@st.cache_data(show_spinner=False, max_entries=32)
def _read_csv(path: str, stamp: float) -> pd.DataFrame:
    return pd.read_csv(path)


def per_image(model: ModelFolder) -> pd.DataFrame | None:
    """The folder's per_image.csv (None when absent)."""
    path = model.results / "per_image.csv"
    return _read_csv(str(path), mtime(path)) if path.is_file() else None


@st.cache_data(show_spinner=False, max_entries=32)
def _read_json(path: str, stamp: float) -> dict:
    return json.loads(Path(path).read_text())


def summary(model: ModelFolder) -> dict | None:
    """The folder's metrics.json (else summary.json): ``{split: {pooled_f1, ...}}``; None when absent."""
    for name in ("metrics.json", "summary.json"):
        path = model.results / name
        if path.is_file():
            try:
                return _read_json(str(path), mtime(path))
            except ValueError:
                return None
    return None


def load_results(
    models: dict[str, ModelFolder],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict], list[str]]:
    """(per-image tables by label, summaries by label, one message per folder without per_image.csv)."""
    tables, sums, problems = {}, {}, []
    for label, m in models.items():
        df = per_image(m)
        if df is None:
            problems.append(
                f"{label} (`{m.path}`) has no per_image.csv; run `{EVAL_HINT.format(d=m.path)}`."
            )
            continue
        tables[label] = df
        if (s := summary(m)) is not None:
            sums[label] = s
    return tables, sums, problems


@st.cache_data(show_spinner=False, max_entries=64)
def _read_prediction(path: str, stamp: float) -> np.ndarray:
    return read_label_map(path)


def prediction(model: ModelFolder, name: str, image: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The model's label map of ``name``: saved prediction, else :func:`glandseg_dashboard.inference.segment`; (None, why)."""
    path = model.results / "predictions" / f"{name}{PREDICTION_SUFFIX}.png"
    if path.is_file():
        try:
            labels = _read_prediction(str(path), mtime(path))
        except ImageError as e:
            return None, str(e)
        if labels.shape == image.shape[:2]:
            return labels, "saved prediction"
        return None, f"{path.name} is {labels.shape[::-1]} but the image is {image.shape[1::-1]}"
    if not (Path(model.path) / WEIGHTS).is_file():
        return None, f"no predictions/{path.name} and no {WEIGHTS} in `{model.path}`"
    try:
        result = inference.segment(
            model.path, image, what=f"{name} with {model.label} (no saved prediction)"
        )
    except (ModelError, ImageError, inference.InferenceFailed) as e:
        return None, f"no saved prediction and segmenting failed: {e}"
    return result.labels, "segmented now (no saved prediction)"


@st.cache_data(show_spinner=False, max_entries=32)
def _glas_item(root: str, name: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    return load_item(item_by_name(root, name))


@st.cache_data(show_spinner=False, max_entries=32)
def _sample_item(image_path: str, anno_path: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(image_path)
    return image, read_label_map(anno_path, shape=image.shape[:2])


def sample_names() -> list[str]:
    """Names of the bundled samples (``samples/<name>.png`` with ``<name>_anno.png``)."""
    root = settings.SAMPLES_DIR
    return sorted(p.stem for p in root.glob("*.png") if (root / f"{p.stem}_anno.png").is_file())


def glas_image(name: str) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(image uint8[H, W, 3], ground truth int32[H, W], source) from $GLANDSEG_DATA, else samples/."""
    root = settings.glas_dir()
    if root is not None:
        try:
            image, gt = _glas_item(str(root), name, mtime(root))
            return image, gt, f"GLANDSEG_DATA ({root})"
        except (DatasetError, ImageError) as e:
            return None, None, str(e)
    samples = settings.SAMPLES_DIR
    img, anno = samples / f"{name}.png", samples / f"{name}_anno.png"
    if img.is_file() and anno.is_file():
        try:
            return (*_sample_item(str(img), str(anno), mtime(img)), "bundled sample")
        except ImageError as e:
            return None, None, str(e)
    return None, None, f"{name} is not among the bundled samples in `{samples}`"


def results_or_stop() -> tuple[dict[str, ModelFolder], dict[str, pd.DataFrame], dict[str, dict]]:
    """The models and their precomputed results for a results page; warns about what is missing and stops
    the page when nothing can be shown. Returns (models, tables, summaries) as :func:`load_results` does."""
    models, missing = find_models()
    for msg in missing:
        st.warning(msg)
    tables, summaries, problems = load_results(models)
    for msg in problems:
        st.warning(msg)
    if not tables:
        st.error(f"No model results to show. Put model folders with per_image.csv in `{models_root()}`.")
        st.stop()
    return models, tables, summaries


# ------------------------------------------------------------------------------------ the results table

#: How GlaS decides that a gland was found, said where the numbers appear (docs/METRICS.md).
MATCHING_RULE = (
    "**How a gland counts as found.** Each predicted gland is paired with the ground-truth gland it "
    "overlaps most; it is a true positive only when it covers **more than 50%** of that gland. A prediction "
    "that overlaps a gland well but covers half of it or less (even with Dice 0.57) is a false positive, "
    "and the gland is missed. A **merge** (one prediction over several glands) finds at most one of them; a "
    "**split** (one gland cut into pieces) finds at most one piece, the others are false positives. Object "
    "Dice and Hausdorff pair every gland with its largest overlap, weighted by area."
)
AGGREGATIONS = {
    "pooled": "Pooled (official GlaS)",
    "per-image mean": "Per-image mean (as on the poster)",
}
PAPER_METRICS = {"f1": "F1", "object_dice": "Dice", "object_hausdorff": "Hausdorff"}


#: How each row of the results table was aggregated, said in its own column.
CONVENTIONS = {
    ("official", "pooled"): "pooled (official GlaS)",
    ("official", "per-image mean"): "per-image mean",
    ("components", "pooled"): "GT split into components, pooled",
    ("components", "per-image mean"): "GT split into components, per-image mean",
}
UNNAMED_SPLIT = "Split not named"  # the poster's figures: per-image means over a split it does not name


def paper_table(
    tidy: pd.DataFrame,
    aggregation: str,
    splits: tuple[str, ...] = ("Test A", "Test B"),
    components: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The results in the paper's layout: one row per method and convention, and per split its F1, object Dice
    and object Hausdorff (columns ``"<split> F1"``, ``"<split> Dice"``, ``"<split> Hausdorff"``).

    Our models appear in ``aggregation``; the poster's and published rows appear in every view, each labelled
    with the convention it used (the poster's under :data:`UNNAMED_SPLIT`, since it names none).

    Args:
        tidy: :func:`glandseg_core.stats.results_table` rows (method, source, split, aggregation, ...).
        aggregation: "pooled" or "per-image mean": the rows of our models to show.
        splits: The split names to show, in order.
        components: the same rows scored against ground truth split into connected components (optional).

    Returns:
        Columns method, source, convention, then the split columns; rows in their first order of appearance.
    """
    ours = tidy["source"] == "ours"
    parts = [tidy[ours].assign(gt="official")]
    if components is not None and len(components):  # beside our official rows, before the references
        parts.append(components[components["source"] == "ours"].assign(gt="components"))
    parts.append(tidy[~ours].assign(gt="official"))
    rows = pd.concat(parts, ignore_index=True)
    rows = rows[(rows["source"] != "ours") | (rows["aggregation"] == aggregation)].copy()
    rows.loc[rows["source"] == "poster", "split"] = UNNAMED_SPLIT
    rows["convention"] = [
        CONVENTIONS[(g, a)] for g, a in zip(rows["gt"], rows["aggregation"], strict=True)
    ]
    shown = [*splits, *([UNNAMED_SPLIT] if (rows["source"] == "poster").any() else [])]
    rows = rows[rows["split"].isin(shown)]
    keys = ["method", "source", "convention"]
    wide = rows.pivot_table(
        index=keys,
        columns="split",
        values=list(PAPER_METRICS),
        aggfunc="first",
        sort=False,
        dropna=False,
    )
    columns = [f"{s} {name}" for s in shown for name in PAPER_METRICS.values()]
    out = pd.DataFrame(index=wide.index, columns=columns, dtype=float)
    for s in shown:
        for metric, name in PAPER_METRICS.items():
            if (metric, s) in wide:
                out[f"{s} {name}"] = wide[(metric, s)]
    order = list(dict.fromkeys(zip(*(rows[k] for k in keys), strict=True)))
    return out.reindex(order).reset_index()
