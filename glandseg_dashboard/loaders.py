"""Cached loaders for the pages: model folders, images, label maps, GlaS and sample sources, canvas helpers.

Folders come from :mod:`glandseg_dashboard.settings`. Never reads ``st.session_state`` inside a cached function (it is not part
of the cache key). Images above the pixel budget are cached only at their working size (:func:`load_working`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from glandseg_core.checkpoints import list_model_dirs
from glandseg_core.datasets.glas import GlasItem, find_items, read_grades, single_id_annotations
from glandseg_core.errors import DatasetError
from glandseg_core.imaging.io import png_bytes, read_image, read_label_map

from . import budget, settings
from .annotation_sets import flat_annotations
from .settings import SAMPLE_GRADES

UPLOAD_TYPES = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"]


def ensure_router() -> None:
    """Make a page opened by its URL on a fresh server run through app.py's ``st.navigation``.

    Streamlit finds the ``pages/`` folder beside app.py and, until some session has run app.py, serves
    ``/train`` etc. with its legacy multipage mode: the page script alone, without app.py's page config and
    navigation (streamlit PR #10276). Switching that process-wide flag off and rerunning lets app.py route.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future Streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def model_dirs() -> dict[str, Path]:
    """Model folders (with a ``weights.pt``) under the models root, by folder name."""
    return {p.name: p for p in list_model_dirs(settings.models_root())}


def model_choices(role: str) -> tuple[list[str], int | None]:
    """Folder names for a panel, the role's own folder first, and the default index (None: role missing)."""
    names = sorted(model_dirs())
    if role in names:
        return [role, *[n for n in names if n != role]], 0
    return names, None


# --------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Source:
    """One image the user can pick: ``key`` is unique (``sample:testA_1``), ``stem`` names saved files."""

    key: str
    label: str
    stem: str
    image_path: Path | None
    anno_path: Path | None
    grade: str = "unknown"
    split: str = ""  # testA, testB, val, train ("" for an upload)


SPLIT_NAMES = {
    "testA": "Test A",
    "testB": "Test B",
    "val": "validation image",
    "train": "training image, seen by the models",
}
SPLIT_ORDER = ("testA", "testB", "val", "train")  # test images first


def split_of(stem: str) -> str:
    """The GlaS split a sample's name tells (``testA_1`` -> ``testA``), else ``""``."""
    head = stem.split("_", 1)[0]
    return head if head in ("testA", "testB", "train") else ""


def sample_sources() -> list[Source]:
    """The bundled GlaS samples (``samples/<name>.png`` + ``<name>_anno.png``)."""
    out = []
    for p in sorted(settings.SAMPLES_DIR.glob("*.png")):
        if p.stem.endswith("_anno"):
            continue
        anno = p.with_name(f"{p.stem}_anno.png")
        grade, split = SAMPLE_GRADES.get(p.stem, "unknown"), split_of(p.stem)
        label = (
            f"{p.stem} (bundled sample, {', '.join(x for x in (SPLIT_NAMES.get(split), grade) if x)})"
        )
        out.append(
            Source(f"sample:{p.stem}", label, p.stem, p, anno if anno.exists() else None, grade, split)
        )
    return sorted(out, key=lambda s: SPLIT_ORDER.index(s.split) if s.split in SPLIT_ORDER else 9)


@st.cache_data(ttl=300, show_spinner=False)
def _glas_items(root: str) -> list[GlasItem]:
    items: list[GlasItem] = []
    for split in SPLIT_ORDER:
        try:
            items += find_items(root, (split,))
        except DatasetError:
            continue  # an incomplete split: offer the others
    return items


def glas_sources() -> list[Source]:
    """Every image of ``$GLANDSEG_DATA``, test images first, training images marked as such in their label
    (empty when it is not set or not a GlaS folder)."""
    root = settings.glas_dir()
    if root is None:
        return []
    return [
        Source(
            f"glas:{it.name}",
            f"{it.name} ({SPLIT_NAMES.get(it.split, it.split)}, {it.grade})",
            it.name,
            it.image_path,
            it.anno_path,
            it.grade,
            it.split,
        )
        for it in _glas_items(str(root.resolve()))
    ]


@st.cache_data(ttl=300, show_spinner=False)
def _single_id(root: str) -> list[str]:
    return single_id_annotations([it for it in _glas_items(root) if it.split in ("testA", "testB")])


def single_id_images() -> list[str]:
    """Test images of ``$GLANDSEG_DATA`` annotated with one id for all glands (each scores as one object)."""
    root = settings.glas_dir()
    return [] if root is None else _single_id(str(root.resolve()))


def glas_grade(stem: str) -> str:
    """GlaS grade of an image name from ``$GLANDSEG_DATA/Grade.csv`` or the samples, else ``unknown``."""
    root = settings.glas_dir()
    grades = read_grades(root) if root is not None else {}
    return grades.get(stem) or SAMPLE_GRADES.get(stem, "unknown")


@st.cache_data(show_spinner=False, max_entries=8)
def load_image(path: str, mtime: float = 0.0) -> np.ndarray:
    """uint8[H, W, 3] RGB of an image file. Raises ImageError."""
    return read_image(path)


@st.cache_data(show_spinner=False, max_entries=16)
def load_labels(path: str, shape: tuple[int, int] | None = None, mtime: float = 0.0) -> np.ndarray:
    """int32[H, W] label map (0=background, 1..N glands) of a file. Raises ImageError."""
    return read_label_map(path, shape=shape)


@st.cache_data(show_spinner=False, max_entries=4)
def decode_upload(data: bytes, name: str) -> np.ndarray:
    """uint8[H, W, 3] RGB of uploaded bytes. Raises ImageError (one line)."""
    return read_image(data, name=name)


def image_size(src: str | bytes, name: str = "") -> tuple[int, int] | None:
    """(height, width) from an image file's header, without decoding it; None when Pillow cannot tell."""
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            return im.height, im.width
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@st.cache_data(show_spinner="Downsampling…", max_entries=4)
def load_working(src: str | bytes, name: str, size: tuple[int, int], mtime: float = 0.0) -> np.ndarray:
    """uint8[h, w, 3] of an image file or upload downsampled to ``size`` = (h, w); only this copy is kept."""
    return budget.downsample(read_image(src, name=name or None), size)


def decode_upload_labels(data: bytes, name: str, shape: tuple[int, int]) -> np.ndarray:
    """int32[H, W] label map of an uploaded annotation of an image of ``shape``. Raises ImageError."""
    return read_label_map(data, name=name, shape=shape)


def saved_annotations() -> list[Path]:
    """Label maps that older dashboards saved flat in the annotations root (read-only; newest first). Today's
    Annotate page saves into named sets (:mod:`glandseg_dashboard.annotation_sets`)."""
    return flat_annotations(settings.annotations_root())


@st.cache_data(show_spinner=False, max_entries=16)
def initial_drawing(labels: np.ndarray, size: tuple[int, int]) -> dict:
    """Editable canvas polygons of a label map (see ``annotations.labels_to_drawing``)."""
    from glandseg_dashboard.annotations import labels_to_drawing

    return labels_to_drawing(labels, size)


@st.cache_data(show_spinner=False, max_entries=8)
def canvas_background(image: np.ndarray, size: tuple[int, int]) -> bytes:
    """The image resized to the canvas, as PNG bytes."""
    return png_bytes(np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)))
