"""Keep or drop a variant on ``val`` with a confidence interval, not a point estimate.

``val`` holds 15 images (about 150 glands): pooled F1 has a bootstrap SD near 0.02 there, so a difference of
0.01 between two settings is within noise. :func:`pooled_f1_difference` resamples the images (the pairs as
units: both variants are scored on the same resampled images) and gives the percentile 95% interval of the
difference in pooled F1 (``2·TP / (2·TP + FP + FN)`` over the resampled images' counts). The rule in
docs/EXPERIMENTS.md: a variant is kept when the interval lies above zero; when it straddles zero, ``val``
cannot tell the two apart and the literature or simplicity decides (said so in the row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COUNT_COLUMNS = ("tp", "fp", "fn")


@dataclass(frozen=True)
class PooledDifference:
    """Pooled F1 of variants a and b on the same images, and the bootstrap interval of ``f1_b - f1_a``.

    Attributes:
        n: images both tables hold. f1_a, f1_b, diff: on all of them.
        ci_low, ci_high: percentile 95% interval of the difference over ``n_boot`` resamples.
        share_b_better: the share of resamples in which b's pooled F1 is higher.
    """

    n: int
    f1_a: float
    f1_b: float
    diff: float
    ci_low: float
    ci_high: float
    share_b_better: float

    @property
    def verdict(self) -> str:
        """``"b better"``, ``"a better"`` or ``"indistinguishable"`` (the interval straddles zero)."""
        if self.ci_low > 0:
            return "b better"
        if self.ci_high < 0:
            return "a better"
        return "indistinguishable"


def _pooled_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Pooled F1 from summed counts; no object on either side counts as F1 = 1 (both maps empty)."""
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


def _counts(table: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in ("image", *COUNT_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(f"table {name} lacks the column(s) {', '.join(missing)}")
    if not table["image"].is_unique:
        raise ValueError(f"table {name} names an image twice")
    return table.set_index("image")[list(COUNT_COLUMNS)].astype(np.int64)


def pooled_f1_difference(
    a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 10000, seed: int = 0, chunk: int = 2000
) -> PooledDifference:
    """Paired bootstrap of the pooled-F1 difference b − a.

    Args:
        a, b: per-image tables (``per_image.csv`` of ``glandseg evaluate``) with columns ``image``, ``tp``,
            ``fp``, ``fn``; they are paired on ``image``.
        n_boot: resamples (>= 1). seed: the generator's seed (results are reproducible).
        chunk: resamples drawn at once (bounds memory).

    Raises:
        ValueError: a column is missing, an image appears twice, no image is in both tables, or n_boot < 1.
    """
    if n_boot < 1 or chunk < 1:
        raise ValueError(f"n_boot and chunk must be >= 1, got {n_boot} and {chunk}")
    ca, cb = _counts(a, "a"), _counts(b, "b")
    common = ca.index.intersection(cb.index).sort_values()
    if common.empty:
        raise ValueError("the two tables share no image")
    xa, xb = ca.loc[common].to_numpy(), cb.loc[common].to_numpy()
    n = len(common)
    f1_a, f1_b = (float(_pooled_f1(*x.sum(axis=0))) for x in (xa, xb))
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        sa, sb = xa[idx].sum(axis=1), xb[idx].sum(axis=1)  # (resamples, 3)
        diffs.append(_pooled_f1(*sb.T) - _pooled_f1(*sa.T))
    d = np.concatenate(diffs)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return PooledDifference(n, f1_a, f1_b, f1_b - f1_a, float(lo), float(hi), float(np.mean(d > 0)))
