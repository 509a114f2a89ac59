"""glandseg_core.stats: paired comparison (hand-checked differences, scipy's Wilcoxon), result tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from glandseg_core import stats


def _series(values: list[float], names: list[str] | None = None) -> pd.Series:
    names = names or [f"testA_{i + 1}" for i in range(len(values))]
    return pd.Series(values, index=names, dtype=float)


# ------------------------------------------------------------------------------------ paired comparison


def test_known_differences_mean_median_and_ci() -> None:
    a = _series([0.5, 0.2, 0.9, 0.1, 0.4])
    b = a + np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # differences 1..5: mean 3, median 3
    res = stats.paired_comparison(a, b)
    assert res.n == 5
    assert res.mean_diff == pytest.approx(3.0)
    assert res.median_diff == pytest.approx(3.0)
    assert (
        1.0 <= res.ci_low < 3.0 < res.ci_high <= 5.0
    )  # the CI covers the mean, inside the data's range
    assert list(res.diffs.round(12)) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert res.note == ""


def test_ci_is_reproducible_and_roughly_normal_for_large_n() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.1, 0.2, 400)
    a = _series(list(rng.uniform(0, 1, 400)))
    res = stats.paired_comparison(a, a + d, n_boot=4000, seed=7)
    again = stats.paired_comparison(a, a + d, n_boot=4000, seed=7)
    assert (res.ci_low, res.ci_high) == (again.ci_low, again.ci_high)
    se = d.std(ddof=1) / math.sqrt(d.size)  # normal-theory half-width 1.96 se
    assert res.ci_low == pytest.approx(d.mean() - 1.96 * se, abs=0.3 * se)
    assert res.ci_high == pytest.approx(d.mean() + 1.96 * se, abs=0.3 * se)


def test_ci_is_scipys_paired_percentile_bootstrap() -> None:
    rng = np.random.default_rng(11)
    a = _series(list(rng.uniform(0, 1, 30)), [f"img{i:02d}" for i in range(30)])  # already in name order
    b = a + rng.normal(0.05, 0.1, 30)
    res = stats.paired_comparison(a, b, n_boot=3000, seed=5)
    ref = sps.bootstrap(
        (a.to_numpy(), b.to_numpy()),
        lambda x, y, axis: np.mean(y - x, axis=axis),
        paired=True,
        n_resamples=3000,
        batch=2000,  # paired_comparison's default chunk: the same draws
        method="percentile",
        rng=np.random.default_rng(5),
    ).confidence_interval
    assert (res.ci_low, res.ci_high) == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_wilcoxon_p_matches_scipy() -> None:
    a = _series([0.61, 0.72, 0.55, 0.80, 0.43, 0.66, 0.71, 0.50])
    d = np.array([0.10, -0.02, 0.15, 0.07, 0.30, -0.05, 0.12, 0.08])
    res = stats.paired_comparison(a, a + d)
    assert res.p_value == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-9)


def test_constant_positive_differences_exact_p_and_point_ci() -> None:
    a = _series([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    res = stats.paired_comparison(a, a + 0.5)
    assert res.mean_diff == pytest.approx(0.5)
    assert res.ci_low == pytest.approx(0.5) and res.ci_high == pytest.approx(0.5)
    assert res.p_value == pytest.approx(2 / 2**6)  # all six ranks positive: exact two-sided p = 2 / 64


def test_all_equal_gives_zero_difference_and_p_one() -> None:
    a = _series([0.3, 0.6, 0.9])
    res = stats.paired_comparison(a, a.copy())
    assert (res.n, res.mean_diff, res.median_diff, res.ci_low, res.ci_high, res.p_value) == (
        3,
        0,
        0,
        0,
        0,
        1.0,
    )
    assert "zero" in res.note


def test_too_few_images() -> None:
    one = stats.paired_comparison(_series([0.2]), _series([0.7]))
    assert one.n == 1 and one.mean_diff == pytest.approx(0.5)
    assert math.isnan(one.ci_low) and math.isnan(one.p_value) and one.note
    none = stats.paired_comparison(_series([0.2], ["testA_1"]), _series([0.7], ["testB_1"]))
    assert none.n == 0 and math.isnan(none.mean_diff) and "no images" in none.note


def test_aligns_on_common_finite_images() -> None:
    a = _series([0.1, 0.2, np.nan, 0.4], ["x", "y", "z", "w"])
    b = _series([0.9, 0.5, 0.3], ["y", "z", "x"])  # common finite: x (0.3 - 0.1), y (0.9 - 0.2)
    res = stats.paired_comparison(a, b)
    assert res.n == 2
    assert res.diffs.to_dict() == pytest.approx({"x": 0.2, "y": 0.7})


def test_rejects_duplicates_and_bad_n_boot() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        stats.paired_comparison(_series([0.1, 0.2], ["x", "x"]), _series([0.1], ["x"]))
    with pytest.raises(ValueError, match="n_boot"):
        stats.paired_comparison(_series([0.1]), _series([0.2]), n_boot=0)


# ----------------------------------------------------------------------------------------- tables


def _per_image() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image": ["testA_1", "testA_2", "testB_1", "testB_2"],
            "split": ["testA", "testA", "testB", "testB"],
            "grade": ["benign", "malignant", "benign", "malignant"],
            "tp": [3, 1, 2, 0],
            "fp": [1, 0, 2, 1],
            "fn": [0, 2, 1, 4],
            "f1": [6 / 7, 0.5, 4 / 7, 0.0],
            "object_dice": [0.8, 0.4, 0.6, 0.0],
            "object_hausdorff": [10.0, 50.0, 30.0, 200.0],
        }
    )


def _summary() -> dict:
    def entry(n: int, dice: float, haus: float) -> dict:
        return {"n_images": n, "pooled_object_dice": dice, "pooled_object_hausdorff": haus}

    return {"testA": entry(2, 0.7, 20.0), "testB": entry(2, 0.5, 90.0), "all": entry(4, 0.6, 50.0)}


def test_summary_table_whole_split_uses_metrics_json() -> None:
    t = stats.summary_table({"U-Net": _per_image()}, ("testA",), None, {"U-Net": _summary()}).iloc[0]
    assert (t.n_images, t.tp, t.fp, t.fn) == (2, 4, 1, 2)
    assert t.pooled_f1 == pytest.approx(8 / 11)  # 2*4 / (2*4 + 1 + 2)
    assert t.mean_f1 == pytest.approx((6 / 7 + 0.5) / 2)
    assert t.mean_object_hausdorff == pytest.approx(30.0)
    assert (t.pooled_object_dice, t.pooled_object_hausdorff) == (0.7, 20.0)
    both = stats.summary_table({"U-Net": _per_image()}, ("testA", "testB"), None, {"U-Net": _summary()})
    assert both.iloc[0].pooled_object_dice == 0.6 and both.iloc[0].pooled_f1 == pytest.approx(
        12 / 23
    )  # tp 6, fp 4, fn 7


def test_summary_table_grade_filter_has_no_pooled_dice() -> None:
    t = stats.summary_table(
        {"U-Net": _per_image()}, ("testA", "testB"), ["benign"], {"U-Net": _summary()}
    )
    row = t.iloc[0]
    assert (row.n_images, row.tp, row.fp, row.fn) == (2, 5, 3, 1)
    assert row.pooled_f1 == pytest.approx(10 / 14)
    assert math.isnan(row.pooled_object_dice) and "grade" in row.pooled_dice_hausdorff
    # Selecting every grade present is no filter at all.
    full = stats.summary_table(
        {"m": _per_image()}, ("testA",), ["benign", "malignant"], {"m": _summary()}
    )
    assert full.iloc[0].pooled_object_dice == 0.7


def test_summary_table_ignores_stale_or_missing_summary() -> None:
    stale = _summary()
    stale["testA"]["n_images"] = 60
    t = stats.summary_table({"m": _per_image()}, ("testA",), None, {"m": stale}).iloc[0]
    assert math.isnan(t.pooled_object_dice) and "metrics.json" in t.pooled_dice_hausdorff
    no_all = {k: v for k, v in _summary().items() if k != "all"}
    t = stats.summary_table({"m": _per_image()}, ("testA", "testB"), None, {"m": no_all}).iloc[0]
    assert math.isnan(t.pooled_object_hausdorff)
    t = stats.summary_table({"m": _per_image()}, ("testA",), None, None).iloc[0]
    assert math.isnan(t.pooled_object_hausdorff) and t.pooled_f1 == pytest.approx(8 / 11)


def test_results_table_has_ours_poster_and_published() -> None:
    t = stats.results_table(
        {"U-Net": _per_image(), "Mask R-CNN": _per_image()}, None, {"U-Net": _summary()}
    )
    ours = t[t["source"] == "ours"]
    assert len(ours) == 2 * 3 * 2  # models x split sets x aggregations
    poster = t[t["source"] == "poster"].set_index("method")
    assert poster.loc["U-Net (poster, 15 epochs)", "f1"] == 0.49
    assert poster.loc["Mask R-CNN (poster, 200 epochs)", "object_hausdorff"] == 153
    pub = t[(t["source"] == "published") & (t["method"] == "MILD-Net")].set_index("split")
    assert pub.loc["Test B", "object_hausdorff"] == 105.9 and pub.loc["Test A", "f1"] == 0.914
    assert (t[t["source"] != "ours"]["aggregation"].isin(["pooled", "per-image mean"])).all()


def test_format_p() -> None:
    assert stats.format_p(float("nan")) == "= n/a"
    assert stats.format_p(0.0001) == "< 0.001"
    assert stats.format_p(0.0423) == "= 0.042"
