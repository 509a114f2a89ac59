"""GlaS (Warwick-QU, MICCAI 2015): discovery and splits (``discovery``), the data set adapter (``adapter``),
fetching and checking the release (``release``) and a compact copy for a GPU machine (``pack``)."""

from __future__ import annotations

from .adapter import GLAS_MPP, GlasDataset
from .discovery import (
    IMAGE_EXTS,
    SPLIT_CHOICES,
    SPLITS,
    VAL_SPLIT_FILE,
    GlasItem,
    data_root,
    find_items,
    item_by_name,
    load_item,
    read_grades,
    read_patients,
    single_id_annotations,
    val_names,
)

__all__ = [
    "GLAS_MPP",
    "IMAGE_EXTS",
    "SPLITS",
    "SPLIT_CHOICES",
    "VAL_SPLIT_FILE",
    "GlasDataset",
    "GlasItem",
    "data_root",
    "find_items",
    "item_by_name",
    "load_item",
    "read_grades",
    "read_patients",
    "single_id_annotations",
    "val_names",
]
