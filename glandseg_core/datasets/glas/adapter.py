"""GlaS as a :class:`~glandseg_core.datasets.base.Dataset`: splits ``train``, ``val``, ``testA``, ``testB``.

Every image is 20x at 0.62 µm per pixel; each item's grade (``benign``/``malignant``) and group (the patient ID)
come from ``Grade.csv`` when the folder has one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import numpy as np

from ..base import Dataset, Item
from .discovery import SPLITS, GlasItem, data_root, find_items, load_item, read_patients

GLAS_MPP = 0.62  # µm per pixel of every GlaS image (20x)


def _load(item: GlasItem) -> tuple[np.ndarray, np.ndarray | None]:
    return load_item(item)


class GlasDataset(Dataset):
    """The GlaS folder ``root`` (else ``$GLANDSEG_DATA``) as a data set.

    Raises:
        DatasetError: when the folder is not given or does not exist (missing files: by :meth:`items`).
    """

    splits = SPLITS

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = data_root(root)

    def __repr__(self) -> str:
        return f"GlasDataset({str(self.root)!r})"

    def glas_items(self, splits: Sequence[str] | None = None) -> list[GlasItem]:
        """The GlaS records (file paths) of ``splits`` (None: all), as :func:`find_items` lists them."""
        return find_items(self.root, tuple(splits) if splits is not None else ("all",))

    def items(self, splits: Sequence[str] | None = None) -> list[Item]:
        """The items of ``splits`` (None or ``all``: train, val, testA, testB), in GlaS order.

        Raises:
            DatasetError: an unknown split, or missing or unpaired files (names them).
        """
        patients = read_patients(self.root)
        return [
            Item(
                g.name,
                g.split,
                partial(_load, g),
                mpp=GLAS_MPP,
                group=patients.get(g.name),
                grade=None if g.grade == "unknown" else g.grade,
            )
            for g in self.glas_items(splits)
        ]
