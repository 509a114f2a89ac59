"""Data sets are adapters: a :class:`Dataset` lists :class:`Item` s (image, optional label map, pixel size,
group, grade). GlaS is one adapter (:mod:`.glas`); CRAG (:mod:`.crag`), plain folders and QuPath GeoJSON
folders (:mod:`.folder`) are :class:`FileDataset` s, described further by a ``dataset.json`` (:mod:`.spec`);
:func:`from_pairs` wraps arrays in memory; training and evaluation take any of them (:func:`as_dataset`, which
detects a folder's layout)."""

from __future__ import annotations

from .base import Dataset, Item, PairsDataset, expand_splits, from_pairs
from .crag import CRAG_MPP
from .filesets import MAX_LABEL_ID, FileDataset
from .glas import GLAS_MPP, GlasDataset
from .mix import MixedDataset
from .resolve import DataLike, as_dataset, detect_layout, eval_splits, open_folder
from .spec import SPEC_FILE, DatasetSpec, read_spec

__all__ = [
    "CRAG_MPP",
    "GLAS_MPP",
    "MAX_LABEL_ID",
    "SPEC_FILE",
    "DataLike",
    "Dataset",
    "DatasetSpec",
    "FileDataset",
    "GlasDataset",
    "Item",
    "MixedDataset",
    "PairsDataset",
    "as_dataset",
    "detect_layout",
    "eval_splits",
    "expand_splits",
    "from_pairs",
    "open_folder",
    "read_spec",
]
