"""Each shipped model folder's committed predictions re-score to its committed metrics.json and per_image.csv.

No inference: the label maps in ``trained_models/<name>/predictions/`` are scored against the GlaS ground truth
with the official metrics, so a change in the metrics, the data loading or a hand-edited figure shows up here.
Needs the real GlaS release (``$GLANDSEG_DATA``); skipped without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from glandseg_core.evaluation import HISTORY_FIGURES, evaluate, read_test_history
from tests.helpers import REPO

FOLDERS = sorted(p.parent.name for p in (REPO / "trained_models").glob("*/metrics.json"))


def test_every_shipped_folder_has_its_predictions_and_history() -> None:
    assert {"unet", "maskrcnn", "poster-maskrcnn"} <= set(FOLDERS)
    for name in FOLDERS:
        folder = REPO / "trained_models" / name
        assert len(list((folder / "predictions").glob("*_labels.png"))) == 80, name
        history = read_test_history(folder)
        assert {r["split"] for r in history} == {"testA", "testB"}, (
            name
        )  # every test scoring is recorded
        latest = {
            r["split"]: r["figures"] for r in history if not r.get("tta") and len(r["figures"]) > 1
        }
        metrics = json.loads((folder / "metrics.json").read_text())
        for split, figures in latest.items():  # the last full record is the shipped figures
            assert figures == {k: metrics[split][k] for k in HISTORY_FIGURES}, (name, split)


@pytest.mark.slow
@pytest.mark.parametrize("name", FOLDERS)
def test_committed_predictions_rescore_to_the_committed_figures(
    name: str, glas_dir: Path, tmp_path: Path
) -> None:
    folder = REPO / "trained_models" / name
    _, summary = evaluate(glas_dir, ["testA", "testB"], tmp_path, predictions=folder / "predictions")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(summary) == set(metrics) == {"testA", "testB", "all"}
    for split in metrics:
        for key, value in metrics[split].items():
            assert summary[split][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (split, key)
    shipped = pd.read_csv(folder / "per_image.csv").drop(columns="seconds")
    again = pd.read_csv(tmp_path / "per_image.csv").drop(columns="seconds")
    assert list(again["image"]) == list(shipped["image"])
    pd.testing.assert_frame_equal(again, shipped, check_exact=False, rtol=1e-5)
