"""Folder layouts as data sets (issue #20, items 1 and 6): plain folders, QuPath GeoJSON, CRAG, dataset.json.

The sets are built by ``scripts.example_datasets`` from synthetic glands (fast, always here) and, in the tests
marked with ``glas_dir``, from a few GlaS training images (no GlaS val or test image).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from glandseg_core.datasets import (
    FileDataset,
    GlasDataset,
    MixedDataset,
    as_dataset,
    detect_layout,
    eval_splits,
)
from glandseg_core.datasets.glas import val_names
from glandseg_core.errors import DatasetError
from glandseg_core.imaging.io import write_label_png, write_png
from glandseg_core.outputs.export import to_geojson
from glandseg_core.train.setup import split_items
from scripts.example_datasets import TRAIN_NAMES, TWICE, glas_pairs, write_sets, write_side
from tests.helpers import make_glands

NAMES = TRAIN_NAMES


def synthetic_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(n, *make_glands(48, 64, n=3, seed=i)) for i, n in enumerate(NAMES)]


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    info = {n: {"group": f"p{i // 2}", "grade": "benign"} for i, n in enumerate(NAMES)}
    return write_sets(tmp_path_factory.mktemp("sets"), synthetic_pairs(), info)


@pytest.mark.parametrize("layout", ["plain", "side", "qupath", "crag"])
def test_every_layout_reads_the_same_label_maps(sets: dict[str, Path], layout: str) -> None:
    expected = {n: (img, lab) for n, img, lab in synthetic_pairs()}
    ds = as_dataset(sets[layout])
    assert isinstance(ds, FileDataset) and ds.problems() == []
    assert detect_layout(sets[layout]) == {"plain": "folder", "side": "folder"}.get(layout, layout)
    items = ds.items()
    assert sorted(it.name for it in items) == sorted(NAMES)
    for it in items:
        image, labels = it.load()
        ref_image, ref_labels = expected[it.name]
        twice = it.name == TWICE and layout in ("plain", "qupath")
        if twice:
            ref_image, ref_labels = (a.repeat(2, 0).repeat(2, 1) for a in (ref_image, ref_labels))
        assert labels is not None and labels.dtype == np.int32
        assert np.array_equal(labels, ref_labels), (layout, it.name)
        assert np.array_equal(image, ref_image)
        assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # numbered 1..N
        assert it.mpp == pytest.approx(0.31 if twice else 0.62)
        assert it.group is not None and it.grade == "benign"


def test_splits_keep_a_group_together_and_crag_valid_is_test(sets: dict[str, Path]) -> None:
    for layout in ("plain", "qupath", "crag"):
        items = as_dataset(sets[layout]).items()
        by_group: dict[str, set[str]] = {}
        for it in items:
            by_group.setdefault(str(it.group), set()).add(it.split)
        assert all(len(s) == 1 or "test" in s for s in by_group.values()), (layout, by_group)
        assert {"train", "val"} <= {it.split for it in items}
    crag = as_dataset(sets["crag"])
    assert crag.splits == ("train", "val", "test")
    assert [it.name for it in crag.items(["test"])] == list(NAMES[-2:])
    train, val = split_items(sets["crag"])
    assert train and val and not {it.name for it in train} & {it.name for it in val}
    assert eval_splits(crag, None) == ["train", "val", "test"] and eval_splits(crag, ["test"]) == [
        "test"
    ]
    with pytest.raises(DatasetError, match="unknown split 'testA'"):
        eval_splits(crag, ["testA"])


def test_explicit_split_lists_and_seeded_fractions(tmp_path: Path) -> None:
    root = tmp_path / "set"
    pairs = [(f"im{i}", *make_glands(32, 32, n=2, seed=i)) for i in range(10)]
    write_side(root, pairs, {})
    spec = {"splits": {"test": ["im0", "im1"]}, "val_fraction": 0.25, "seed": 3,
            "images": {"im2": {"group": "a"}, "im3": {"group": "a"}, "im4": {"group": "a"}}}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(spec))
    ds = as_dataset(root)
    split = {it.name: it.split for it in ds.items()}
    assert [n for n, s in split.items() if s == "test"] == ["im0", "im1"]
    assert len({split[n] for n in ("im2", "im3", "im4")}) == 1
    assert 1 <= sum(s == "val" for s in split.values()) <= 4
    assert split == {it.name: it.split for it in as_dataset(root).items()}  # seeded: the same again


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"mpp": -1}, "mpp must be micrometres per pixel"),
        ({"val_fraction": 1.5}, "val_fraction must be a fraction"),
        ({"splits": {"val": ["a"], "test": ["a"]}}, "a is listed in both val and test"),
        ({"layout": "zip"}, "layout must be one of"),
        ({"groups": {}}, "unknown field 'groups'"),
        ({"images": {"a": {"patient": 1}}}, "images.a must be an object"),
    ],
)
def test_a_bad_dataset_json_is_one_line_naming_it(tmp_path: Path, spec: dict, message: str) -> None:
    image, labels = make_glands(32, 32)
    write_png(tmp_path / "a.png", image)
    write_label_png(tmp_path / "a_labels.png", labels)
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match=message) as e:
        as_dataset(tmp_path).items()
    assert "dataset.json" in str(e.value) and "\n" not in str(e.value)


def _bad_folder(root: Path) -> None:
    """images/ + labels/ with one good pair and one of each problem the issue names."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, (h, w) in {
        "good": (40, 48),
        "small": (40, 48),
        "nolabels": (40, 48),
        "big": (40, 48),
    }.items():
        image, labels = make_glands(h, w, n=2)
        write_png(root / "images" / f"{name}.png", image)
        if name == "good":
            write_label_png(root / "labels" / f"{name}.png", labels)
    write_label_png(root / "labels" / "small.png", np.zeros((20, 20), np.int32))
    write_label_png(root / "labels" / "orphan.png", np.zeros((40, 48), np.int32))
    huge = np.zeros((40, 48), np.uint32)
    huge[5:10, 5:10] = 70_000
    tifffile.imwrite(root / "labels" / "big.tif", huge)


