"""Annotate: draw gland outlines (or correct a model's prediction) and save them as an instance label map."""

import numpy as np
import streamlit as st

from glandseg_core import annotations, export
from glandseg_core.errors import ImageError, ModelError
from glandseg_core.io import label_png_bytes
from ui import budget, inference, loaders, pickers, safepaths, settings

loaders.ensure_router()
from streamlit_drawable_canvas import st_canvas

st.title("Annotate glands")
names, _ = loaders.model_choices("unet")
with st.sidebar:
    kinds = sorted({budget.model_kind(settings.models_root() / n) for n in names} - {""})
    picked = pickers.pick_image(
        "ann", st.sidebar, limit=pickers.page_limit(kinds or list(settings.ROLES))
    )
if picked is None:
    st.info("Upload an H&E image (PNG, JPEG, TIFF or BMP) in the sidebar, or pick a bundled sample.")
    st.stop()

image = picked.image
shape = image.shape[:2]
size = annotations.canvas_size(shape)
root = settings.annotations_root()
saved = annotations.annotation_path(root, picked.stem)

starts = {"empty": "Empty canvas"}
for name in names:
    starts[f"model:{name}"] = f"Prediction of {name}"
if picked.anno_path is not None:
    starts["anno"] = f"GlaS annotation ({picked.anno_path.name})"
if saved.exists():
    starts["saved"] = f"Saved annotation ({saved.parent.name}/{saved.name})"

c = st.columns([2, 3])
mode = c[0].radio(
    "Tool",
    ["polygon", "freedraw"],
    horizontal=True,
    key="ann_mode",
    format_func={"polygon": "Polygon", "freedraw": "Freehand"}.get,
)
start = c[1].selectbox("Start from", list(starts), format_func=starts.get, key=f"ann_start_{picked.key}")
st.caption(
    "**Polygon**: click each vertex and click the first one again to close the gland. **Freehand**: trace the "
    "outline in one stroke; the enclosed area becomes the gland. Every closed shape is one gland. The canvas "
    "toolbar has undo/redo and an edit toggle to move, reshape (drag vertices) or delete shapes."
)

initial = None
try:
    if start.startswith("model:"):
        name = start.split(":", 1)[1]
        seg = inference.segment(settings.models_root() / name, image, what=f"{picked.stem} with {name}")
        initial = loaders.initial_drawing(seg.labels, size)
    elif start in ("anno", "saved"):
        path = picked.anno_path if start == "anno" else saved
        labels0 = loaders.load_labels(str(path), None, settings.mtime(path))
        initial = loaders.initial_drawing(pickers.fit_labels(labels0, picked), size)
except inference.Cancelled as e:
    st.info(str(e))
except (ModelError, ImageError, inference.InferenceFailed, ValueError, OSError) as e:
    st.error(f"Cannot start from {starts[start]}: {e}")

if size[0] < shape[1]:
    st.caption(
        f"The {shape[1]}×{shape[0]} image is shown at {size[0]}×{size[1]}; outlines are mapped back to full resolution."
    )
st.write("")  # room for the canvas toolbar, which floats above the canvas
result = st_canvas(
    fill_color=annotations.FILL,
    stroke_width=2,
    stroke_color=annotations.STROKE,
    background_image=loaders.canvas_background(image, size),
    width=size[0],
    height=size[1],
    drawing_mode=mode,
    initial_drawing=initial,
    return_image_data=True,
    key=f"canvas_{picked.key}_{start}",
)
if result.json_data is not None:
    labels = annotations.drawing_to_labels(result.json_data, shape, size)
else:
    labels = annotations.image_data_to_labels(result.image_data, shape)
n = int(np.count_nonzero(np.unique(labels)))
st.metric("Glands drawn", n)
if st.toggle("Preview the label map (each gland with its id)", key="ann_preview"):
    st.image(export.overlay(image, labels, alpha=0.45, ids=True), width="stretch")

st.subheader("Save")
if "ann_message" in st.session_state:
    st.success(st.session_state.pop("ann_message"))
cols = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
path, exists, confirm = None, False, False
if settings.read_only():
    cols[0].caption(
        "This deployment is read-only: nothing is saved on the server. Download the label map instead."
    )
else:
    fname = cols[0].text_input(
        "File name", saved.name, key=f"ann_file_{picked.key}", help=f"Saved under {root}"
    )
    try:
        path = safepaths.output_file(root, fname, ".png", "File name")
    except ValueError as e:
        st.error(str(e))
    exists = path is not None and path.exists()
    confirm = (
        cols[1].checkbox(f"Replace the saved {path.name}", key=f"ann_overwrite_{path.name}")
        if exists
        else True
    )
    if cols[2].button("Save", type="primary", disabled=n == 0 or not confirm or path is None):
        try:
            annotations.save_annotation(labels, path, overwrite=exists and confirm)
            pickers.drawn_annotations()[picked.key] = labels
            where = f"Saved {n} glands to {path}."
            st.session_state["ann_message"] = (
                f"{where} The Compare page offers it as ground truth for {picked.stem}."
            )
            st.rerun()
        except (FileExistsError, ImageError, OSError) as e:
            st.error(str(e))
out_name = path.name if path is not None else saved.name
cols[3].download_button(
    "Download", label_png_bytes(labels), out_name, "image/png", on_click="ignore", disabled=n == 0
)
if exists and not confirm:
    st.caption(f"`{path}` exists already: tick the box to replace it.")
if st.button("Use as ground truth on Compare (without saving)", disabled=n == 0):
    pickers.drawn_annotations()[picked.key] = labels
    st.success("Done: choose “Drawn on the Annotate page” under Ground truth on the Compare page.")
