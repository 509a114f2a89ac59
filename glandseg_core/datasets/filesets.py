"""A data set of image files paired with label maps or QuPath GeoJSON: :class:`FileDataset`.

The layouts (:mod:`.folder`, :mod:`.crag`) find the pairs (:class:`Entry`) and the problems they see; this
module checks each pair once (the label map's size against its image's, ids up to ``MAX_LABEL_ID``, GeoJSON
glands that overlap), leaves out the bad ones with one line each naming the file (logged as warnings, and kept
in :meth:`FileDataset.problems`), and shares the rest into splits (:mod:`.spec`).

Label maps come back int32[H, W]: 0=background, 1..N glands, renumbered 1..N in the order of their ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import relabel_sequential

from ..errors import DatasetError, ImageError
from ..imaging.formats import image_mpp
from ..imaging.io import read_image, read_label_map
from .base import Dataset, Item, expand_splits
from .qupath import GEOJSON_EXT, rasterise, read_glands
from .spec import DatasetSpec, assign_splits

log = logging.getLogger("glandseg")
MAX_LABEL_ID = 65_535  # the largest id a 16-bit PNG label map holds
IMAGE_EXTS = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".webp")
LABEL_EXTS = (".png", ".tif", ".tiff", ".bmp")
SPLIT_ORDER = ("train", "val", "test")


def stem_of(path: Path) -> str:
    """The file name without its extension (``a.ome.tif`` -> ``a``)."""
    stem = path.stem
    return (
        stem[: -len(".ome")]
        if path.suffix.lower() in (".tif", ".tiff") and stem.lower().endswith(".ome")
        else stem
    )


@dataclass(frozen=True)
class Entry:
    """One image file and its annotation (a label map, or GeoJSON when it ends in ``.geojson``)."""

    name: str
    image: Path
    labels: Path
    split: str | None = None  # a split the layout fixes (CRAG's valid/ -> test), else the spec decides


@dataclass
class Found:
    """What a layout found: its pairs and one line per file it could not pair."""

    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file's header (nothing decoded)."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception as e:  # noqa: BLE001  Pillow raises many types for bad headers
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__})") from None


def read_labels(entry: Entry, shape: tuple[int, int], classes: Sequence[str] | None) -> np.ndarray:
    """The label map of ``entry`` on an image of ``shape``: int32[H, W], 0=background, 1..N glands.

    Raises:
        DatasetError: another size than the image's, an id above ``MAX_LABEL_ID``, overlapping or misplaced
            GeoJSON glands, an unreadable file (one line naming it).
    """
    if entry.labels.suffix.lower() == GEOJSON_EXT:
        return rasterise(read_glands(entry.labels, classes), shape, entry.labels)
    try:
        labels = read_label_map(entry.labels, name=str(entry.labels), shape=shape)
    except ImageError as e:
        raise DatasetError(str(e)) from None
    top = int(labels.max(initial=0))
    if top > MAX_LABEL_ID:
        raise DatasetError(f"{entry.labels}: id {top} is above the limit of {MAX_LABEL_ID}")
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def _load(entry: Entry, classes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = read_image(entry.image, name=str(entry.image))
    except ImageError as e:
        raise DatasetError(str(e)) from None
    return image, read_labels(entry, image.shape[:2], classes)


class FileDataset(Dataset):
    """Annotated image files of one folder (``layout``: ``folder``, ``qupath``, ``crag``) as a data set.

    Args:
        root: the folder. layout: its layout's name. found: the pairs and problems its layout found.
        spec: ``dataset.json`` (pixel size, splits, groups, grades, QuPath classes).
        default_mpp: the layout's own pixel size (CRAG: 0.55 µm/px), used when nothing more precise is known.

    The pairs are checked on first use (:meth:`items`, :attr:`splits`, :meth:`problems`): each label map is read
    once, its image only as far as its header.
    """

    def __init__(
        self, root: Path, layout: str, found: Found, spec: DatasetSpec, default_mpp: float | None = None
    ) -> None:
        self.root, self.layout, self.spec, self.default_mpp = root, layout, spec, default_mpp
        self._found = found
        self._items: list[Item] | None = None
        self._problems: list[str] = []

    def __repr__(self) -> str:
        return f"FileDataset({str(self.root)!r}, layout={self.layout!r})"

    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]  # found on first use
        """The splits that hold images: train, val, test first, then any other ``dataset.json`` names."""
        present = dict.fromkeys(it.split for it in self._checked())
        return tuple(
            [s for s in SPLIT_ORDER if s in present] + [s for s in present if s not in SPLIT_ORDER]
        )

    def problems(self) -> list[str]:
        """One line per file left out (unpaired, unreadable, another size, ids above the limit, overlaps)."""
        self._checked()
        return list(self._problems)

    def items(self, splits: Sequence[str] | None = None) -> list[Item]:
        """The good items of ``splits`` (None or ``all``: every split), split by split, by name.

        Raises:
            DatasetError: an unknown split, or a folder without one usable annotated image.
        """
        wanted = expand_splits(splits, self.splits)
        return [it for s in wanted for it in self._checked() if it.split == s]

    def _check(self, entry: Entry) -> str | None:
        try:
            read_labels(entry, _image_size(entry.image), self.spec.classes)
        except DatasetError as e:
            return str(e)
        return None

    def _mpp(self, entry: Entry) -> float | None:
        given = self.spec.info(entry.name).mpp
        return given or image_mpp(entry.image) or self.spec.mpp or self.default_mpp

    def _checked(self) -> list[Item]:
        if self._items is not None:
            return self._items
        problems = list(self._found.problems)
        good: list[Entry] = []
        for entry in sorted(self._found.entries, key=lambda e: e.name):
            problem = self._check(entry)
            problems += [problem] if problem else []
            good += [] if problem else [entry]
        groups = {e.name: self.spec.info(e.name).group for e in good}
        fixed = {e.name: e.split for e in good if e.split}
        split_of, unknown = assign_splits([e.name for e in good], groups, self.spec, fixed)
        self._problems = problems + unknown
        for line in self._problems:
            log.warning("%s", line)
        if not good:
            raise DatasetError(
                f"{self.root}: no usable annotated image ({self.layout} layout, {len(problems)} problems"
                f"{': ' + problems[0] if problems else ''}); see docs/DATASETS.md"
            )
        self._items = [self._item(e, split_of[e.name]) for e in good]
        return self._items

    def _item(self, entry: Entry, split: str) -> Item:
        info = self.spec.info(entry.name)
        loader = partial(_load, entry, self.spec.classes)
        return Item(entry.name, split, loader, mpp=self._mpp(entry), group=info.group, grade=info.grade)


def pair_by_stem(
    images: Mapping[str, list[Path]], labels: Mapping[str, list[Path]], where: str
) -> Found:
    """Pairs of the stems both sides have; one line for each stem with two files, an image without labels, or a
    label file without its image."""
    found = Found()
    for stem in sorted(set(images) | set(labels)):
        imgs, labs = images.get(stem, []), labels.get(stem, [])
        if len(imgs) > 1 or len(labs) > 1:
            both = " and ".join(str(p) for p in (imgs if len(imgs) > 1 else labs))
            found.problems.append(f"{both}: two files for {stem} in {where}; keep one")
        elif not labs:
            found.problems.append(f"{imgs[0]}: image without labels (left out)")
        elif not imgs:
            found.problems.append(f"{labs[0]}: labels without an image (left out)")
        else:
            found.entries.append(Entry(stem, imgs[0], labs[0]))
    return found
