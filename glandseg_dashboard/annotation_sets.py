"""Named annotation sets: what the Annotate page saves, in the plain data-set layout every glandseg command reads.

A set is a folder under the annotations root (``settings.annotations_root()``)::

    <root>/<set name>/images/<stem>.png    the image as annotated (lossless PNG)
    <root>/<set name>/labels/<stem>.png    its label map: 0 = background, glands 1..N (8-bit PNG, 16-bit above 255)
    <root>/<set name>/dataset.json         {"layout": "folder", "mpp": ..., "images": {<stem>: {"mpp": ...}}}

so ``glandseg_core.datasets.as_dataset(<root>/<set name>)`` reads it (docs/DATASETS.md), and ``glandseg evaluate
--data`` / ``glandseg train --data`` take it as it is. ``dataset.json`` is merged, never rewritten from scratch:
the set's first pixel size becomes its ``mpp``; an image at another pixel size gets its own ``images.<stem>.mpp``;
every other field someone wrote there (splits, groups) is kept. Writes are atomic and serialised by a file lock,
so two sessions saving into one set lose nothing. Older dashboards saved flat ``<root>/<stem>.png`` label maps:
:func:`flat_annotations` lists them (read-only). No streamlit here.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image
from skimage.segmentation import relabel_sequential

from glandseg_core.datasets.spec import SPEC_FILE
from glandseg_core.errors import DatasetError
from glandseg_core.files import atomic_write_bytes, atomic_write_text
from glandseg_core.imaging.io import label_png_bytes, png_bytes

DEFAULT_SET = "my-glands"
IMAGES, LABELS = "images", "labels"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RESERVED = {"evaluations", "images", "labels"}  # folder names inside a set, never a set's own name
_MPP_TOLERANCE = 1e-3  # relative: pixel sizes closer than this are the same


@dataclass(frozen=True)
class SavedImage:
    """What :func:`save_to_set` wrote: the set's folder, its image count now, whether a label map was replaced."""

    folder: Path
    n_images: int
    replaced: bool
    stem: str


def check_set_name(name: str) -> str:
    """The set name, stripped, when it is a safe folder name (letters, digits, ``._-``; up to 64; starts with a
    letter or digit).

    Raises:
        ValueError: one line saying what is wrong with it.
    """
    text = (name or "").strip()
    if not text:
        raise ValueError("Annotation set: type a name for the set, e.g. my-glands.")
    if not _NAME.fullmatch(text):
        raise ValueError(
            f"Annotation set: {text!r} is not a folder name glandseg accepts: use letters, digits, '.', '_' "
            "and '-' only (up to 64, starting with a letter or digit)."
        )
    if text.lower() in _RESERVED:
        raise ValueError(f"Annotation set: {text!r} is reserved; choose another name.")
    return text


def safe_stem(stem: str) -> str:
    """An image name reduced to safe file-name characters (letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(stem).stem).strip("._") or "image"


def set_folder(root: str | os.PathLike, name: str) -> Path:
    """``root/<name>`` for a valid set name. Raises ValueError (one line) for an unsafe name."""
    return Path(root) / check_set_name(name)


def list_sets(root: str | os.PathLike) -> list[str]:
    """Names of the annotation sets under ``root`` (folders with a ``labels/`` folder), by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and _NAME.fullmatch(p.name) and (p / LABELS).is_dir()
    )


def set_images(folder: str | os.PathLike) -> list[str]:
    """The stems with a saved label map in a set's folder, by name."""
    labels = Path(folder) / LABELS
    return sorted(p.stem for p in labels.glob("*.png") if p.is_file()) if labels.is_dir() else []


def label_path(folder: str | os.PathLike, stem: str) -> Path:
    """Where a set keeps the label map of image ``stem``."""
    return Path(folder) / LABELS / f"{safe_stem(stem)}.png"


def saved_label_maps(root: str | os.PathLike, stem: str) -> list[Path]:
    """The label maps of image ``stem`` in every set under ``root``, newest first."""
    found = [label_path(Path(root) / name, stem) for name in list_sets(root)]
    return sorted((p for p in found if p.is_file()), key=lambda p: -p.stat().st_mtime)


def flat_annotations(root: str | os.PathLike) -> list[Path]:
    """Label maps that older dashboards saved flat as ``root/<stem>.png`` (read-only), newest first."""
    root = Path(root)
    files = [p for p in root.glob("*.png") if p.is_file()] if root.is_dir() else []
    return sorted(files, key=lambda p: -p.stat().st_mtime)


