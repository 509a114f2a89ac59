"""Turn what a caller passes as data (a data set, a GlaS folder, in-memory pairs) into a :class:`Dataset`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .base import Dataset, from_pairs
from .glas import GlasDataset

#: A data set; a GlaS folder (None: ``$GLANDSEG_DATA``); or (image, label map) pairs in memory.
DataLike = Dataset | str | os.PathLike | None | Sequence[tuple[np.ndarray, np.ndarray]]


def as_dataset(data: DataLike, *, split: str = "test", mpp: float | None = None) -> Dataset:
    """``data`` as a :class:`Dataset`.

    Args:
        data: a :class:`Dataset` (returned as is); a folder path or None (the GlaS folder, else
            ``$GLANDSEG_DATA``); or a sequence of (uint8[H, W, 3] image, int32[H, W] label map) pairs.
        split, mpp: the split and pixel size given to in-memory pairs (:func:`from_pairs`).

    Raises:
        DatasetError: a missing GlaS folder, or pairs of the wrong type or shape.
    """
    if isinstance(data, Dataset):
        return data
    if data is None or isinstance(data, str | os.PathLike):
        return GlasDataset(data)
    pairs = list(data)
    images = [p[0] for p in pairs]
    labels = [p[1] for p in pairs]
    return from_pairs(images, labels, mpp=mpp, split=split)
