"""Turn what a caller passes as data into a :class:`Dataset`: a data set; a folder in any layout glandseg
knows (:func:`detect_layout`); several folders trained on together; or in-memory pairs.

Layouts, in the order they are recognised (docs/DATASETS.md): ``dataset.json``'s ``layout`` when it names one;
``glas`` (``train_N.bmp`` + ``train_N_anno.bmp``, ...); ``crag`` (``train/Images`` + ``train/Annotation``,
``valid/...``); ``folder`` (``images/`` + ``labels/``, or ``<stem>_labels`` beside ``<stem>``); ``qupath``
(``<stem>.geojson`` beside the images). A folder that is none of these is read as GlaS, whose error says what
is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from ..errors import DatasetError
from .base import Dataset, expand_splits, from_pairs
from .crag import CRAG_MPP, crag_folder, is_crag
from .filesets import FileDataset
from .folder import has_geojson, has_side_by_side, label_dir, plain_folder, qupath_folder
from .glas import GlasDataset, data_root
from .mix import MixedDataset
from .spec import read_spec

#: A data set; a folder (None: ``$GLANDSEG_DATA``); several of them (the first one's splits, the others'
#: ``train``); or (image, label map) pairs in memory.
DataLike = (
    Dataset
    | str
    | os.PathLike
    | None
    | Sequence[tuple[np.ndarray, np.ndarray]]
    | Sequence[str | os.PathLike | Dataset]
)
_GLAS_FILE = re.compile(r"^(train|testA|testB)_\d+_anno\.", re.IGNORECASE)


def detect_layout(root: Path) -> str:
    """The layout of the folder ``root``: ``glas``, ``crag``, ``folder`` or ``qupath`` (see the module doc).

    Raises:
        DatasetError: ``dataset.json`` is invalid (one line naming the field).
    """
    spec = read_spec(root)
    if spec.layout:
        return spec.layout
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    if any(_GLAS_FILE.match(n) for n in names):
        return "glas"
    if is_crag(root):
        return "crag"
    if has_geojson(root):
        return "qupath"
    if ((root / "images").is_dir() and label_dir(root)) or has_side_by_side(root):
        return "folder"
    return "glas"


def open_folder(folder: str | os.PathLike | None) -> Dataset:
    """The data set in ``folder`` (None: ``$GLANDSEG_DATA``), whatever its layout.

    Raises:
        DatasetError: a missing folder or an invalid ``dataset.json`` (bad pairs are reported by the data set).
    """
    root = data_root(folder)
    layout = detect_layout(root)
    spec = read_spec(root)
    if layout == "glas":
        if spec.path is not None and (spec.mpp or spec.splits or spec.images or spec.classes):
            raise DatasetError(
                f"{spec.path}: a GlaS folder keeps the release's splits, pixel size and grades"
            )
        return GlasDataset(root)
    if layout == "crag":
        return FileDataset(root, "crag", crag_folder(root), spec, default_mpp=CRAG_MPP)
    if layout == "qupath":
        return FileDataset(root, "qupath", qupath_folder(root), spec)
    return FileDataset(root, "folder", plain_folder(root), spec)


def _is_source(x: object) -> bool:
    return isinstance(x, str | os.PathLike | Dataset)


def as_dataset(data: DataLike, *, split: str = "test", mpp: float | None = None) -> Dataset:
    """``data`` as a :class:`Dataset`.

    Args:
        data: a :class:`Dataset` (returned as is); a folder path or None (:func:`open_folder`: any layout,
            None: ``$GLANDSEG_DATA``); a list of folders or data sets (:class:`~.mix.MixedDataset`: the first
            one's splits, the others' ``train`` added to ``train``); or a sequence of (uint8[H, W, 3] image,
            int32[H, W] label map) pairs.
        split, mpp: the split and pixel size given to in-memory pairs (:func:`from_pairs`).

    Raises:
        DatasetError: a missing folder, an invalid ``dataset.json``, or pairs of the wrong type or shape.
    """
    if isinstance(data, Dataset):
        return data
    if data is None or isinstance(data, str | os.PathLike):
        return open_folder(data)
    parts = list(data)
    if parts and all(_is_source(p) for p in parts):
        return _mix(cast(list[str | os.PathLike | Dataset], parts))
    pairs = cast(list[tuple[np.ndarray, np.ndarray]], parts)
    return from_pairs([p[0] for p in pairs], [p[1] for p in pairs], mpp=mpp, split=split)


def _mix(parts: list[str | os.PathLike | Dataset]) -> Dataset:
    """One folder or data set as it is; several as a :class:`MixedDataset` labelled by their folders' names."""
    sets = [as_dataset(p) for p in parts]
    if len(sets) == 1:
        return sets[0]
    labels = [_label(p, i) for i, p in enumerate(parts[1:], 2)]
    return MixedDataset(sets[0], sets[1:], labels)


def _label(part: str | os.PathLike | Dataset, i: int) -> str:
    """A short prefix for the names of an added set's items: its folder's name, else ``set<i>``."""
    root = getattr(part, "root", None) if isinstance(part, Dataset) else part
    name = Path(os.fspath(root)).name if isinstance(root, str | os.PathLike) else ""
    return name or f"set{i}"


def eval_splits(data: Dataset, splits: Sequence[str] | None) -> list[str]:
    """The splits ``glandseg evaluate`` scores: ``splits`` (``all``: every one); by default GlaS ``val``, and
    every split of any other set (all its annotated images).

    Raises:
        DatasetError: a split the set lacks (one line naming the ones it has).
    """
    if splits is None:
        return ["val"] if isinstance(data, GlasDataset) else list(data.splits)
    return expand_splits(splits, data.splits)
