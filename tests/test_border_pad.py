"""`python -m experiments.border_pad`: margins at inference (docs/EXPERIMENTS.md, row 24)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import experiments.border_pad as bp
import experiments.decide as decide
from glandseg_core.api import load_segmenter
from glandseg_core.segmenters.unet import number_kept


def test_an_object_mostly_in_the_margin_is_a_mirror_and_is_dropped() -> None:
    full = np.zeros((10, 10), np.int32)
    full[0:4, 3:6] = 1  # 3 of its 4 rows in the margin (rows 0..2)
    full[2:6, 6:9] = 2  # 1 of 4 rows in the margin
    crop = full[3:, :]
    out = bp.mostly_inside(full, crop, 0.5)
    assert not (out == 1).any() and (out == 2).sum() == (crop == 2).sum()
    assert np.array_equal(bp.mostly_inside(full, crop, 0.0), crop)


def test_margins_mirror_the_image_or_paint_it_white() -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    mirrored = bp.padded(image, 2, "reflect")
    assert mirrored.shape == (8, 9, 3)
    assert np.array_equal(mirrored[2:-2, 2:-2], image)
    assert np.array_equal(mirrored[1, 2:-2], image[1]) and np.array_equal(mirrored[0, 2:-2], image[2])
    white = bp.padded(image, 2, "constant")
    assert (
        np.array_equal(white[2:-2, 2:-2], image)
        and (white[:2] == 255).all()
        and (white[:, -2:] == 255).all()
    )
    assert bp.padded(image, 0, "reflect") is image


@pytest.mark.slow
def test_margins_are_scored_into_folders_that_decide_compares(
    untrained_unet_run: Path, shared_fake_glas: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, data = tmp_path / "pad", str(shared_fake_glas)
    argv = [str(untrained_unet_run), str(out), "--margins", "0", "8", "--data", data]
    assert bp.main(argv) == 0
    report = json.loads((out / "search.json").read_text())
    assert set(report["margins"]) == {"0", "8"} and report["mode"] == "reflect"
    segmenter = load_segmenter(untrained_unet_run, engine="torch")
    table = pd.read_csv(out / "margin-0" / "per_image.csv")
    assert set(table["split"]) == {"val"} and len(table) > 0
    # margin 0 is the product's own label map, objects under min_area dropped as the product drops them
    from glandseg_core.datasets import as_dataset
    from glandseg_core.imaging.io import read_label_map

    item = as_dataset(data).items(["val"])[0]
    image, _ = item.load_annotated()
    saved = read_label_map(out / "margin-0" / "predictions" / f"{item.name}_labels.png")
    assert np.array_equal(saved, number_kept(segmenter(image), segmenter.post.min_area))
    capsys.readouterr()
    assert decide.main([str(out / "margin-0"), str(out / "margin-8"), "--data", data]) == 0
    assert "95% CI" in capsys.readouterr().out
