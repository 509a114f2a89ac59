"""`python -m experiments.marker_search`: finer markers for the separation head (docs/EXPERIMENTS.md, row 23),
and `experiments.decide` comparing the folders it scores."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import experiments.decide as decide
import experiments.marker_search as search
from glandseg_core.imaging.io import read_label_map
from glandseg_core.segmenters.unet import probs_to_labels
from glandseg_core.thresholds import UNetPost
from tests.helpers import tiny_unet_config


def _two_discs_on_a_neck() -> np.ndarray:
    """float32[3, H, W]: two touching discs whose distance stays high across the neck, with contour there."""
    h, w = 60, 100
    yy, xx = np.mgrid[:h, :w]
    left = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2
    right = (yy - 30) ** 2 + (xx - 66) ** 2 < 20**2
    gland = left | right
    prob = np.zeros((3, h, w), np.float32)
    prob[0][gland] = 0.9
    prob[2][gland] = 0.5  # a flat distance: one core over both discs
    prob[1][(np.abs(xx - 48) < 3) & gland] = 0.9  # the contour head sees the gap
    return prob


def test_the_contour_cuts_a_core_the_distance_alone_joins() -> None:
    prob = _two_discs_on_a_neck()
    post = UNetPost(fg_thresh=0.5, contour_thresh=0.5, min_marker_area=20, min_area=100, marker_dist=0.1)
    assert probs_to_labels(prob, post).max() == 1
    labels = search.dist_contour_labels(prob, post)
    assert labels.max() == 2
    assert (labels > 0).sum() == (prob[0] > 0.5).sum()  # the watershed still fills the whole mask


def test_the_grids_reach_below_row_19s_lowest_marker_threshold() -> None:
    names = {family: n for family, (_, n) in search.FAMILIES.items()}
    assert len(list(search.grid(names["dist"]))) == 60
    assert len(list(search.grid(names["dist+contour"]))) == 180
    assert min(search.MARKER_DIST) < 0.1 <= max(search.MARKER_DIST)


@pytest.fixture
def separation_run(tmp_path: Path) -> Path:
    from glandseg_core.config import save_config
    from glandseg_core.models import build_model

    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_unet_config(unet_separation=True)
    torch.manual_seed(0)
    save_config(cfg, run / "config.json")
    state = {"model": build_model(cfg).state_dict(), "config": asdict(cfg), "epoch": 0}
    torch.save(state, run / "best.pt")
    return run


@pytest.mark.slow
def test_search_writes_scored_folders_that_decide_compares(
    separation_run: Path, shared_fake_glas: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "search"
    data = str(shared_fake_glas)
    assert search.main([str(separation_run), str(out), "--data", data]) == 0
    report = json.loads((out / "search.json").read_text())
    sizes = {f: len(r["points"]) for f, r in report["families"].items()}
    assert sizes == {"dist": 60, "dist+contour": 180}
    for family, result in report["families"].items():
        folder = out / family
        table = pd.read_csv(folder / "per_image.csv")
        assert set(table["split"]) == {"val"}
        best = max(result["points"], key=lambda r: r["objective"])
        assert result["best"]["objective"] == best["objective"]
        post = json.loads((folder / "post.json").read_text())
        assert {k: post[k] for k in search.FAMILIES[family][1]} == {
            k: result["best"][k] for k in search.FAMILIES[family][1]
        }
        for name, n_pred in zip(table["image"], table["n_pred"], strict=True):
            labels = read_label_map(folder / "predictions" / f"{name}_labels.png")
            assert len(np.unique(labels[labels > 0])) == n_pred
    capsys.readouterr()
    assert decide.main([str(out / "dist"), str(out / "dist+contour"), "--data", data]) == 0
    printed = capsys.readouterr().out
    assert f"val, {len(table)} images" in printed and "95% CI" in printed and "merged" in printed


def test_a_scored_folder_refuses_tta_and_another_split(tmp_path: Path) -> None:
    folder = tmp_path / "scored"
    (folder / "predictions").mkdir(parents=True)
    pd.DataFrame({"image": ["a"], "split": ["val"], "tp": [1], "fp": [0], "fn": [0]}).to_csv(
        folder / "per_image.csv", index=False
    )
    assert decide.is_scored_folder(folder) and not decide.is_scored_folder(tmp_path)
    assert not decide.is_scored_folder(Path(decide.__file__).parents[1] / "trained_models" / "unet")
    assert decide._scored(str(folder), False, "val", None, False) == folder
    with pytest.raises(SystemExit, match="--tta"):
        decide._scored(str(folder), True, "val", None, False)
    with pytest.raises(SystemExit, match="holds val, not train"):
        decide._scored(str(folder), False, "train", None, False)
