"""Plain folders and QuPath folders: which image goes with which annotation.

Plain folder (layout ``folder``), either

* ``images/<stem>.<ext>`` and ``labels/<stem>.<ext>`` (or ``masks/``; ``<stem>_labels``/``_masks`` there too), or
* ``<stem>.<ext>`` beside ``<stem>_labels.<ext>`` (or ``_label``, ``_masks``, ``_mask``) in one folder;

label maps are PNG, TIFF, OME-TIFF or BMP: 0 = background, one id per gland. QuPath folder (layout ``qupath``):
``<stem>.geojson`` (or ``<image file name>.geojson``) beside the image, or with the images in ``images/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .filesets import IMAGE_EXTS, LABEL_EXTS, Entry, Found, pair_by_stem, stem_of
from .qupath import GEOJSON_EXT

LABEL_DIRS = ("labels", "masks")
LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask")


def _files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    """Regular, visible files of ``folder`` with one of ``exts`` (``a.ome.tif`` counts as .tif), by name."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file()
    )


def _label_stem(path: Path) -> tuple[str, bool]:
    """(the image stem a label file names, whether it carried a label suffix)."""
    stem = stem_of(path)
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], True
    return stem, False


def _group(paths: list[Path], key: Callable[[Path], str] = stem_of) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in paths:
        out.setdefault(key(p), []).append(p)
    return out


def label_dir(root: Path) -> Path | None:
    """``labels/`` or ``masks/`` of ``root`` (whichever exists first), or None."""
    return next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)


def has_side_by_side(root: Path) -> bool:
    """Whether ``root`` holds ``<stem>_labels.<ext>``-style label files (one is enough)."""
    return any(_label_stem(p)[1] for p in _files(root, LABEL_EXTS))


def plain_folder(root: Path) -> Found:
    """The pairs of a plain folder: ``images/`` + ``labels/`` (or ``masks/``), else side by side."""
    labels = label_dir(root)
    if (root / "images").is_dir() and labels is not None:
        images = _group(_files(root / "images", IMAGE_EXTS))
        return pair_by_stem(
            images, _group(_files(labels, LABEL_EXTS), lambda p: _label_stem(p)[0]), str(root)
        )
    files = _files(root, IMAGE_EXTS)
    label_files = [p for p in files if _label_stem(p)[1] and p.suffix.lower() in LABEL_EXTS]
    images = _group([p for p in files if p not in label_files])
    return pair_by_stem(images, _group(label_files, lambda p: _label_stem(p)[0]), str(root))


def _geojson_stem(path: Path) -> str:
    """``a.geojson`` and ``a.tif.geojson`` (QuPath names exports after the image file) both name ``a``."""
    inner = Path(path.name[: -len(GEOJSON_EXT)])
    return stem_of(inner) if inner.suffix.lower() in IMAGE_EXTS else inner.name


def qupath_folder(root: Path) -> Found:
    """The pairs of a QuPath folder: ``<stem>.geojson`` with the image beside it or in ``images/``."""
    annotations = _group(_files(root, (GEOJSON_EXT,)), _geojson_stem)
    images = _group(_files(root / "images", IMAGE_EXTS) or _files(root, IMAGE_EXTS))
    return pair_by_stem(images, annotations, str(root))


def has_geojson(root: Path) -> bool:
    """Whether ``root`` holds a ``.geojson`` file."""
    return bool(_files(root, (GEOJSON_EXT,)))


__all__ = ["Entry", "has_geojson", "has_side_by_side", "label_dir", "plain_folder", "qupath_folder"]
