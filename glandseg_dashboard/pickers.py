"""The image and ground-truth choosers shared by the Compare and Annotate pages, with the pixel budget.

An image whose segmentation would exceed the machine's budget (:mod:`glandseg_dashboard.budget`) is refused with a plain
explanation, or, when the user ticks the box that names the new size, worked on downsampled; ``Picked.scale``
(original / working size) then converts measurements back to the original image's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import streamlit as st

from glandseg_core.errors import ImageError
from glandseg_core.imaging.scale_estimate import MppEstimate, check_mpp, estimate_mpp

from . import annotation_sets, budget, settings
from .loaders import (
    UPLOAD_TYPES,
    Source,
    decode_upload,
    decode_upload_labels,
    glas_grade,
    glas_sources,
    image_size,
    load_image,
    load_labels,
    load_working,
    sample_sources,
    saved_annotations,
)
from .settings import mtime


@dataclass
class Picked:
    """The image chosen on a page: ``image`` is the working copy (uint8[h, w, 3]); ``scale`` = original / working
    size (1.0 unless the user agreed to downsample an image above the budget)."""

    key: str
    stem: str
    image: np.ndarray
    anno_path: Path | None
    grade: str
    original_shape: tuple[int, int] = (0, 0)
    scale: float = 1.0
    split: str = ""  # testA, testB, val, train; "" for an upload
    source: str = ""  # sample, glas or upload


def page_limit(kinds: list[str] | tuple[str, ...], tta: bool = False) -> int:
    """The largest image (pixels) every model of a page can segment now: each kind's own folder under the
    models root when it exists (its config says its size), else the kind's largest preset."""
    now = budget.current_budget()
    root = settings.models_root()
    return min(
        (now.max_pixels(k, tta, budget.folder_cost(root / k)) for k in kinds or ("unet",)), default=0
    )


def _fit(key: str, shape: tuple[int, int], limit: int) -> tuple[int, int]:
    """The working size of an image above ``limit``, once the user agreed; stops the page until then."""
    h, w = shape
    size_key = f"working_size_{key}"
    if size_key in st.session_state:
        return st.session_state[size_key]
    if limit < budget.MIN_PIXELS:
        st.error(f"This machine has too little free memory to segment images now (budget {limit:,} px).")
        st.stop()
    nh, nw = budget.fit_size(shape, limit)
    st.warning(
        f"This image is {w}×{h} px ({h * w / 1e6:.1f} megapixels). Segmenting it would need more memory than "
        f"this machine allows for one interactive job ({limit / 1e6:.1f} megapixels now). Use the command line "
        "(`glandseg predict`) for the full resolution, or work on a downsampled copy."
    )
    if not st.checkbox(
        f"Downsample to {nw}×{nh} px (areas and outlines are converted back to the original pixels)",
        key=f"downsample_ok_{key}",
    ):
        st.stop()
    st.session_state[size_key] = (nh, nw)
    return nh, nw


def _load(
    key: str, src: str | bytes, name: str, limit: int, stamp: float
) -> tuple[np.ndarray, tuple, float]:
    """(working image, original (h, w), scale) of a file path or upload bytes. Raises ImageError."""
    shape = image_size(src, name)
    if shape is not None and shape[0] * shape[1] > limit:
        size = _fit(key, shape, limit)
        return load_working(src, name, size, stamp), shape, shape[0] / size[0]
    image = decode_upload(src, name) if isinstance(src, bytes) else load_image(src, stamp)
    if image.shape[0] * image.shape[1] > limit:  # a header Pillow could not read: checked once decoded
        size = _fit(key, image.shape[:2], limit)
        return budget.downsample(image, size), image.shape[:2], image.shape[0] / size[0]
    return image, image.shape[:2], 1.0


def pick_image(
    prefix: str, where: st.delta_generator.DeltaGenerator | None = None, *, limit: int
) -> Picked | None:
    """Widgets to choose a bundled sample, a GlaS image (when ``$GLANDSEG_DATA`` is set) or an upload.

    Args:
        prefix: widget key prefix. where: the container of the widgets (default: the page).
        limit: the page's pixel budget (:func:`page_limit`).

    Returns:
        The picked image, or None (nothing uploaded yet, or an unreadable upload: ``st.error`` says why).
    """
    box = where or st
    samples, glas = sample_sources(), glas_sources()
    kinds = (["Bundled sample"] if samples else []) + (["GlaS dataset"] if glas else []) + ["Upload"]
    sticky(f"{prefix}_kind", kinds)  # kept when the user visits another page
    kind = box.radio("Image", kinds, key=f"{prefix}_kind", horizontal=True)
    remember(f"{prefix}_kind", kind)
    if kind == "Upload":
        up = box.file_uploader(
            "H&E image (PNG, JPEG, TIFF, BMP)",
            type=UPLOAD_TYPES,
            key=f"{prefix}_upload",
            help="Up to 50 MB and 100 megapixels.",
        )
        return None if up is None else _from_upload(up, limit)
    options = {s.key: s for s in (samples if kind == "Bundled sample" else glas)}
    sticky(f"{prefix}_{kind[:6]}", list(options))
    choice = box.selectbox(
        "Sample" if kind == "Bundled sample" else "GlaS image",
        list(options),
        key=f"{prefix}_{kind[:6]}",
        format_func=lambda k: options[k].label,
    )
    remember(f"{prefix}_{kind[:6]}", choice)
    return _from_source(options[choice], limit)


