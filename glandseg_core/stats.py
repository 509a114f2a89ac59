"""Result tables and paired model comparisons over per-image scores (pure pandas / numpy / scipy).

Inputs are ``per_image.csv`` tables as written by ``evaluate`` (columns image, split, grade, n_gt,
n_pred, tp, fp, fn, f1, object_dice, object_hausdorff, ...) and ``summary.json`` dicts
(``{split: {pooled_f1, ...}}``). No file I/O and no streamlit here.

Two aggregations are reported and never mixed up (docs/METRICS.md):
- **pooled** (the official GlaS figures): F1 from TP / FP / FN summed over the images; object Dice and
  Hausdorff weighted over every object of the split. The latter need per-object sums that
  ``per_image.csv`` does not hold, so they come from the ``evaluate`` summary and only for a whole
  split (no grade filter).
- **per-image mean**: the mean of each image's score (the poster's figures are per-image means).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _sps

from .metrics import HEADLINE_FIGURES, f1_from_counts

__all__ = [
    "GRADES",
    "METRICS",
    "POSTER",
    "PUBLISHED",
    "SPLIT_SETS",
    "PairedResult",
    "detection_f1",
    "filter_images",
    "format_p",
    "paired_comparison",
    "reference_table",
    "results_table",
    "summary_table",
]

#: Metric column -> (label, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "f1": ("F1", True),
    "object_dice": ("Object Dice", True),
    "object_hausdorff": ("Object Hausdorff (px)", False),
}
GRADES = ("benign", "malignant")
#: Display name -> the splits pooled together ("Test A + B": the summary's "all" when evaluated on both).
SPLIT_SETS: dict[str, tuple[str, ...]] = {
    "Test A": ("testA",),
    "Test B": ("testB",),
    "Test A + B": ("testA", "testB"),
}
_NAN = float("nan")

#: The poster's results (docs/poster.md): per-image means over a split it does not name.
POSTER: tuple[dict[str, object], ...] = (
    {
        "method": "U-Net (poster, 15 epochs)",
        "split": "unspecified",
        "f1": 0.49,
        "object_dice": _NAN,
        "object_hausdorff": 79.0,
    },
    {
        "method": "Mask R-CNN (poster, 200 epochs)",
        "split": "unspecified (all images)",
        "f1": 0.79,
        "object_dice": _NAN,
        "object_hausdorff": 153.0,
    },
)
#: Published GlaS results, official pooled figures (Sirinukunwattana et al. 2017; MILD-Net, Graham 2019).
PUBLISHED: tuple[dict[str, object], ...] = (
    {
        "method": "DCAN (GlaS winner)",
        "split": "Test A",
        "f1": 0.912,
        "object_dice": 0.897,
        "object_hausdorff": 45.4,
    },
    {
        "method": "DCAN (GlaS winner)",
        "split": "Test B",
        "f1": 0.716,
        "object_dice": 0.781,
        "object_hausdorff": 160.3,
    },
    {
        "method": "Freiburg U-Net (GlaS)",
        "split": "Test A",
        "f1": 0.870,
        "object_dice": _NAN,
        "object_hausdorff": _NAN,
    },
    {
        "method": "MILD-Net",
        "split": "Test A",
        "f1": 0.914,
        "object_dice": 0.913,
        "object_hausdorff": 41.5,
    },
    {
        "method": "MILD-Net",
        "split": "Test B",
        "f1": 0.844,
        "object_dice": 0.836,
        "object_hausdorff": 105.9,
    },
)


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of two models over the images both have scores for.

    Attributes:
        diffs: Per-image differences b - a, indexed by image name, sorted by image name.
        n: Number of paired images (finite on both sides).
        mean_diff, median_diff: Of ``diffs`` (NaN when n = 0).
        ci_low, ci_high: Percentile bootstrap 95% CI of the mean difference (NaN when n < 2; equal to the
            mean when every difference is the same).
        p_value: Two-sided Wilcoxon signed-rank p-value (1.0 when every difference is zero; NaN when
            n < 2).
        note: Empty, or one line saying why a figure is missing or degenerate.
    """

    diffs: pd.Series
    n: int
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    note: str = ""


