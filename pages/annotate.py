"""Annotate: turn a model's prediction (or a blank canvas) into ground truth: add, erase, split and merge glands,
then save them into a named annotation set (images/, labels/, dataset.json: a data set every command reads)."""

import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from glandseg_core.errors import ImageError, ModelError
from glandseg_core.outputs import overlays
from glandseg_dashboard import (
    annotate_save,
    annotate_tools,
    annotation_sets,
    annotations,
    budget,
    inference,
    label_edits,
    loaders,
    pickers,
    settings,
)

loaders.ensure_router()

st.title("Annotate glands")
names, _ = loaders.model_choices("unet")
with st.sidebar:
    kinds = sorted({budget.model_kind(settings.models_root() / n) for n in names} - {""})
    picked = pickers.pick_image(
        "ann", st.sidebar, limit=pickers.page_limit(kinds or list(settings.ROLES))
    )
    show_ids = st.toggle("Gland ids on the canvas", value=True, key="ann_ids")
if picked is None:
    st.info("Upload an H&E image (PNG, JPEG, TIFF or BMP) in the sidebar, or pick a bundled sample.")
    st.stop()

image = picked.image
shape = image.shape[:2]
size = annotations.canvas_size(shape)
root = settings.annotations_root()

starts = {"empty": "Empty canvas"}
for name in names:
    starts[f"model:{name}"] = f"Prediction of {name}"
if picked.anno_path is not None:
    starts["anno"] = f"GlaS annotation ({picked.anno_path.name})"
for set_name, path in pickers.set_annotations(picked).items():
    starts[f"saved:{path}"] = f"Annotation set {set_name} ({path.name})"
for path in loaders.saved_annotations():
    if path.stem == annotation_sets.safe_stem(picked.stem):
        starts[f"saved:{path}"] = f"Saved annotation ({path.parent.name}/{path.name})"

c = st.columns([3, 2])
tool = c[0].radio(
    "Tool",
    list(annotate_tools.TOOLS),
    horizontal=True,
    key="ann_mode",
    format_func=annotate_tools.TOOLS.get,
)
pickers.sticky("ann_start", list(starts), scope=picked.key)  # kept when the user visits another page
start = c[1].selectbox("Start from", list(starts), format_func=starts.get, key="ann_start")
pickers.remember("ann_start", start, scope=picked.key)
st.caption(annotate_tools.HELP[tool] + " Undo (below the canvas) takes back the last change.")

initial = None
try:
    if start.startswith("model:"):
        name = start.split(":", 1)[1]
        seg = inference.segment(settings.models_root() / name, image, what=f"{picked.stem} with {name}")
        initial = seg.labels
    elif start == "anno" or start.startswith("saved:"):
        path = picked.anno_path if start == "anno" else start.split(":", 1)[1]
        initial = pickers.fit_labels(loaders.load_labels(str(path), None, settings.mtime(path)), picked)
except inference.Cancelled as e:
    st.info(str(e))
    inference.offer_again(image)
    st.stop()
except (ModelError, ImageError, inference.InferenceFailed, ValueError, OSError) as e:
    st.error(f"Cannot start from {starts[start]}: {e}")

editor = annotate_tools.Editor(f"ann_edit_{picked.key}_{start}", initial, shape)
labels = editor.labels
if size[0] < shape[1]:
    st.caption(
        f"The {shape[1]}×{shape[0]} image is shown at {size[0]}×{size[1]}; edits are mapped back to full resolution."
    )
annotate_tools.hide_canvas_toolbar()  # one Undo: ours, which knows the label map
result = st_canvas(
    fill_color=annotations.FILL,
    stroke_width=3 if tool == "split" else 2,
    stroke_color="#ffffff" if tool == "split" else annotations.STROKE,
    background_image=loaders.canvas_background(
        overlays.overlay(image, labels, alpha=0.35, ids=show_ids), size
    ),
    width=size[0],
    height=size[1],
    drawing_mode=annotate_tools.CANVAS_MODE[tool],
    point_display_radius=5,
    key=editor.canvas_key,
)
changed = annotate_tools.apply(tool, result.json_data, labels, size)
if changed is not None:
    editor.set(changed)
    st.rerun()
if tool == "split" and (result.json_data or {}).get("objects"):
    st.warning(
        "That line cuts no gland through: draw it from background to background across the gland."
    )
n = int(np.count_nonzero(np.unique(labels)))
cols = st.columns([1, 2, 1, 1, 1], vertical_alignment="bottom")
cols[0].metric("Glands drawn", n)
if tool == "merge":
    editor.pick(annotate_tools.clicked_ids(result.json_data, labels, size))
    ids = editor.picked
    cols[1].caption(f"Clicked glands: {', '.join(map(str, ids)) or 'none yet'}")
    if ids and cols[1].button("Clear the clicks", key="ann_merge_clear"):
        editor.clear_picked()
        st.rerun()
    if cols[2].button("Merge", type="primary", disabled=len(ids) < 2, key="ann_merge"):
        editor.set(label_edits.merge_ids(labels, ids))
        st.rerun()
if cols[3].button("Undo", disabled=not editor.can_undo(), key="ann_undo", icon=":material/undo:"):
    editor.undo()
    st.rerun()
if cols[4].button("Start over", disabled=not editor.changed(initial), key="ann_reset", icon=":material/restart_alt:",
                  help=f"Back to {starts[start]} (Undo brings the edits back)"):  # fmt: skip
    editor.reset(initial)
    st.rerun()

annotate_save.save_section(picked, labels, n)