def pick_arrival(prefix: str, *, limit: int) -> Picked | None:
    """The Compare page's arrival: a drop zone for one's own image beside a list of bundled samples and GlaS
    images (test images first, training images marked). An upload wins while it is there.

    Returns:
        The picked image, or None (an unreadable upload: ``st.error`` says why).
    """
    sources = sample_sources() + glas_sources()
    left, right = st.columns([3, 2], gap="medium")
    up = left.file_uploader(
        "Drop your own H&E image here, or browse (PNG, JPEG, TIFF, BMP; up to 50 MB and 100 megapixels)",
        type=UPLOAD_TYPES,
        key=f"{prefix}_upload",
    )
    options = {s.key: s for s in sources}
    sticky(f"{prefix}_source", list(options))
    choice = right.selectbox(
        "…or look at a bundled sample or a GlaS image",
        list(options),
        key=f"{prefix}_source",
        format_func=lambda k: options[k].label,
        disabled=up is not None,
        help="Test images first: the models never saw them. Training images are marked: the models learnt "
        "from them, so their scores flatter the models. Remove the uploaded file to pick one.",
    )
    remember(f"{prefix}_source", choice)
    if up is not None:
        return _from_upload(up, limit)
    return None if choice is None else _from_source(options[choice], limit)


def _from_upload(up, limit: int) -> Picked | None:
    key, stem = f"upload:{up.name}:{up.size}", Path(up.name).stem
    try:
        image, shape, scale = _load(key, up.getvalue(), up.name, limit, 0.0)
    except ImageError as e:
        st.error(str(e))
        return None
    return Picked(key, stem, image, None, glas_grade(stem), shape, scale, "", "upload")


def _from_source(s: Source, limit: int) -> Picked | None:
    try:
        image, shape, scale = _load(s.key, str(s.image_path), "", limit, mtime(s.image_path))
    except ImageError as e:
        st.error(str(e))
        return None
    source = s.key.split(":", 1)[0]
    return Picked(
        s.key, s.stem, image, s.anno_path, s.grade or glas_grade(s.stem), shape, scale, s.split, source
    )


def split_note(picked: Picked) -> str | None:
    """What a reader must know about the picked image's GlaS split (None for test images and uploads)."""
    if picked.split == "train":
        return (
            f"**{picked.stem} is a GlaS training image**: both models learnt from it, so its scores are "
            "better than on glands they have never seen. Pick a Test A or Test B image to judge them."
        )
    if picked.split == "val":
        return (
            f"**{picked.stem} is a GlaS validation image**: held out of training, but used "
            "to choose the checkpoint and the post-processing thresholds, so its scores are slightly flattering."
        )
    return None


@st.cache_data(show_spinner=False, max_entries=16)  # the image array is the key
def _nuclear_estimate(image: np.ndarray) -> MppEstimate:
    return estimate_mpp(image)


def mpp_check(picked: Picked, mpp: float) -> tuple[str, str | None]:
    """The pixel size that the picked image's nuclear size suggests, as a caption for the pixel size field, and a
    warning when it and ``mpp`` (the original image's µm/px) differ by more than 1.5x (None: they agree, or the
    estimate is unreliable)."""
    est = _nuclear_estimate(picked.image)  # of the working copy: ``scale`` original pixels a pixel
    if not est.reliable:
        return f"Nuclei: no estimate ({est.reason})", None
    est = replace(est, mpp=est.mpp / picked.scale)
    return f"Nuclei suggest ≈ {est.mpp:.2f} µm/px", check_mpp(picked.image, mpp, estimate=est)


def drawn_annotations() -> dict[str, np.ndarray]:
    """Label maps drawn on the Annotate page in this session, by image key."""
    if "drawn_annotations" not in st.session_state:
        st.session_state["drawn_annotations"] = {}
    return st.session_state["drawn_annotations"]


def fit_labels(labels: np.ndarray, picked: Picked) -> np.ndarray:
    """A label map of the picked image at its working size (downsampled by nearest neighbour if needed).

    Raises:
        ImageError: the map fits neither the original nor the working size.
    """
    work = picked.image.shape[:2]
    if labels.shape != work and labels.shape == tuple(picked.original_shape):
        return budget.downsample_labels(labels, work)
    if labels.shape != work:
        raise ImageError(
            f"the label map is {labels.shape[1]}×{labels.shape[0]} but the image is {work[1]}×{work[0]}"
        )
    return labels


