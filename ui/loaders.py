"""Cached loaders and discovery for the dashboard (the only module with ``st.cache_*``).

Folders (each overridable by an environment variable, for tests and deployments):
models ``GLANDSEG_MODELS`` (default ``trained_models/`` beside this file; the two roles are the folders
``unet/`` and ``maskrcnn/``), GlaS ``GLANDSEG_DATA``, runs ``GLANDSEG_RUNS`` (default ``runs/``) and saved
annotations ``GLANDSEG_ANNOTATIONS`` (default ``annotations/``).
Never reads ``st.session_state`` inside a cached function (it is not part of the cache key).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from glandseg_core import infer
from glandseg_core.data import DatasetError, GlasItem, find_items, read_grades, single_id_annotations
from glandseg_core.io import ImageError, read_image, read_label_map

APP_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = APP_DIR / "samples"
ROLES = {"unet": "U-Net", "maskrcnn": "Mask R-CNN"}
SAMPLE_GRADES = {"testA_1": "benign", "testA_13": "malignant", "testB_2": "malignant"}
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


def _env_dir(var: str, default: str) -> Path:
    raw = os.environ.get(var)
    return Path(raw).expanduser() if raw else APP_DIR / default


def models_root() -> Path:
    """``$GLANDSEG_MODELS`` or ``trained_models/`` beside app.py."""
    return _env_dir("GLANDSEG_MODELS", "trained_models")


def runs_root() -> Path:
    """``$GLANDSEG_RUNS`` or ``runs/`` beside app.py."""
    return _env_dir("GLANDSEG_RUNS", "runs")


def annotations_dir() -> Path:
    """``$GLANDSEG_ANNOTATIONS`` or ``annotations/`` beside app.py."""
    return _env_dir("GLANDSEG_ANNOTATIONS", "annotations")


def model_dirs() -> dict[str, Path]:
    """Model folders (with a ``weights.pt``) under the models root, by folder name."""
    return {p.name: p for p in infer.list_model_dirs(models_root())}


def model_choices(role: str) -> tuple[list[str], int | None]:
    """Folder names for a panel, the role's own folder first, and the default index (None: role missing)."""
    names = sorted(model_dirs())
    if role in names:
        return [role, *[n for n in names if n != role]], 0
    return names, None


def model_stamp(model_dir: str | Path) -> float:
    """Modification time of a model's weights (part of the cache keys, so replaced weights reload)."""
    p = Path(model_dir) / infer.WEIGHTS
    return p.stat().st_mtime if p.exists() else 0.0


@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def get_run(model_dir: str, stamp: float = 0.0) -> infer.Run:
    """A loaded model, shared by all sessions (eval mode, never mutated). ``stamp``: see :func:`model_stamp`."""
    return infer.load_run(Path(model_dir))


@st.cache_data(show_spinner=False, max_entries=24)
def segment(
    model_dir: str, image: np.ndarray, tta: bool = False, stamp: float = 0.0
) -> tuple[np.ndarray, float]:
    """Label map (int32[H, W], 0=background, 1..N glands) of ``image`` and the inference time in seconds."""
    run = get_run(model_dir, stamp)
    t0 = time.perf_counter()
    labels = infer.predict(run, image, tta=tta)
    return labels, time.perf_counter() - t0


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


def sample_sources() -> list[Source]:
    """The bundled GlaS samples (``samples/<name>.png`` + ``<name>_anno.png``)."""
    out = []
    for p in sorted(SAMPLES_DIR.glob("*.png")):
        if p.stem.endswith("_anno"):
            continue
        anno = p.with_name(f"{p.stem}_anno.png")
        grade = SAMPLE_GRADES.get(p.stem, "unknown")
        out.append(
            Source(
                f"sample:{p.stem}",
                f"{p.stem} ({grade})",
                p.stem,
                p,
                anno if anno.exists() else None,
                grade,
            )
        )
    return out


