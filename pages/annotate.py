"""Annotate: draw gland outlines (or correct a model's prediction) and save them as an instance label map."""

import numpy as np
import streamlit as st

import ui_cache
from glandseg_core import annotations, export
from glandseg_core.infer import ModelError
from glandseg_core.io import ImageError, label_png_bytes

ui_cache.ensure_router()
from streamlit_drawable_canvas import st_canvas

st.title("Annotate glands")
with st.sidebar:
    picked = ui_cache.pick_image("ann", st.sidebar)
if picked is None:
    st.info("Upload an H&E image (PNG, JPEG, TIFF or BMP) in the sidebar, or pick a bundled sample.")
    st.stop()

image = picked.image
shape = image.shape[:2]
size = annotations.canvas_size(shape)
root = ui_cache.annotations_dir()
saved = annotations.annotation_path(root, picked.stem)

starts = {"empty": "Empty canvas"}
names, _ = ui_cache.model_choices("unet")
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
        model_dir = str(ui_cache.models_root() / start.split(":", 1)[1])
        with st.spinner("Segmenting…"):
            labels0, _ = ui_cache.segment(model_dir, image, False, ui_cache.model_stamp(model_dir))
        initial = ui_cache.initial_drawing(labels0, size)
    elif start == "anno" and picked.anno_path is not None:
        initial = ui_cache.initial_drawing(ui_cache.load_labels(str(picked.anno_path), shape), size)
    elif start == "saved":
        initial = ui_cache.initial_drawing(
            ui_cache.load_labels(str(saved), shape, ui_cache.file_mtime(saved)), size
        )
except (ModelError, ImageError, ValueError, RuntimeError, OSError) as e:
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
    background_image=ui_cache.canvas_background(image, size),
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
fname = cols[0].text_input(
    "File name", saved.name, key=f"ann_file_{picked.key}", help=f"Saved under {root}"
)
path = annotations.annotation_path(root, fname)
exists = path.exists()
confirm = (
    cols[1].checkbox(f"Overwrite {path.name}", key=f"ann_overwrite_{path.name}") if exists else True
)
if cols[2].button("Save", type="primary", disabled=n == 0 or not confirm):
    try:
        annotations.save_annotation(labels, path, overwrite=exists and confirm)
        ui_cache.drawn_annotations()[picked.key] = labels
        st.session_state["ann_message"] = (
            f"Saved {n} glands to {path}. The Compare page offers it as ground truth for {picked.stem}."
        )
        st.rerun()
    except (FileExistsError, ImageError, OSError) as e:
        st.error(str(e))
cols[3].download_button(
    "Download", label_png_bytes(labels), path.name, "image/png", on_click="ignore", disabled=n == 0
)
if exists and not confirm:
    st.caption(f"`{path}` exists already: tick the box to replace it.")
if st.button("Use as ground truth on Compare (without saving)", disabled=n == 0):
    ui_cache.drawn_annotations()[picked.key] = labels
    st.success("Done: choose “Drawn on the Annotate page” under Ground truth on the Compare page.")