def paired_comparison(
    a: pd.Series, b: pd.Series, n_boot: int = 10000, seed: int = 0, *, chunk: int = 2000
) -> PairedResult:
    """Compares model b against model a image by image: differences b - a over the common images.

    How it works: the two series are aligned on their index (image names) and pairs with a missing or
    non-finite value on either side are dropped. ``scipy.stats.bootstrap`` resamples the n differences
    (the pairs as units) with replacement ``n_boot`` times, ``chunk`` resamples at a time to bound memory,
    and gives the percentile 95% interval of the resampled means. Wilcoxon uses scipy's default
    (``zero_method="wilcox"``: zero differences are dropped).

    Args:
        a: Per-image scores of model a (float), indexed by image name.
        b: Per-image scores of model b, same index convention.
        n_boot: Bootstrap resamples (>= 1).
        seed: Seed of the bootstrap generator (results are reproducible).
        chunk: Resamples drawn at once (``scipy.stats.bootstrap``'s ``batch``).

    Returns:
        The `PairedResult`.

    Raises:
        ValueError: If ``n_boot`` or ``chunk`` is < 1, or an index holds duplicate image names.
    """
    if n_boot < 1 or chunk < 1:
        raise ValueError(f"n_boot and chunk must be >= 1, got {n_boot} and {chunk}")
    for name, s in (("a", a), ("b", b)):
        if not s.index.is_unique:
            dup = s.index[s.index.duplicated()][0]
            raise ValueError(f"series {name} has duplicate image {dup!r}")
    pair = pd.concat([a.astype(float).rename("a"), b.astype(float).rename("b")], axis=1, join="inner")
    pair = pair[np.isfinite(pair["a"]) & np.isfinite(pair["b"])].sort_index()
    diffs = (pair["b"] - pair["a"]).rename("difference")
    d = diffs.to_numpy()
    n = int(d.size)
    if n == 0:
        return PairedResult(diffs, 0, _NAN, _NAN, _NAN, _NAN, _NAN, "no images scored by both models")
    mean, median = float(d.mean()), float(np.median(d))
    if n < 2:
        return PairedResult(diffs, n, mean, median, _NAN, _NAN, _NAN, "one paired image: no test or CI")
    lo, hi = _bootstrap_ci(d, n_boot, seed, chunk)
    if np.all(d == 0):
        return PairedResult(diffs, n, mean, median, lo, hi, 1.0, "every difference is zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n / ties warnings; the p-value is still returned
        p = float(_sps.wilcoxon(d).pvalue)
    return PairedResult(diffs, n, mean, median, lo, hi, p)


def _bootstrap_ci(d: np.ndarray, n_boot: int, seed: int, chunk: int) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean of the paired differences ``d`` (``scipy.stats.bootstrap``).

    The pairs are resampled as units: resampling the n differences with replacement is the paired bootstrap
    of (a, b). When every difference is the same, every resample has the same mean, so the CI is that mean.
    """
    mean = float(d.mean())
    if np.all(d == d[0]):
        return mean, mean
    res = _sps.bootstrap(
        (d,),
        np.mean,
        n_resamples=n_boot,
        batch=chunk,
        vectorized=True,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def filter_images(
    df: pd.DataFrame, splits: Iterable[str] | None = None, grades: Iterable[str] | None = None
) -> pd.DataFrame:
    """Rows of a per-image table with split in ``splits`` and grade in ``grades`` (None: no filter)."""
    out = df
    if splits is not None:
        out = out[out["split"].isin(list(splits))]
    if grades is not None:
        out = out[out["grade"].isin(list(grades))]
    return out


def detection_f1(tp: int, fp: int, fn: int) -> float:
    """F1 from summed counts (1.0 when there is nothing on either side): the metrics package's one F1."""
    return f1_from_counts(tp, fp, fn)


def _whole_split_summary(
    summary: Mapping[str, Mapping] | None, splits: Sequence[str], n_images: int
) -> Mapping | None:
    """The summary entry that pools exactly ``splits`` with ``n_images`` images, if there is one."""
    if not summary:
        return None
    if len(splits) == 1:
        entry = summary.get(splits[0])
    else:
        entry = summary.get("all") if set(summary) - {"all"} == set(splits) else None
    if not isinstance(entry, Mapping) or entry.get("n_images") != n_images:
        return None
    return entry


def summary_table(
    per_image: Mapping[str, pd.DataFrame],
    splits: Sequence[str],
    grades: Sequence[str] | None = None,
    summaries: Mapping[str, Mapping[str, Mapping]] | None = None,
) -> pd.DataFrame:
    """One row per model: pooled and per-image-mean F1 / object Dice / object Hausdorff over a filter.

    Pooled F1 always comes from the summed tp / fp / fn of the filtered rows. Pooled object Dice and
    Hausdorff come from the model's ``evaluate`` summary (``metrics.json``) only when the filter is whole
    split(s) with no grade filter and the summary's image count matches; otherwise they are NaN and
    ``pooled_dice_hausdorff`` says why.

    Args:
        per_image: Model name -> its per_image.csv table.
        splits: The splits pooled together (e.g. ``("testA",)`` or ``("testA", "testB")``).
        grades: Grades to keep (``benign`` / ``malignant``); None keeps all. A selection that keeps every
            grade present in the chosen splits counts as no grade filter.
        summaries: Model name -> its summary dict; missing models get no pooled Dice / Hausdorff.

    Returns:
        Columns: model, n_images, tp, fp, fn, pooled_f1, pooled_object_dice, pooled_object_hausdorff,
        mean_f1, mean_object_dice, mean_object_hausdorff, pooled_dice_hausdorff (source or reason).
    """
    rows = []
    for model, df in per_image.items():
        in_splits = filter_images(df, splits)
        sub = filter_images(in_splits, None, grades)
        whole = len(sub) == len(in_splits)
        tp, fp, fn = (int(sub[k].sum()) for k in ("tp", "fp", "fn"))
        row: dict[str, object] = {
            "model": model,
            "n_images": len(sub),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "pooled_f1": detection_f1(tp, fp, fn) if len(sub) else _NAN,
            "pooled_object_dice": _NAN,
            "pooled_object_hausdorff": _NAN,
            **{f"mean_{m}": float(sub[m].mean()) if len(sub) else _NAN for m in METRICS},
        }
        entry = _whole_split_summary((summaries or {}).get(model), splits, len(sub)) if whole else None
        if not len(sub):
            why = "no images"
        elif not whole:
            why = "n/a: grade filter (needs per-object sums)"
        elif entry is None:
            why = "n/a: no matching metrics.json entry"
        else:
            why = "metrics.json"
            row["pooled_object_dice"] = float(entry["pooled_object_dice"])
            row["pooled_object_hausdorff"] = float(entry["pooled_object_hausdorff"])
        row["pooled_dice_hausdorff"] = why
        rows.append(row)
    return pd.DataFrame(rows, columns=_SUMMARY_COLUMNS)


_SUMMARY_COLUMNS = ["model", "n_images", "tp", "fp", "fn", *HEADLINE_FIGURES, "pooled_dice_hausdorff"]
_TIDY_COLUMNS = ["method", "source", "split", "aggregation", "n_images", *METRICS]


def reference_table() -> pd.DataFrame:
    """The poster's and published figures in the tidy layout of `results_table`."""
    rows = [
        {**r, "source": "poster", "aggregation": "per-image mean", "n_images": pd.NA} for r in POSTER
    ]
    rows += [{**r, "source": "published", "aggregation": "pooled", "n_images": pd.NA} for r in PUBLISHED]
    return pd.DataFrame(rows, columns=_TIDY_COLUMNS)


def results_table(
    per_image: Mapping[str, pd.DataFrame],
    grades: Sequence[str] | None = None,
    summaries: Mapping[str, Mapping[str, Mapping]] | None = None,
    *,
    split_sets: Mapping[str, Sequence[str]] = SPLIT_SETS,
    references: bool = True,
) -> pd.DataFrame:
    """Our models on every split set, pooled and per-image mean, with the reference figures below.

    Returns:
        Tidy rows with columns method, source ("ours" / "poster" / "published"), split, aggregation
        ("pooled" / "per-image mean"), n_images, f1, object_dice, object_hausdorff. Split sets with no
        images for a model are left out.
    """
    rows = []
    for split_name, splits in split_sets.items():
        table = summary_table(per_image, splits, grades, summaries)
        for r in table.itertuples(index=False):
            if not r.n_images:
                continue
            base = {"method": r.model, "source": "ours", "split": split_name, "n_images": r.n_images}
            rows.append(
                {
                    **base,
                    "aggregation": "pooled",
                    "f1": r.pooled_f1,
                    "object_dice": r.pooled_object_dice,
                    "object_hausdorff": r.pooled_object_hausdorff,
                }
            )
            rows.append(
                {
                    **base,
                    "aggregation": "per-image mean",
                    "f1": r.mean_f1,
                    "object_dice": r.mean_object_dice,
                    "object_hausdorff": r.mean_object_hausdorff,
                }
            )
    ours = pd.DataFrame(rows, columns=_TIDY_COLUMNS)
    if not references:
        return ours
    return pd.concat([ours, reference_table()], ignore_index=True) if len(ours) else reference_table()


def format_p(p: float) -> str:
    """A p-value for display after "p": '< 0.001', '= 0.042', or '= n/a'."""
    if p is None or math.isnan(p):
        return "= n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"