def set_annotations(picked: Picked) -> dict[str, Path]:
    """Label maps of the picked image saved in annotation sets (set name -> file), newest first; only those of
    the image's original or working size."""
    sizes = {tuple(picked.original_shape), tuple(picked.image.shape[:2])}
    root = settings.annotations_root()
    return {
        p.parent.parent.name: p
        for p in annotation_sets.saved_label_maps(root, picked.stem)
        if image_size(str(p)) in sizes
    }


def _gt_options(picked: Picked) -> dict[str, str]:
    options: dict[str, str] = {}
    if picked.anno_path is not None:
        options["anno"] = f"GlaS annotation ({picked.anno_path.name})"
    for name, p in set_annotations(picked).items():
        options[f"saved:{p}"] = f"Annotation set {name} ({p.name})"
    if picked.key in drawn_annotations():
        options["drawn"] = "Drawn on the Annotate page (this session)"
    for p in saved_annotations():
        if p.stem == picked.stem:
            options[f"saved:{p}"] = f"Saved annotation ({p.parent.name}/{p.name}, read-only)"
    options["none"] = "None"
    options["upload"] = "Upload an annotation file…"
    return options


def _gt_labels(picked: Picked, choice: str, box, prefix: str) -> np.ndarray | None:
    """The chosen ground truth at the original size (None: none chosen yet). Raises ImageError."""
    shape = picked.original_shape
    if choice == "anno" and picked.anno_path is not None:
        return load_labels(str(picked.anno_path), shape, mtime(picked.anno_path))
    if choice == "drawn":
        return drawn_annotations()[picked.key]
    if choice.startswith("saved:"):
        path = choice.split(":", 1)[1]
        return load_labels(path, None, mtime(path))
    if choice == "upload":
        up = box.file_uploader(
            "Annotation (label map)", type=["png", "tif", "tiff", "bmp"], key=f"{prefix}_gt_upload"
        )
        return None if up is None else decode_upload_labels(up.getvalue(), up.name, shape)
    return None


def pick_ground_truth(
    picked: Picked, prefix: str, where: st.delta_generator.DeltaGenerator | None = None
) -> tuple[np.ndarray | None, str]:
    """Widgets to choose the ground truth of ``picked``: its GlaS annotation, one drawn or saved on the
    Annotate page, an uploaded label map, or none.

    Returns:
        (int32[h, w] label map at the working size, or None; its description).
    """
    box = where or st
    options = _gt_options(picked)
    key = f"{prefix}_gt"  # one key for every image: a new image never leaves a stale selector behind
    sticky(key, list(options), scope=picked.key)
    choice = box.selectbox(
        "Ground truth",
        list(options),
        key=key,
        format_func=lambda k: options[k],
        help="Label map: one integer id per gland, 0 = background, same size as the image. Label maps saved "
        "in an annotation set on the Annotate page are offered for the image of the same name and size.",
    )
    remember(key, choice, scope=picked.key)
    try:
        labels = _gt_labels(picked, choice, box, prefix)
    except ImageError as e:
        st.error(str(e))
        return None, "none"
    if labels is None:
        return None, "none"
    try:
        labels = fit_labels(labels, picked)
    except ImageError as e:
        st.error(f"{options[choice]}: {e}")
        return None, "none"
    desc = "Uploaded annotation" if choice == "upload" else options[choice]
    return labels, desc


# ------------------------------------------------------------------------- choices that survive page switches

KEPT = "_kept_choices"


def sticky(key: str, options: list, scope: str = "", default: object = None) -> None:
    """Before a selectbox or radio with ``key`` is drawn: restore the choice remembered for ``scope`` (e.g. the
    image) when the widget's own state is gone (Streamlit drops the state of widgets a page switch left
    unrendered) or belongs to another scope. Pair with :func:`remember` after the widget."""
    kept = st.session_state.setdefault(KEPT, {})
    scope_key = f"{KEPT}_scope_{key}"
    current = st.session_state.get(key)
    if current in options and st.session_state.get(scope_key) == scope:
        return
    want = kept.get((key, scope))
    fallback = default if default in options else (options[0] if options else None)
    if fallback is not None or want in options:
        st.session_state[key] = want if want in options else fallback
    st.session_state[scope_key] = scope


def remember(key: str, value: object, scope: str = "") -> None:
    """Keep a widget's choice for ``scope`` outside the widget state (see :func:`sticky`)."""
    st.session_state.setdefault(KEPT, {})[(key, scope)] = value


def sticky_value(key: str, default: object, scope: str = "") -> None:
    """Before a number or text input with ``key`` is drawn: its remembered value (else ``default``) when the
    widget's own state is gone. Pair with :func:`remember`."""
    if key not in st.session_state:
        kept = st.session_state.setdefault(KEPT, {}).get((key, scope))
        st.session_state[key] = default if kept is None else kept