@st.cache_data(ttl=300, show_spinner=False)
def _glas_items(root: str) -> list[GlasItem]:
    items: list[GlasItem] = []
    for split in ("train", "val", "testA", "testB"):
        try:
            items += find_items(root, (split,))
        except DatasetError:
            continue  # an incomplete split: offer the others
    return items


def glas_sources() -> list[Source]:
    """Every image of ``$GLANDSEG_DATA`` (empty when it is not set or not a GlaS folder)."""
    root = os.environ.get("GLANDSEG_DATA")
    if not root or not Path(root).is_dir():
        return []
    return [
        Source(
            f"glas:{it.name}",
            f"{it.name} ({it.split}, {it.grade})",
            it.name,
            it.image_path,
            it.anno_path,
            it.grade,
        )
        for it in _glas_items(str(Path(root).resolve()))
    ]


@st.cache_data(ttl=300, show_spinner=False)
def _single_id(root: str) -> list[str]:
    return single_id_annotations([it for it in _glas_items(root) if it.split in ("testA", "testB")])


def single_id_images() -> list[str]:
    """Test images of ``$GLANDSEG_DATA`` annotated with one id for all glands (each scores as one object)."""
    root = os.environ.get("GLANDSEG_DATA")
    if not root or not Path(root).is_dir():
        return []
    return _single_id(str(Path(root).resolve()))


def glas_grade(stem: str) -> str:
    """GlaS grade of an image name from ``$GLANDSEG_DATA/Grade.csv`` or the samples, else ``unknown``."""
    root = os.environ.get("GLANDSEG_DATA")
    grades = read_grades(Path(root)) if root and Path(root).is_dir() else {}
    return grades.get(stem) or SAMPLE_GRADES.get(stem, "unknown")


@st.cache_data(show_spinner=False, max_entries=16)
def load_image(path: str, mtime: float = 0.0) -> np.ndarray:
    """uint8[H, W, 3] RGB of an image file. Raises ImageError."""
    return read_image(path)


@st.cache_data(show_spinner=False, max_entries=16)
def load_labels(path: str, shape: tuple[int, int] | None = None, mtime: float = 0.0) -> np.ndarray:
    """int32[H, W] label map (0=background, 1..N glands) of a file. Raises ImageError."""
    return read_label_map(path, shape=shape)


@st.cache_data(show_spinner=False, max_entries=8)
def decode_upload(data: bytes, name: str) -> np.ndarray:
    """uint8[H, W, 3] RGB of uploaded bytes. Raises ImageError (one line)."""
    return read_image(data, name=name)


def decode_upload_labels(data: bytes, name: str, shape: tuple[int, int]) -> np.ndarray:
    """int32[H, W] label map of an uploaded annotation of an image of ``shape``. Raises ImageError."""
    return read_label_map(data, name=name, shape=shape)


def saved_annotations() -> list[Path]:
    """Label maps saved by the Annotate page (newest first)."""
    root = annotations_dir()
    files = [p for p in root.glob("*.png") if p.is_file()] if root.is_dir() else []
    return sorted(files, key=lambda p: -p.stat().st_mtime)


def file_mtime(path: str | Path) -> float:
    p = Path(path)
    return p.stat().st_mtime if p.exists() else 0.0


@dataclass
class Picked:
    """The image chosen on a page."""

    key: str
    stem: str
    image: np.ndarray
    anno_path: Path | None
    grade: str