def renumber(labels: np.ndarray) -> np.ndarray:
    """int32 label map with its glands numbered 1..N in the order of their old ids (0 stays background)."""
    out = relabel_sequential(np.asarray(labels).astype(np.int64, copy=False))[0]
    return out.astype(np.int32, copy=False)


def label_map_bytes(labels: np.ndarray) -> bytes:
    """PNG of a 1..N label map: 8-bit grayscale up to 255 glands, 16-bit above (ImageError over 65535)."""
    if int(labels.max(initial=0)) > 255:
        return label_png_bytes(labels)
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _read_spec_dict(path: Path) -> dict:
    """The ``dataset.json`` object of a set ({} when there is none). Raises DatasetError (one line)."""
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(
            f"{path}: cannot be read as JSON ({e}); fix or remove it, then save again"
        ) from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: must hold a JSON object; fix or remove it, then save again")
    return raw


def merged_spec(spec: dict, stem: str, mpp: float | None) -> dict:
    """``dataset.json`` with image ``stem`` at pixel size ``mpp`` merged in: the first pixel size is the set's
    ``mpp``; another one becomes ``images.<stem>.mpp``; every other field and entry is kept."""
    out = {**spec}
    out.setdefault("layout", "folder")
    images = {k: dict(v) if isinstance(v, dict) else v for k, v in (out.get("images") or {}).items()}
    entry = dict(images.get(stem) or {})
    entry.pop("mpp", None)
    if mpp is not None:
        if "mpp" not in out:
            out["mpp"] = float(mpp)
        elif abs(float(mpp) / float(out["mpp"]) - 1) > _MPP_TOLERANCE:
            entry["mpp"] = float(mpp)
    if entry:
        images[stem] = entry
    else:
        images.pop(stem, None)
    if images:
        out["images"] = images
    else:
        out.pop("images", None)
    return out


def save_to_set(
    root: str | os.PathLike,
    name: str,
    stem: str,
    image: np.ndarray,
    labels: np.ndarray,
    mpp: float | None,
    *,
    overwrite: bool = False,
) -> SavedImage:
    """Save one annotated image into the set ``name`` under ``root`` (module docstring for the layout).

    Args:
        root: the annotations root. name: the set's folder name (:func:`check_set_name`). stem: the image's name.
        image (uint8[H, W, 3]): the image as annotated. labels (int[H, W]): 0=NO masks; 1,2... are mask
            labels; saved renumbered 1..N. mpp: µm per pixel of ``image`` (None: unknown, nothing recorded).
        overwrite: replace the label map (and image) this set already holds for ``stem``.

    Returns:
        The set's folder, how many images it holds now, whether an earlier label map was replaced.

    Raises:
        ValueError: a bad set name, or label map and image of different sizes (one line).
        FileExistsError: the set holds ``stem`` already and ``overwrite`` is False.
        DatasetError: the set's ``dataset.json`` is not valid JSON (nothing is written).
        ImageError: more than 65535 glands. OSError: the disk refused (nothing half-written).
    """
    folder = set_folder(root, name)
    if np.shape(labels) != np.shape(image)[:2]:
        raise ValueError(
            f"the label map is {np.shape(labels)[1]}×{np.shape(labels)[0]} but the image is "
            f"{np.shape(image)[1]}×{np.shape(image)[0]}"
        )
    key = safe_stem(stem)
    lab_path, img_path = label_path(folder, key), folder / IMAGES / f"{key}.png"
    data = label_map_bytes(renumber(labels))
    (folder / LABELS).mkdir(parents=True, exist_ok=True)
    (folder / IMAGES).mkdir(exist_ok=True)
    with FileLock(folder / ".save.lock"):
        existed = lab_path.exists()
        if existed and not overwrite:
            raise FileExistsError(
                f"{folder.name} already holds an annotation of {key}; tick “Replace” to overwrite it"
            )
        spec = merged_spec(_read_spec_dict(folder / SPEC_FILE), key, mpp)
        atomic_write_bytes(img_path, png_bytes(np.ascontiguousarray(image[..., :3])))
        atomic_write_bytes(lab_path, data)
        atomic_write_text(folder / SPEC_FILE, json.dumps(spec, indent=2) + "\n")
    return SavedImage(folder, len(set_images(folder)), existed, key)
