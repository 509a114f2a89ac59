"""The keep/drop tools of docs/EXPERIMENTS.md: pooled-F1 difference with a paired bootstrap interval, and the
classification of missed glands (merged / missed / partial)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glandseg_core.evaluation.decide import pooled_f1_difference
from glandseg_core.evaluation.failures import Failures, classify_failures, total_failures


def _table(rows: list[tuple[str, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "tp", "fp", "fn"])


def test_identical_variants_differ_by_nothing() -> None:
    t = _table([(f"im{i}", 8 + i % 3, i % 2, 1) for i in range(15)])
    d = pooled_f1_difference(t, t, n_boot=500)
    assert d.diff == 0 and d.ci_low == 0 and d.ci_high == 0
    assert d.verdict == "indistinguishable" and d.share_b_better == 0


def test_pooled_f1_is_computed_from_summed_counts() -> None:
    a = _table([("x", 3, 1, 1), ("y", 1, 0, 3)])  # pooled: tp 4, fp 1, fn 4 -> 8 / 13
    b = _table([("y", 4, 0, 0), ("x", 4, 0, 0)])  # order differs: pairs by image name
    d = pooled_f1_difference(a, b, n_boot=200)
    assert d.f1_a == pytest.approx(8 / 13) and d.f1_b == 1.0
    assert d.diff == pytest.approx(5 / 13) and d.n == 2


def test_a_consistent_gain_is_called_and_a_noisy_one_is_not() -> None:
    rng = np.random.default_rng(1)
    base = [(f"im{i}", int(rng.integers(5, 15)), 1, 2) for i in range(15)]
    better = [(n, tp + 2, fp, max(fn - 2, 0)) for n, tp, fp, fn in base]
    d = pooled_f1_difference(_table(base), _table(better), n_boot=2000)
    assert d.ci_low > 0 and d.verdict == "b better"
    assert pooled_f1_difference(_table(better), _table(base), n_boot=2000).verdict == "a better"
    # one image of fifteen gains a gland, another loses one: val cannot tell
    mixed = list(base)
    mixed[0] = (base[0][0], base[0][1] + 1, base[0][2], base[0][3] - 1)
    mixed[1] = (base[1][0], base[1][1] - 1, base[1][2], base[1][3] + 1)
    assert pooled_f1_difference(_table(base), _table(mixed), n_boot=2000).verdict == "indistinguishable"


def test_the_interval_is_reproducible_and_bad_tables_are_named() -> None:
    a = _table([(f"im{i}", i + 1, 1, i % 3) for i in range(10)])
    b = _table([(f"im{i}", i + 2, i % 2, 1) for i in range(10)])
    assert pooled_f1_difference(a, b, seed=3) == pooled_f1_difference(a, b, seed=3, chunk=700)
    with pytest.raises(ValueError, match="column"):
        pooled_f1_difference(a.drop(columns="fn"), b)
    with pytest.raises(ValueError, match="share no image"):
        pooled_f1_difference(a, b.assign(image=[f"other{i}" for i in range(10)]))
    with pytest.raises(ValueError, match="twice"):
        pooled_f1_difference(pd.concat([a, a]), b)


def _squares() -> np.ndarray:
    gt = np.zeros((60, 100), np.int32)
    gt[10:30, 10:30] = 1
    gt[10:30, 31:51] = 2  # touches 1 but for a one-pixel gap
    gt[40:50, 70:80] = 3  # away from the others
    return gt


def test_one_prediction_over_two_glands_is_a_merge() -> None:
    gt = _squares()
    pred = np.zeros_like(gt)
    pred[10:30, 10:52] = 1  # glands 1 and 2 in one object
    pred[40:50, 70:80] = 2
    f = classify_failures(pred, gt)
    assert f == Failures(n_gt=3, missed_total=1, merged=1)


def test_unseen_glands_are_missed_and_their_place_counted() -> None:
    gt = _squares()
    gt[0:8, 90:100] = 4  # at the border, small
    pred = np.zeros_like(gt)
    pred[10:30, 10:30] = 1
    pred[10:30, 31:51] = 2
    pred[0:1, 90:92] = 3  # 2 of 80 pixels of gland 4: < 20%, so missed, not partial
    f = classify_failures(pred, gt)
    assert (f.missed, f.missed_at_border, f.missed_small, f.merged, f.partial) == (2, 1, 2, 0, 0)
    assert f.missed_total == 2 and f.n_gt == 4


def test_a_half_covered_gland_is_partial_and_totals_add_up() -> None:
    gt = _squares()
    pred = np.zeros_like(gt)
    pred[10:30, 10:30] = 1
    pred[10:30, 31:51] = 2
    pred[40:45, 70:80] = 3  # exactly 50% of gland 3: not a TP, but seen and not merged
    f = classify_failures(pred, gt)
    assert (f.partial, f.missed, f.merged, f.missed_total) == (1, 0, 0, 1)
    both = total_failures([(pred, gt), (pred, gt)])
    assert both.partial == 2 and both.n_gt == 6