def test_bad_items_are_one_line_each_and_the_rest_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _bad_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="glandseg"):
        ds = as_dataset(tmp_path)
        names = [it.name for it in ds.items()]
    assert names == ["good"]
    problems = ds.problems()
    assert len(problems) == 4 and [r.getMessage() for r in caplog.records] == problems
    text = "\n".join(problems)
    assert "small.png: annotation is 20×20 but the image is 48×40" in text
    assert "nolabels.png: image without labels" in text
    assert "orphan.png: labels without an image" in text
    assert "big.tif: id 70000 is above the limit of 65535" in text


def test_geojson_holes_multipolygons_overlaps_and_classes(tmp_path: Path) -> None:
    labels = np.zeros((40, 60), np.int32)
    labels[5:25, 5:25] = 1
    labels[10:15, 10:15] = 0  # a hole
    labels[5:10, 40:45] = 2
    labels[30:35, 40:45] = 2  # two pieces: a MultiPolygon
    image, _ = make_glands(40, 60)
    write_png(tmp_path / "a.png", image)
    write_png(tmp_path / "b.png", image)
    collection = to_geojson(labels)
    tissue = {"type": "Feature", "properties": {"classification": {"name": "Tissue"}},
              "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [60, 0], [60, 40], [0, 40], [0, 0]]]}}  # fmt: skip
    (tmp_path / "a.geojson").write_text(json.dumps(collection))
    (tmp_path / "b.tif.geojson").write_text(
        json.dumps({**collection, "features": [*collection["features"], tissue]})
    )
    ds = as_dataset(tmp_path)
    assert [it.name for it in ds.items()] == ["a"]
    assert ds.problems() == [
        f"{tmp_path / 'b.tif.geojson'}: glands 1 and 3 overlap (375 pixels, 100% of the smaller one)"
    ]
    got = ds.items()[0].load()[1]
    assert got is not None and np.array_equal(got, labels)
    (tmp_path / "dataset.json").write_text(json.dumps({"classes": ["Gland"]}))
    ds = as_dataset(tmp_path)
    assert sorted(it.name for it in ds.items()) == ["a", "b"] and ds.problems() == []


def test_a_folder_without_a_usable_image_is_one_line(tmp_path: Path) -> None:
    image, _ = make_glands(32, 32)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_png(tmp_path / "images" / "a.png", image)
    with pytest.raises(
        DatasetError,
        match=r"no usable annotated image \(folder layout, 1 problems: .*a.png: image without labels",
    ):
        as_dataset(tmp_path).items()


def test_glas_is_still_detected_and_mixing_adds_only_train(
    fake_glas_dir: Path, sets: dict[str, Path]
) -> None:
    assert isinstance(as_dataset(fake_glas_dir), GlasDataset)
    mixed = as_dataset([sets["crag"], fake_glas_dir])
    assert isinstance(mixed, MixedDataset)
    assert mixed.splits == ("train", "val", "test")
    train = [it.name for it in mixed.items(["train"])]
    glas_train = [it.name for it in GlasDataset(fake_glas_dir).items(["train"])]
    assert train[-len(glas_train) :] == [f"{fake_glas_dir.name}-{n}" for n in glas_train]
    assert [it.name for it in mixed.items(["val", "test"])] == [
        it.name for it in as_dataset(sets["crag"]).items(["val", "test"])
    ]


def test_example_sets_from_glas_hold_no_glas_val_or_test_image(glas_dir: Path) -> None:
    assert not set(TRAIN_NAMES) & set(val_names()) and all(n.startswith("train_") for n in TRAIN_NAMES)
    with pytest.raises(ValueError, match="only GlaS train images"):
        glas_pairs(glas_dir, ["testA_1"])
    with pytest.raises(ValueError, match="only GlaS train images"):
        glas_pairs(glas_dir, [val_names()[0]])
