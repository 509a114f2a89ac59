"""Tests for glandseg_dashboard.annotation_sets: the Annotate page's named sets in the plain data-set layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glandseg_core.datasets import as_dataset
from glandseg_core.errors import DatasetError
from glandseg_core.imaging.io import read_image, read_label_map
from glandseg_dashboard import annotation_sets as sets


def image_and_labels(
    h: int = 40, w: int = 50, ids: tuple[int, ...] = (7, 3)
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), np.int32)
    for k, gid in enumerate(ids):
        labels[5 + 10 * k : 12 + 10 * k, 5:20] = gid
    return image, labels


def test_saved_set_is_a_plain_data_set_that_as_dataset_reads(tmp_path: Path) -> None:
    image, labels = image_and_labels()
    saved = sets.save_to_set(tmp_path, "my-glands", "scan 1", image, labels, 0.5)
    assert saved.folder == tmp_path / "my-glands" and saved.n_images == 1 and not saved.replaced
    assert (saved.folder / "images" / "scan_1.png").is_file()
    np.testing.assert_array_equal(read_image(saved.folder / "images" / "scan_1.png"), image)  # lossless
    other, other_labels = image_and_labels(30, 30, (1,))
    sets.save_to_set(tmp_path, "my-glands", "scan2", other, other_labels, 0.5)
    data = as_dataset(saved.folder)
    items = data.items(None)
    assert sorted(it.name for it in items) == ["scan2", "scan_1"]
    item = next(it for it in items if it.name == "scan_1")
    assert item.mpp == pytest.approx(0.5)
    assert not data.problems()


def test_label_maps_are_renumbered_1_to_n_and_16_bit_only_above_255(tmp_path: Path) -> None:
    image, labels = image_and_labels(ids=(40, 9))
    saved = sets.save_to_set(tmp_path, "s", "a", image, labels, None)
    path = saved.folder / "labels" / "a.png"
    back = read_label_map(path)
    assert sorted(np.unique(back)) == [0, 1, 2]
    assert back[6, 6] == 2 and back[16, 6] == 1  # the old order of ids: 9 -> 1, 40 -> 2
    assert Image.open(path).mode == "L"
    many = np.arange(20 * 20, dtype=np.int32).reshape(20, 20) + 1000  # 400 glands, one pixel each
    saved = sets.save_to_set(tmp_path, "s", "many", np.zeros((20, 20, 3), np.uint8), many, None)
    big = read_label_map(saved.folder / "labels" / "many.png")
    assert big.max() == 400 and len(np.unique(big)) == 400
    assert Image.open(saved.folder / "labels" / "many.png").mode.startswith("I")


def test_dataset_json_is_merged_never_rewritten(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "dataset.json").write_text(
        json.dumps({"splits": {"test": ["b"]}, "images": {"b": {"group": "patient-1"}}})
    )
    image, labels = image_and_labels()
    sets.save_to_set(tmp_path, "s", "a", image, labels, 0.62)
    sets.save_to_set(tmp_path, "s", "b", image, labels, 0.31)  # another pixel size: its own entry
    sets.save_to_set(tmp_path, "s", "c", image, labels, 0.62)
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["layout"] == "folder" and spec["mpp"] == pytest.approx(0.62)
    assert spec["splits"] == {"test": ["b"]}
    assert spec["images"] == {"b": {"group": "patient-1", "mpp": 0.31}}
    sets.save_to_set(tmp_path, "s", "b", image, labels, 0.62, overwrite=True)  # back at the set's size
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["images"] == {"b": {"group": "patient-1"}}
    items = {it.name: it for it in as_dataset(folder).items(None)}
    assert set(items) == {"a", "b", "c"} and items["b"].split == "test"


def test_saving_a_stem_again_needs_overwrite_and_touches_only_that_image(tmp_path: Path) -> None:
    image, labels = image_and_labels()
    sets.save_to_set(tmp_path, "s", "a", image, labels, 0.62)
    sets.save_to_set(tmp_path, "s", "b", image, labels, 0.62)
    b_before = (tmp_path / "s" / "labels" / "b.png").read_bytes()
    with pytest.raises(FileExistsError, match="already holds an annotation of a"):
        sets.save_to_set(tmp_path, "s", "a", image, labels[:, ::-1], 0.62)
    np.testing.assert_array_equal(read_label_map(tmp_path / "s" / "labels" / "a.png") > 0, labels > 0)
    saved = sets.save_to_set(tmp_path, "s", "a", image, labels[:, ::-1], 0.62, overwrite=True)
    assert saved.replaced and saved.n_images == 2
    np.testing.assert_array_equal(
        read_label_map(saved.folder / "labels" / "a.png") > 0, labels[:, ::-1] > 0
    )
    assert (tmp_path / "s" / "labels" / "b.png").read_bytes() == b_before


@pytest.mark.parametrize(
    "name", ["", "  ", "../up", "a/b", ".hidden", "x" * 65, "images", "naïve", "a b"]
)
def test_bad_set_names_are_one_clear_line(tmp_path: Path, name: str) -> None:
    image, labels = image_and_labels()
    with pytest.raises(ValueError) as info:
        sets.save_to_set(tmp_path, name, "a", image, labels, 0.62)
    assert "\n" not in str(info.value) and str(info.value).startswith("Annotation set")
    assert not any(tmp_path.rglob("*.png"))


def test_invalid_dataset_json_stops_the_save_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "dataset.json").write_text("{not json")
    image, labels = image_and_labels()
    with pytest.raises(DatasetError, match="dataset.json"):
        sets.save_to_set(tmp_path, "s", "a", image, labels, 0.62)
    assert not (tmp_path / "s" / "labels" / "a.png").exists()
    assert (tmp_path / "s" / "dataset.json").read_text() == "{not json"


def test_size_mismatch_is_refused(tmp_path: Path) -> None:
    image, labels = image_and_labels()
    with pytest.raises(ValueError, match="label map is 49×40 but the image is 50×40"):
        sets.save_to_set(tmp_path, "s", "a", image, labels[:, :49], 0.62)


def test_listing_sets_their_label_maps_and_the_old_flat_files(tmp_path: Path) -> None:
    image, labels = image_and_labels()
    sets.save_to_set(tmp_path, "one", "a", image, labels, 0.62)
    sets.save_to_set(tmp_path, "two", "a", image, labels, 0.62)
    sets.save_to_set(tmp_path, "two", "b", image, labels, 0.62)
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "old.png")  # an older dashboard's flat file
    (tmp_path / "not-a-set").mkdir()
    assert sets.list_sets(tmp_path) == ["one", "two"]
    assert sets.set_images(tmp_path / "two") == ["a", "b"]
    assert {p.parent.parent.name for p in sets.saved_label_maps(tmp_path, "a")} == {"one", "two"}
    assert sets.saved_label_maps(tmp_path, "zzz") == []
    assert sets.flat_annotations(tmp_path) == [tmp_path / "old.png"]
    assert sets.safe_stem("../weird name?.tif") == "weird_name" and sets.safe_stem("???") == "image"
