"""Data sets are adapters: a :class:`Dataset` lists :class:`Item` s (image, optional label map, pixel size,
group, grade). GlaS is one adapter (:mod:`.glas`); :func:`from_pairs` wraps arrays in memory; training and
evaluation take either (:func:`as_dataset`)."""

from __future__ import annotations

from .base import Dataset, Item, PairsDataset, expand_splits, from_pairs
from .glas import GLAS_MPP, GlasDataset
from .resolve import DataLike, as_dataset

__all__ = [
    "GLAS_MPP",
    "DataLike",
    "Dataset",
    "GlasDataset",
    "Item",
    "PairsDataset",
    "as_dataset",
    "expand_splits",
    "from_pairs",
]
