"""Tests for glandseg_core.datasets: items, in-memory pairs, the GlaS adapter, and what training reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glandseg_core.datasets import (
    GLAS_MPP,
    GlasDataset,
    Item,
    PairsDataset,
    as_dataset,
    expand_splits,
    from_pairs,
)
from glandseg_core.datasets.glas import find_items, load_item, read_grades
from glandseg_core.errors import DatasetError
from glandseg_core.train.setup import split_items
from tests.helpers import make_glands


def test_glas_adapter_lists_the_same_items_as_discovery(fake_glas_dir: Path) -> None:
    ds = GlasDataset(fake_glas_dir)
    assert ds.splits == ("train", "val", "testA", "testB")
    for splits in (["train"], ["val"], ["testA", "testB"], ["all"], None):
        items = ds.items(splits)
        found = find_items(fake_glas_dir, splits or ["all"])
        assert [(it.name, it.split) for it in items] == [(g.name, g.split) for g in found]
    grades = read_grades(fake_glas_dir)
    first = ds.items(["testA"])[0]
    assert first.mpp == GLAS_MPP and first.grade == grades["testA_1"] and first.group is not None
    image, labels = first.load()
    ref_image, ref_labels = load_item(find_items(fake_glas_dir, ["testA"])[0])
    assert np.array_equal(image, ref_image) and np.array_equal(labels, ref_labels)
    assert labels is not None and labels.dtype == np.int32 and image.dtype == np.uint8


def test_glas_adapter_on_the_real_release(glas_dir: Path) -> None:
    items = GlasDataset(glas_dir).items()
    assert [sum(it.split == s for it in items) for s in ("train", "val", "testA", "testB")] == [
        70,
        15,
        60,
        20,
    ]
    assert {it.grade for it in items} == {"benign", "malignant"}
    assert len({it.group for it in items}) > 10 and all(it.mpp == GLAS_MPP for it in items)


def test_as_dataset_reads_a_path_env_or_pairs(
    fake_glas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(as_dataset(fake_glas_dir), GlasDataset)
    assert isinstance(as_dataset(str(fake_glas_dir)), GlasDataset)
    monkeypatch.setenv("GLANDSEG_DATA", str(fake_glas_dir))
    assert as_dataset(None).root == fake_glas_dir
    ds = GlasDataset(fake_glas_dir)
    assert as_dataset(ds) is ds
    image, labels = make_glands()
    pairs = as_dataset([(image, labels)], split="val", mpp=0.5)
    assert isinstance(pairs, PairsDataset) and pairs.splits == ("val",)
    item = pairs.items()[0]
    assert (item.name, item.split, item.mpp, item.group, item.grade) == ("val_1", "val", 0.5, None, None)
    monkeypatch.delenv("GLANDSEG_DATA")
    with pytest.raises(DatasetError, match="GLANDSEG_DATA"):
        as_dataset(None)


def test_from_pairs_checks_arrays_up_front() -> None:
    image, labels = make_glands()
    ds = from_pairs([image, image], [labels.astype(np.uint16), None], names=["a", "b"])
    (_, lab_a), (_, lab_b) = (it.load() for it in ds.items())
    assert lab_a is not None and lab_a.dtype == np.int32 and lab_b is None
    with pytest.raises(DatasetError, match="b: no label map"):
        ds.items()[1].load_annotated()
    with pytest.raises(DatasetError, match="uint8"):
        from_pairs([image.astype(np.float32)], [labels])
    with pytest.raises(DatasetError, match="label map is"):
        from_pairs([image], [labels[:10]])
    with pytest.raises(DatasetError, match="integer ids"):
        from_pairs([image], [labels.astype(float)])
    with pytest.raises(DatasetError, match="2 images, 1 label maps"):
        from_pairs([image, image], [labels])
    with pytest.raises(DatasetError, match="unique"):
        from_pairs([image], [labels], split="x") + from_pairs([image], [labels], split="x")


def test_splits_select_and_combine() -> None:
    image, labels = make_glands()
    ds = from_pairs([image] * 2, [labels] * 2, split="train") + from_pairs(
        [image], [labels], split="val"
    )
    assert ds.splits == ("train", "val") and [it.name for it in ds.items(["val", "train"])] == [
        "val_1",
        "train_1",
        "train_2",
    ]
    assert [it.name for it in ds.items(["all"])] == ["train_1", "train_2", "val_1"]
    assert expand_splits(["val", "all"], ("train", "val")) == ["val", "train"]
    with pytest.raises(DatasetError, match="unknown split 'testA'"):
        ds.items(["testA"])
    train, val = split_items(ds)
    assert [it.name for it in train] == ["train_1", "train_2"] and [it.name for it in val] == ["val_1"]
    train, val = split_items([(image, labels)], [(image, labels)])  # pairs: train and val by position
    assert (train[0].split, val[0].split) == ("train", "val")
    with pytest.raises(DatasetError, match="val_data"):
        split_items([(image, labels)])


def test_a_custom_adapter_is_a_dataset() -> None:
    """Any class with ``splits`` and ``items()`` works (e.g. a plain images/ + labels/ folder)."""
    image, labels = make_glands()

    class One(PairsDataset):
        def __init__(self) -> None:
            super().__init__([Item("x", "test", lambda: (image, labels), mpp=0.5, group="p1")])

    item = One().items()[0]
    assert item.group == "p1" and item.load()[0] is image
