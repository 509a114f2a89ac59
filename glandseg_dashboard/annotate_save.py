"""The Annotate page's Save section: save the label map (and the image, with its pixel size) into a named
annotation set (:mod:`glandseg_dashboard.annotation_sets`), download it, or hand it to Compare unsaved.

UI contract (the browser flows rely on it): a text input labelled "Annotation set", a button "Save to set", and
after a save a success line naming the set's folder and how many images it holds.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from glandseg_core.errors import DatasetError, ImageError

from . import annotation_sets, pickers, settings
from .compare_view import GLAS_MPP

SET_KEY = "ann_set"
_MESSAGE = "ann_message"


def _use_existing() -> None:
    """An existing set clicked: it becomes the set name typed."""
    chosen = st.session_state.get("ann_set_pick")
    if chosen:
        st.session_state[SET_KEY] = chosen
        pickers.remember(SET_KEY, chosen)


def set_name_input(sets: list[str]) -> str:
    """The "Annotation set" field (remembered across pages) with the existing sets one click away."""
    if SET_KEY not in st.session_state:
        kept = st.session_state.get(pickers.KEPT, {}).get((SET_KEY, ""))
        st.session_state[SET_KEY] = kept or (sets[0] if sets else annotation_sets.DEFAULT_SET)
    name = st.text_input("Annotation set", key=SET_KEY)  # no help icon: its label names the field alone
    st.caption(
        "A folder under the annotations root with images/, labels/ and dataset.json: the plain layout that "
        "`glandseg evaluate --data` and `glandseg train --data` read. Letters, digits, '.', '_' and '-'."
    )
    pickers.remember(SET_KEY, name)
    if sets:
        st.pills("Existing sets", sets, key="ann_set_pick", on_change=_use_existing)
    return name


def _mpp_input(picked) -> float:
    """The pixel size of the original image (µm/px), remembered per image."""
    key = f"ann_mpp_{picked.key}"
    pickers.sticky_value(key, GLAS_MPP)
    mpp = st.number_input(
        "Pixel size (µm/px)",
        0.05,
        10.0,
        step=0.01,
        format="%.3f",
        key=key,
        help="Micrometres per pixel of this image (GlaS: 0.62 at 20×), saved in the set's dataset.json so "
        "training and scoring use the image at the right scale.",
    )
    pickers.remember(key, mpp)
    return float(mpp)


def save_section(picked, labels: np.ndarray, n: int) -> None:
    """Save into a set, download, or use as ground truth on Compare without saving."""
    st.subheader("Save")
    if _MESSAGE in st.session_state:
        st.success(st.session_state.pop(_MESSAGE))
    if settings.read_only():
        st.caption(
            "This deployment is read-only: nothing is saved on the server. Download the label map instead."
        )
    else:
        _save_to_set(picked, labels, n)
    left, right = st.columns(2)
    left.download_button(
        "Download",
        annotation_sets.label_map_bytes(annotation_sets.renumber(labels)),
        f"{annotation_sets.safe_stem(picked.stem)}_labels.png",
        "image/png",
        on_click="ignore",
        disabled=n == 0,
        help="The label map: 0 = background, glands 1..N (8-bit PNG, 16-bit above 255 glands)",
    )
    if right.button("Use as ground truth on Compare (without saving)", disabled=n == 0):
        pickers.drawn_annotations()[picked.key] = labels
        st.success("Done: choose “Drawn on the Annotate page” under Ground truth on the Compare page.")


def _save_to_set(picked, labels: np.ndarray, n: int) -> None:
    root = settings.annotations_root()
    left, right = st.columns([3, 1], vertical_alignment="top")
    with left:
        name = set_name_input(annotation_sets.list_sets(root))
    with right:
        mpp = _mpp_input(picked)
    try:
        folder = annotation_sets.set_folder(root, name)
    except ValueError as e:
        st.error(str(e))
        folder = None
    stem = annotation_sets.safe_stem(picked.stem)
    exists = folder is not None and annotation_sets.label_path(folder, stem).exists()
    confirm = True
    if exists and folder is not None:
        confirm = st.checkbox(
            f"Replace the annotation of {stem} in {folder.name} (the set's other images stay as they are)",
            key=f"ann_replace_{folder.name}_{stem}",
        )
    if picked.scale != 1.0:
        st.caption(
            f"Saved as worked on: {picked.image.shape[1]}×{picked.image.shape[0]} px at "
            f"{mpp * picked.scale:.3f} µm/px."
        )
    disabled = n == 0 or folder is None or not confirm
    if st.button("Save to set", type="primary", disabled=disabled, key="ann_save"):
        try:
            saved = annotation_sets.save_to_set(
                root, name, stem, picked.image, labels, mpp * picked.scale, overwrite=exists
            )
        except (FileExistsError, ValueError, DatasetError, ImageError, OSError) as e:
            st.error(str(e))
            return
        pickers.drawn_annotations()[picked.key] = labels
        verb = "Replaced the annotation of" if saved.replaced else "Saved"
        st.session_state[_MESSAGE] = (
            f"{verb} {saved.stem} ({n} glands) in {saved.folder}: the set holds {saved.n_images} "
            f"image{'s' if saved.n_images != 1 else ''}. Compare offers it as ground truth for {picked.stem}; "
            "score it on the Metrics page or train on it from the Train page."
        )
        st.rerun()
    if exists and not confirm:
        st.caption(f"{folder.name} already holds {stem}: tick the box to replace its label map.")