def pick_image(prefix: str, where: st.delta_generator.DeltaGenerator | None = None) -> Picked | None:
    """Widgets to choose a bundled sample, a GlaS image (when ``$GLANDSEG_DATA`` is set) or an upload.

    Shows ``st.error`` with the one-line reason for an unreadable upload and returns None then.
    """
    box = where or st
    samples, glas = sample_sources(), glas_sources()
    kinds = (["Bundled sample"] if samples else []) + (["GlaS dataset"] if glas else []) + ["Upload"]
    kind = box.radio("Image", kinds, key=f"{prefix}_kind", horizontal=True)
    if kind == "Upload":
        up = box.file_uploader(
            "H&E image (PNG, JPEG, TIFF, BMP)",
            type=UPLOAD_TYPES,
            key=f"{prefix}_upload",
            help="Up to 50 MB and 100 megapixels.",
        )
        if up is None:
            return None
        try:
            image = decode_upload(up.getvalue(), up.name)
        except ImageError as e:
            st.error(str(e))
            return None
        stem = Path(up.name).stem
        return Picked(f"upload:{up.name}:{up.size}", stem, image, None, glas_grade(stem))
    options = {s.key: s for s in (samples if kind == "Bundled sample" else glas)}
    key = box.selectbox(
        "Sample" if kind == "Bundled sample" else "GlaS image",
        list(options),
        key=f"{prefix}_{kind[:6]}",
        format_func=lambda k: options[k].label,
    )
    src = options[key]
    try:
        image = load_image(str(src.image_path), file_mtime(src.image_path))
    except ImageError as e:
        st.error(str(e))
        return None
    return Picked(src.key, src.stem, image, src.anno_path, src.grade)


def drawn_annotations() -> dict[str, np.ndarray]:
    """Label maps drawn on the Annotate page in this session, by image key."""
    if "drawn_annotations" not in st.session_state:
        st.session_state["drawn_annotations"] = {}
    return st.session_state["drawn_annotations"]


def pick_ground_truth(
    picked: Picked, prefix: str, where: st.delta_generator.DeltaGenerator | None = None
) -> tuple[np.ndarray | None, str]:
    """Widgets to choose the ground truth of ``picked``: its GlaS annotation, one drawn or saved on the
    Annotate page, an uploaded label map, or none. Returns (int32[H, W] label map or None, description)."""
    box = where or st
    shape = picked.image.shape[:2]
    options: dict[str, str] = {}
    if picked.anno_path is not None:
        options["anno"] = f"GlaS annotation ({picked.anno_path.name})"
    if picked.key in drawn_annotations():
        options["drawn"] = "Drawn on the Annotate page (this session)"
    saved = [p for p in saved_annotations() if p.stem == picked.stem]
    for p in saved:
        options[f"saved:{p}"] = f"Saved annotation ({p.parent.name}/{p.name})"
    options["none"] = "None"
    options["upload"] = "Upload an annotation file…"
    choice = box.selectbox(
        "Ground truth",
        list(options),
        key=f"{prefix}_gt_{picked.key}",
        format_func=lambda k: options[k],
        help="Label map: one integer id per gland, 0 = background, same size as the image.",
    )
    try:
        if choice == "anno" and picked.anno_path is not None:
            return load_labels(str(picked.anno_path), shape, file_mtime(picked.anno_path)), options[
                choice
            ]
        if choice == "drawn":
            return drawn_annotations()[picked.key], options[choice]
        if choice.startswith("saved:"):
            path = choice.split(":", 1)[1]
            return load_labels(path, shape, file_mtime(path)), options[choice]
        if choice == "upload":
            up = box.file_uploader(
                "Annotation (label map)", type=["png", "tif", "tiff", "bmp"], key=f"{prefix}_gt_upload"
            )
            if up is not None:
                return decode_upload_labels(
                    up.getvalue(), up.name, shape
                ), f"Uploaded annotation ({up.name})"
    except ImageError as e:
        st.error(str(e))
    return None, "none"


@st.cache_data(show_spinner=False, max_entries=16)
def initial_drawing(labels: np.ndarray, size: tuple[int, int]) -> dict:
    """Editable canvas polygons of a label map (see ``annotations.labels_to_drawing``)."""
    from glandseg_core.annotations import labels_to_drawing

    return labels_to_drawing(labels, size)


@st.cache_data(show_spinner=False, max_entries=8)
def canvas_background(image: np.ndarray, size: tuple[int, int]) -> bytes:
    """The image resized to the canvas, as PNG bytes."""
    from PIL import Image

    from glandseg_core.io import png_bytes

    return png_bytes(np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)))
