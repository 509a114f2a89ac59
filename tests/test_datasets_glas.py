"""Tests for glandseg_core.datasets.glas (discovery and the GlasDataset adapter): the real GlaS release, a fake folder, and one-line errors naming the files."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from glandseg_core.datasets.glas import (
    data_root,
    find_items,
    item_by_name,
    load_item,
    read_grades,
    val_names,
)
from glandseg_core.errors import DatasetError
from tests.helpers import FAKE_TRAIN, VAL_NAMES, fake_grade, write_fake_glas


def one_line_error(fn: Callable[[], object]) -> str:
    with pytest.raises(DatasetError) as e:
        fn()
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------ real GlaS


def test_real_split_sizes(glas_dir: Path) -> None:
    train = find_items(glas_dir, ("train",))
    val = find_items(glas_dir, ("val",))
    assert len(train) == 70 and len(val) == 15
    assert len(find_items(glas_dir, ("testA",))) == 60
    assert len(find_items(glas_dir, ("testB",))) == 20
    assert len(find_items(glas_dir, ("all",))) == 165
    assert {it.name for it in train}.isdisjoint({it.name for it in val})
    assert {it.name for it in train} | {it.name for it in val} == {f"train_{i}" for i in range(1, 86)}
    assert [it.name for it in val] == sorted(val_names(), key=lambda n: int(n.split("_")[1]))
    assert {it.split for it in train} == {"train"} and {it.split for it in val} == {"val"}
    # Natural order: train_2 before train_10.
    names = [it.name for it in train]
    assert names.index("train_2") < names.index("train_10")


def test_real_grades_from_cr_only_grade_csv(glas_dir: Path) -> None:
    raw = (glas_dir / "Grade.csv").read_bytes()
    assert b"\r" in raw and b"\n" not in raw  # the release's old-Mac line endings
    grades = read_grades(glas_dir)
    assert len(grades) == 165
    items = find_items(glas_dir, ("train", "val"))
    assert Counter(it.grade for it in items) == {"benign": 37, "malignant": 48}
    # The validation split is stratified by grade (7 benign + 8 malignant).
    assert Counter(it.grade for it in items if it.split == "val") == {"benign": 7, "malignant": 8}
    assert Counter(it.grade for it in find_items(glas_dir, ("testA",))) == {
        "benign": 33,
        "malignant": 27,
    }
    assert Counter(it.grade for it in find_items(glas_dir, ("testB",))) == {"benign": 4, "malignant": 16}


def test_real_label_maps_keep_their_ids(glas_dir: Path) -> None:
    item = item_by_name(glas_dir, "train_20")
    assert item.split == "train"
    image, labels = load_item(item)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
    raw = np.asarray(Image.open(item.anno_path))
    np.testing.assert_array_equal(labels, raw)
    # Gland 14 of train_20 has two disconnected pieces: still one id, never relabelled by connectivity.
    assert ndi.label(labels == 14)[1] == 2


def test_real_val_item_and_smaller_image(glas_dir: Path) -> None:
    assert item_by_name(glas_dir, "train_5").split == "val"
    sizes = set()
    for item in find_items(glas_dir, ("testB",))[:3] + find_items(glas_dir, ("testA",))[:3]:
        image, labels = load_item(item)
        assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
        assert labels.max() > 0
        sizes.add(image.shape)
    assert (522, 775, 3) in sizes


# ------------------------------------------------------------------------------------------ fake GlaS


def test_fake_folder_discovery(fake_glas_dir: Path) -> None:
    train = find_items(fake_glas_dir, ["train"])
    assert [it.name for it in train] == list(FAKE_TRAIN)
    val = find_items(fake_glas_dir, ["val"])
    assert {it.name for it in val} == set(VAL_NAMES)
    for it in train + val:
        assert it.grade == fake_grade(it.name)
        assert it.image_path.suffix == ".bmp" and it.anno_path is not None
    image, labels = load_item(train[0])
    assert image.shape == (64, 96, 3) and labels.shape == (64, 96) and labels.dtype == np.int32


def test_grade_csv_absent_gives_unknown(fake_glas_dir: Path) -> None:
    (fake_glas_dir / "Grade.csv").unlink()
    assert {it.grade for it in find_items(fake_glas_dir, ["testA", "testB"])} == {"unknown"}


def test_scoring_test_a_needs_no_train_files(fake_glas_factory: Callable[..., Path]) -> None:
    root = fake_glas_factory(names=["testA_1", "testA_2", "testA_10"])
    items = find_items(root, ["testA"])
    assert [it.name for it in items] == ["testA_1", "testA_2", "testA_10"]
    assert item_by_name(root, "testA_2").name == "testA_2"
    # Asking for a split that is absent names it.
    assert "testB" in one_line_error(lambda: find_items(root, ["testB"]))


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".PNG"])
def test_png_and_tiff_variants(fake_glas_factory: Callable[..., Path], ext: str) -> None:
    root = fake_glas_factory(ext=ext)
    items = find_items(root, ["train", "val", "testA", "testB"])
    assert len(items) == len(FAKE_TRAIN) + len(VAL_NAMES) + 2
    image, labels = load_item(items[0])
    assert image.shape == (64, 96, 3) and labels.dtype == np.int32 and labels.max() >= 1
    ref_image, ref_labels = load_item(find_items(fake_glas_factory("bmp"), ["train"])[0])
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(image, ref_image)


# ---------------------------------------------------------------------------------------------- errors


def test_missing_folder(tmp_path: Path) -> None:
    msg = one_line_error(lambda: find_items(tmp_path / "nowhere", ["testA"]))
    assert "nowhere" in msg


def test_glandseg_data_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLANDSEG_DATA", raising=False)
    msg = one_line_error(lambda: find_items(None, ["testA"]))
    assert "GLANDSEG_DATA" in msg and "--data" in msg


def test_glandseg_data_is_used(monkeypatch: pytest.MonkeyPatch, fake_glas_dir: Path) -> None:
    monkeypatch.setenv("GLANDSEG_DATA", str(fake_glas_dir))
    assert data_root() == fake_glas_dir
    assert [it.name for it in find_items(None, ["testB"])] == ["testB_1"]


def test_unknown_split(fake_glas_dir: Path) -> None:
    msg = one_line_error(lambda: find_items(fake_glas_dir, ["test"]))
    assert "'test'" in msg and "testA" in msg


def test_missing_annotation(fake_glas_dir: Path) -> None:
    (fake_glas_dir / "train_3_anno.bmp").unlink()
    msg = one_line_error(lambda: find_items(fake_glas_dir, ["train"]))
    assert "train_3.bmp" in msg and "train_3_anno" in msg
    # Other splits are unaffected.
    assert len(find_items(fake_glas_dir, ["testA"])) == 1


def test_orphan_annotation(fake_glas_dir: Path) -> None:
    (fake_glas_dir / "testA_1.bmp").unlink()
    (fake_glas_dir / "testB_1.bmp").unlink()
    msg = one_line_error(lambda: find_items(fake_glas_dir, ["testA", "testB"]))
    assert "testA_1" in msg and "testB_1" in msg and "without image" in msg


def test_missing_validation_image_is_named(fake_glas_dir: Path) -> None:
    for suffix in ("", "_anno"):
        (fake_glas_dir / f"train_12{suffix}.bmp").unlink()
    msg = one_line_error(lambda: find_items(fake_glas_dir, ["val"]))
    assert "train_12" in msg


def test_annotation_of_another_size(fake_glas_dir: Path) -> None:
    Image.fromarray(np.zeros((60, 96), np.uint8)).save(fake_glas_dir / "train_2_anno.bmp")
    item = item_by_name(fake_glas_dir, "train_2")
    msg = one_line_error(lambda: load_item(item))
    assert "train_2_anno.bmp" in msg and "96×60" in msg and "96×64" in msg


def test_corrupt_image(fake_glas_dir: Path) -> None:
    path = fake_glas_dir / "testA_1.bmp"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    item = item_by_name(fake_glas_dir, "testA_1")
    msg = one_line_error(lambda: load_item(item))
    assert "testA_1.bmp" in msg


def test_not_an_image(fake_glas_dir: Path) -> None:
    (fake_glas_dir / "testB_1_anno.bmp").write_text("this is not a bitmap\n")
    msg = one_line_error(lambda: load_item(item_by_name(fake_glas_dir, "testB_1")))
    assert "testB_1_anno.bmp" in msg


def test_item_by_name_errors(fake_glas_dir: Path) -> None:
    assert "not a GlaS image name" in one_line_error(lambda: item_by_name(fake_glas_dir, "slide_3"))
    assert "testA_7" in one_line_error(lambda: item_by_name(fake_glas_dir, "testA_7"))


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


def test_val_names_are_the_committed_split() -> None:
    assert val_names() == VAL_NAMES
    assert len(val_names()) == 15 and len(set(val_names())) == 15


def test_unrelated_files_are_ignored(fake_glas_dir: Path) -> None:
    (fake_glas_dir / "README.md").write_text("hello")
    (fake_glas_dir / "notes.png").write_bytes(b"not really")
    shutil.copy(fake_glas_dir / "testA_1.bmp", fake_glas_dir / "thumbnail.bmp")
    assert [it.name for it in find_items(fake_glas_dir, ["testA"])] == ["testA_1"]


def test_two_files_with_one_stem_are_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #23 item 6: testB_1_anno.bmp and testB_1_anno.png both there; one was picked by directory order
    and pooled Test B F1 moved from 0.606 to 0.593."""
    from glandseg_core.cli import main

    root = write_fake_glas(tmp_path / "glas", names=("testA_1", "testB_1", "testB_2"))
    Image.open(root / "testB_1_anno.bmp").save(root / "testB_1_anno.png")
    Image.open(root / "testB_2.bmp").save(root / "testB_2.png")
    with pytest.raises(DatasetError) as info:
        find_items(root, ["testB"])
    msg = str(info.value)
    assert "testB_1_anno.bmp and testB_1_anno.png" in msg and "testB_2.bmp and testB_2.png" in msg
    assert "\n" not in msg
    assert [i.name for i in find_items(root, ["testA"])] == ["testA_1"]  # other splits still work
    preds = tmp_path / "preds"
    preds.mkdir()
    rc = main(["evaluate", "--predictions", str(preds), "--data", str(root), "--split", "testB",
               "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "testB_1_anno.bmp and testB_1_anno.png" in err[0], err
