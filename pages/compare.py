"""Compare: U-Net and Mask R-CNN side by side on one image, with their disagreement and, when known, scores."""

import json

import numpy as np
import streamlit as st

import ui_cache
from glandseg_core import export, metrics
from glandseg_core.infer import ModelError
from glandseg_core.io import ImageError, label_png_bytes, png_bytes

SWATCH = '<span style="display:inline-block;width:.9em;height:.9em;background:rgb{};border-radius:2px;vertical-align:-.1em"></span>'


def count(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def legend(items: dict[str, tuple[int, int, int]]) -> None:
    st.markdown(
        " &nbsp; ".join(f"{SWATCH.format(c)} {name}" for name, c in items.items()),
        unsafe_allow_html=True,
    )


ui_cache.ensure_router()
st.title("Compare U-Net and Mask R-CNN")
with st.sidebar:
    picked = ui_cache.pick_image("cmp", st.sidebar)
    gt, gt_name = ui_cache.pick_ground_truth(picked, "cmp", st.sidebar) if picked else (None, "none")
    st.subheader("Display")
    alpha = st.slider("Mask opacity", 0.0, 1.0, 0.4, 0.05, key="cmp_alpha")
    outlines = st.toggle("Outlines", value=True, key="cmp_outlines")
    show_ids = st.toggle("Gland ids", value=False, key="cmp_ids")
    by_outcome = gt is not None and st.toggle(
        "Colour by outcome",
        value=True,
        key="cmp_outcome",
        help="Green: found (TP), red: false (FP), blue: missed",
    )
    tta = st.checkbox(
        "Test-time augmentation", key="cmp_tta", help="Average 8 flips/rotations (8× slower)"
    )

if picked is None:
    st.info("Upload an H&E image (PNG, JPEG, TIFF or BMP) in the sidebar, or pick a bundled sample.")
    st.stop()

image = picked.image
h, w = image.shape[:2]
facts = [f"**{picked.stem}**", f"{w}×{h} px"]
if picked.grade != "unknown":
    facts.append(f"GlaS grade: {picked.grade}")
facts.append("no ground truth" if gt is None else f"ground truth: {gt_name} ({count(gt)} glands)")
st.caption(" · ".join(facts))

if by_outcome:
    colours = export.OUTCOME_COLOURS
    legend({"found (TP)": colours["TP"], "false (FP)": colours["FP"], "missed (FN)": colours["FN"]})
results: dict[str, tuple] = {}
n_truth = None if gt is None else count(gt)
for col, (role, title) in zip(st.columns(2, gap="medium"), ui_cache.ROLES.items(), strict=True):
    with col:
        st.subheader(title)
        names, default = ui_cache.model_choices(role)
        root = ui_cache.models_root()
        if default is None:
            st.warning(
                f"No {title} model: the folder `{root / role}` is missing or has no `weights.pt`."
            )
        name = st.selectbox("Model folder", names, index=default, key=f"cmp_model_{role}",
                            placeholder="Pick another model folder") if names else None  # fmt: skip
        if name is None:
            st.caption("Train one on the Train page and promote it, or set GLANDSEG_MODELS.")
            continue
        model_dir = str(root / name)
        try:
            with st.spinner(f"Segmenting with {name}…"):
                labels, seconds = ui_cache.segment(
                    model_dir, image, tta, ui_cache.model_stamp(model_dir)
                )
        except (ModelError, ImageError, ValueError, RuntimeError, ImportError, OSError) as e:
            st.error(f"{name}: {e}")
            continue
        results[role] = (title if name == role else f"{title} ({name})", labels)
        if by_outcome:
            outcome = metrics.object_outcomes(labels, gt)
            view = export.outcome_overlay(image, labels, gt, outcome, alpha=alpha, outlines=outlines)
        else:
            view = export.overlay(image, labels, alpha=alpha, outlines=outlines, ids=show_ids)
        st.image(view, caption=f"{name}: {title} overlay", width="stretch")
        m = st.columns(2)
        delta = None if n_truth is None else f"{count(labels) - n_truth:+d} vs ground truth"
        m[0].metric("Glands", count(labels), delta=delta, delta_color="off", delta_arrow="off")
        m[1].metric("Inference", f"{seconds:.2f} s", help="Model time on this machine; cached on reruns")
        if gt is not None:
            s = metrics.score_image(labels, gt)
            m = st.columns(3)
            m[0].metric("F1", f"{s.f1:.3f}", help=f"TP {s.tp} · FP {s.fp} · missed {s.fn}")
            m[1].metric("Object Dice", f"{s.object_dice:.3f}")
            m[2].metric("Object Hausdorff", f"{s.object_hausdorff:.1f} px")
        stem = f"{picked.stem}_{name}"
        downloads = [
            ("Label map", label_png_bytes(labels), f"{stem}_labels.png", "image/png", "16-bit PNG, 0 = background, 1..N = glands"),
            ("Overlay", png_bytes(view), f"{stem}_overlay.png", "image/png", "The overlay as shown"),
            ("CSV", export.gland_table(labels).to_csv(index=False), f"{stem}_glands.csv", "text/csv", "One row per gland: area, perimeter, centroid, bbox, shape"),
            ("GeoJSON", json.dumps(export.to_geojson(labels)), f"{stem}.geojson", "application/geo+json", "Gland outlines for QuPath"),
        ]  # fmt: skip
        for c, (label, data, fname, mime, hint) in zip(st.columns(4), downloads, strict=True):
            c.download_button(
                label, data, fname, mime, key=f"dl_{label}_{role}", on_click="ignore", help=hint
            )

st.divider()
left, right = st.columns(2, gap="medium")
with left:
    st.subheader("Where the models disagree")
    if len(results) == 2:
        (name_a, lab_a), (name_b, lab_b) = results["unet"], results["maskrcnn"]
        st.image(export.disagreement_map(image, lab_a, lab_b), width="stretch")
        colours = export.DISAGREEMENT_COLOURS
        legend(
            {
                f"only {name_a}": colours["A only"],
                f"only {name_b}": colours["B only"],
                "both (darkened)": (110, 80, 110),
            }
        )
        agree = ((lab_a > 0) == (lab_b > 0)).mean()
        st.caption(f"The models agree on {agree:.1%} of the pixels (gland vs background).")
    else:
        st.info("Needs both models' results.")
with right:
    if gt is not None:
        st.subheader("Ground truth")
        st.image(
            export.overlay(image, gt, alpha=alpha, outlines=outlines, ids=show_ids),
            caption=gt_name,
            width="stretch",
        )
    else:
        st.subheader("Input image")
        st.image(image, width="stretch")
