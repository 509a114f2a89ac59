"""What training and evaluation read: a :class:`Dataset` of :class:`Item` s, whatever the files look like.

An item is one image: its name, its split, a loader for the pixels and (when annotated) the label map, and what
is known about it: pixel size (µm per pixel), group (e.g. the patient) and grade. GlaS is one adapter
(:mod:`glandseg_core.datasets.glas`); :func:`from_pairs` wraps arrays already in memory (stardist
``model.train(X, Y, validation_data=(X_val, Y_val))``).

Images are uint8[H, W, 3] RGB; label maps int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..errors import DatasetError

Loader = Callable[[], tuple[np.ndarray, np.ndarray | None]]  # () -> (image, label map or None)


@dataclass(frozen=True)
class Item:
    """One image of a data set.

    Attributes:
        name: unique within its data set (e.g. ``testA_3``); names prediction files and table rows.
        split: the split it belongs to (``train``, ``val``, ``test``, ...).
        loader: returns (uint8[H, W, 3] image, int32[H, W] label map or None); read on demand.
        mpp: micrometres per pixel, or None when unknown (then the model's own scale is assumed).
        group: e.g. the patient, or None. grade: e.g. ``benign``/``malignant``, or None.
    """

    name: str
    split: str
    loader: Loader = field(repr=False, compare=False)
    mpp: float | None = None
    group: str | None = None
    grade: str | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The image (uint8[H, W, 3]) and its label map (int32[H, W], 0=background, 1..N glands) or None.

        Raises:
            DatasetError: unreadable files, or arrays of the wrong type or shape (names the item).
        """
        image, labels = self.loader()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DatasetError(
                f"{self.name}: image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}"
            )
        if labels is not None and labels.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.name}: label map is {list(labels.shape)}, its image {list(image.shape[:2])}"
            )
        return image, labels

    def load_annotated(self) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`load`, for work that needs the label map.

        Raises:
            DatasetError: the item has no label map.
        """
        image, labels = self.load()
        if labels is None:
            raise DatasetError(f"{self.name}: no label map (training and scoring need one)")
        return image, labels


def expand_splits(splits: Sequence[str] | None, known: Sequence[str]) -> list[str]:
    """``splits`` in order without repeats, ``all`` (or None) standing for every split in ``known``.

    Raises:
        DatasetError: a split that ``known`` lacks.
    """
    out: list[str] = []
    for s in known if splits is None else splits:
        for t in known if s == "all" else (s,):
            if t not in known:
                raise DatasetError(f"unknown split {t!r}; choose from {', '.join((*known, 'all'))}")
            if t not in out:
                out.append(t)
    return out


class Dataset(ABC):
    """A source of images and label maps: ``splits`` it has and ``items(splits)`` of them, in a fixed order."""

    #: The splits this data set holds, in order.
    splits: tuple[str, ...] = ()

    @abstractmethod
    def items(self, splits: Sequence[str] | None = None) -> list[Item]:
        """The items of ``splits`` (None or ``all``: every split), split by split in order.

        Raises:
            DatasetError: an unknown split, or files missing for the ones asked for.
        """


class PairsDataset(Dataset):
    """Items already built (e.g. arrays in memory by :func:`from_pairs`); ``splits`` in order of appearance."""

    def __init__(self, items: Sequence[Item]) -> None:
        names = [it.name for it in items]
        if len(set(names)) != len(names):
            raise DatasetError("item names must be unique within a data set")
        self._items = list(items)
        self.splits = tuple(dict.fromkeys(it.split for it in self._items))

    def __repr__(self) -> str:
        return f"PairsDataset({len(self._items)} items, splits {', '.join(self.splits) or 'none'})"

    def items(self, splits: Sequence[str] | None = None) -> list[Item]:
        """The items of ``splits`` (None or ``all``: all of them) in the order given."""
        wanted = expand_splits(splits, self.splits)
        return [it for s in wanted for it in self._items if it.split == s]

    def __add__(self, other: PairsDataset) -> PairsDataset:
        """Both data sets' items (names must not clash), e.g. a ``train`` and a ``val`` set of pairs."""
        return PairsDataset([*self._items, *other._items])


def _arrays(image: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    return image, labels


def from_pairs(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None] | None = None,
    *,
    mpp: float | None = None,
    split: str = "test",
    names: Sequence[str] | None = None,
) -> PairsDataset:
    """A data set of arrays in memory, all in one split.

    Args:
        images: uint8[H, W, 3] RGB each. labels: int32[H, W] label maps (0=background, 1..N glands; any
            integer type is converted), None per image or for all when unannotated.
        mpp: micrometres per pixel of every image (None: the model's own scale).
        split: the split of every item. names: one per image (default ``<split>_1``, ``<split>_2``, ...).

    Raises:
        DatasetError: lengths differ, or an image or label map has the wrong type or shape.
    """
    labels = [None] * len(images) if labels is None else list(labels)
    names = [f"{split}_{i + 1}" for i in range(len(images))] if names is None else list(names)
    if not len(images) == len(labels) == len(names):
        raise DatasetError(f"{len(images)} images, {len(labels)} label maps and {len(names)} names")
    items = []
    for name, image, lab in zip(names, images, labels, strict=True):
        image = np.asarray(image)
        if lab is not None:
            lab = np.asarray(lab)
            if not np.issubdtype(lab.dtype, np.integer):
                raise DatasetError(f"{name}: label map must hold integer ids, got {lab.dtype}")
            lab = lab.astype(np.int32, copy=False)
        item = Item(name, split, partial(_arrays, image, lab), mpp=mpp)
        item.load()  # check the arrays now, not in the middle of a run
        items.append(item)
    return PairsDataset(items)
