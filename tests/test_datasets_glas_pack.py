"""Tests for glandseg_core.datasets.glas.pack: a compact GlaS copy that every command reads like the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.cli import main
from glandseg_core.datasets.glas import find_items, load_item
from glandseg_core.datasets.glas.pack import pack_glas


def _pairs(root: Path, splits: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {it.name: load_item(it) for it in find_items(root, splits)}


def test_lossless_splits_are_pixel_exact_and_jpeg_splits_close(
    fake_glas_dir: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "pack"
    manifest = pack_glas(fake_glas_dir, dst, ("train", "val"), lossless=("val",), quality=95)
    assert manifest["splits"]["val"]["images"] == 15 and manifest["splits"]["train"]["images"] == 4
    assert manifest["splits"]["val"]["encoding"] == "webp lossless"
    assert manifest["splits"]["train"]["encoding"] == "jpg q95 4:4:4"
    original, packed = _pairs(fake_glas_dir, ("train", "val")), _pairs(dst, ("train", "val"))
    assert set(original) == set(packed)
    for name, (image, labels) in original.items():
        p_image, p_labels = packed[name]
        np.testing.assert_array_equal(p_labels, labels)  # annotations always exact
        diff = np.abs(p_image.astype(int) - image.astype(int))
        if name in {it.name for it in find_items(fake_glas_dir, ("val",))}:
            assert diff.max() == 0, name
        else:
            assert diff.mean() < 4, name
    assert (dst / "Grade.csv").read_bytes() == (fake_glas_dir / "Grade.csv").read_bytes()
    assert [it.grade for it in find_items(dst, ("train",))] == [
        it.grade for it in find_items(fake_glas_dir, ("train",))
    ]


def test_packing_more_splits_adds_to_the_manifest_and_replaces_other_encodings(
    fake_glas_dir: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "pack"
    pack_glas(fake_glas_dir, dst, ("train", "val"), lossless=("val",))
    pack_glas(fake_glas_dir, dst, ("testA", "testB"), lossless=(), quality=90)
    manifest = json.loads((dst / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "val", "testA", "testB"}
    assert manifest["splits"]["testA"]["encoding"] == "jpg q90 4:4:4"
    pack_glas(fake_glas_dir, dst, ("train",), lossless=("train",))  # train again, now lossless
    assert not list(dst.glob("train_1.jpg")) and (dst / "train_1.webp").is_file()
    assert len(find_items(dst, ("train", "val", "testA", "testB"))) == 21


def test_bad_arguments_fail_with_one_line(
    fake_glas_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="quality"):
        pack_glas(fake_glas_dir, tmp_path / "a", quality=20)
    with pytest.raises(ValueError, match="unknown split"):
        pack_glas(fake_glas_dir, tmp_path / "a", ("train",), lossless=("all",))
    (fake_glas_dir / "train_2_anno.bmp").unlink()
    assert main(["pack", "--data", str(fake_glas_dir), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "train_2" in err and len(err.splitlines()) == 1


def test_cli_prints_what_it_wrote(
    fake_glas_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["pack", "--data", str(fake_glas_dir), "--out", str(tmp_path / "p"), "--split", "testA"]
    assert main([*args, "--lossless"]) == 0
    out = capsys.readouterr().out
    assert "testA: 1 images, jpg q95 4:4:4" in out
