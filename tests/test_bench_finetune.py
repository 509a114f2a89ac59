"""A CPU dry run of benchmarks/bench_finetune.py (one step, one image per part) so the script keeps working."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from skimage.color import hed2rgb

from benchmarks import bench_finetune as bench
from benchmarks.stain_shift import NEW_LAB, StainShift, apply_shift

ROOT = Path(__file__).resolve().parents[1]
GLAS = Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))


def test_the_stain_shift_is_deterministic_and_changes_the_stains() -> None:
    rng = np.random.default_rng(0)
    hed = rng.uniform(0, 0.05, (16, 16, 3)) * [1, 1, 0]  # haematoxylin and eosin, no DAB
    image = np.rint(hed2rgb(hed) * 255).astype(np.uint8)
    out = apply_shift(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out, apply_shift(image, NEW_LAB))
    assert np.abs(out.astype(int) - image).mean() > 5
    assert np.array_equal(apply_shift(image, StainShift()), image)  # identity
    weaker_h = apply_shift(image, StainShift(h_scale=0.5))
    assert weaker_h.mean() > image.mean()  # less stain, lighter
    with pytest.raises(ValueError, match="uint8"):
        apply_shift(image.astype(np.float32))


def test_the_split_is_the_15_val_images_once_each_and_no_test_image() -> None:
    names = [n for part in bench.SPLIT.values() for n in part]
    val = (ROOT / "glandseg_core/datasets/glas/val_split.txt").read_text().split()
    assert sorted(names) == sorted(n for n in val if n.startswith("train_"))
    assert [len(bench.SPLIT[p]) for p in ("train", "val", "held_out")] == [7, 3, 5]


@pytest.mark.slow
@pytest.mark.skipif(
    not (GLAS / "Grade.csv").is_file() or not (ROOT / "trained_models/unet/weights.pt").is_file(),
    reason="needs GlaS and the shipped U-Net",
)
def test_dry_run_writes_before_and_after(tmp_path: Path) -> None:
    out = tmp_path / "results.txt"
    argv = [
        "--limit",
        "1",
        "--epochs",
        "1",
        "--steps",
        "1",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "w"),
    ]
    (tmp_path / "w/unet/run").mkdir(parents=True)  # a former run's folder is replaced, not an error
    assert bench.main([*argv, "--picture", str(tmp_path / "p.jpg")]) == 0
    text = out.read_text()
    assert "new stain (before)" in text and "new stain (after)" in text and "paired f1" in text
    assert "hardware:" in text and "re-tuned on the val part" in text
    assert (tmp_path / "w/unet/model/weights.pt").is_file() and (
        tmp_path / "p.jpg"
    ).stat().st_size < 300_000
