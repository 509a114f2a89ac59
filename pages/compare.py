"""Compare: U-Net and Mask R-CNN side by side on one image, with their disagreement and, when known, scores."""

import streamlit as st

from glandseg_core import export, metrics
from glandseg_core.errors import ImageError, ModelError
from ui import inference, loaders, panels, pickers, settings

loaders.ensure_router()
st.title("Compare U-Net and Mask R-CNN")
with st.sidebar:
    limit = pickers.page_limit(list(settings.ROLES), tta=True)
    picked = pickers.pick_image("cmp", st.sidebar, limit=limit)
    gt, gt_name = pickers.pick_ground_truth(picked, "cmp", st.sidebar) if picked else (None, "none")
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

image, scale = picked.image, picked.scale
h, w = picked.original_shape
facts = [f"**{picked.stem}**", f"{w}×{h} px"]
if scale != 1.0:
    facts.append(
        f"worked on downsampled to {image.shape[1]}×{image.shape[0]} (sizes in original pixels)"
    )
if picked.grade != "unknown":
    facts.append(f"GlaS grade: {picked.grade}")
n_truth = None if gt is None else panels.count(gt)
facts.append("no ground truth" if gt is None else f"ground truth: {gt_name} ({n_truth} glands)")
st.caption(" · ".join(facts))

if by_outcome:
    colours = export.OUTCOME_COLOURS
    panels.legend(
        {"found (TP)": colours["TP"], "false (FP)": colours["FP"], "missed (FN)": colours["FN"]}
    )
results: dict[str, tuple] = {}
root = settings.models_root()
for col, (role, title) in zip(st.columns(2, gap="medium"), settings.ROLES.items(), strict=True):
    with col:
        st.subheader(title)
        names, default = loaders.model_choices(role)
        if default is None:
            st.warning(
                f"No {title} model: the folder `{root / role}` is missing or has no `weights.pt`."
            )
        name = st.selectbox("Model folder", names, index=default, key=f"cmp_model_{role}",
                            placeholder="Pick another model folder") if names else None  # fmt: skip
        if name is None:
            st.caption("Train one on the Train page and promote it, or set GLANDSEG_MODELS.")
            continue
        try:
            seg = inference.segment(root / name, image, tta=tta, what=f"{picked.stem} with {name}")
        except inference.Cancelled as e:
            st.info(str(e))
            continue
        except (ModelError, ImageError, inference.InferenceFailed, OSError) as e:
            st.error(f"{name}: {e}")
            continue
        labels = seg.labels
        results[role] = (title if name == role else f"{title} ({name})", labels)
        if by_outcome:
            outcome = metrics.object_outcomes(labels, gt)
            view = export.outcome_overlay(image, labels, gt, outcome, alpha=alpha, outlines=outlines)
        else:
            view = export.overlay(image, labels, alpha=alpha, outlines=outlines, ids=show_ids)
        st.image(view, caption=f"{name}: {title} overlay", width="stretch")
        m = st.columns(2)
        delta = None if n_truth is None else f"{panels.count(labels) - n_truth:+d} vs ground truth"
        m[0].metric("Glands", panels.count(labels), delta=delta, delta_color="off", delta_arrow="off")
        m[1].metric(
            "Inference", f"{seg.seconds:.2f} s", help="Model time on this machine; kept for reruns"
        )
        if gt is not None:
            panels.scores(labels, gt, scale)
        panels.downloads(labels, view, f"{picked.stem}_{name}", key=role, scale=scale)

st.divider()
left, right = st.columns(2, gap="medium")
with left:
    st.subheader("Where the models disagree")
    if len(results) == 2:
        (name_a, lab_a), (name_b, lab_b) = results["unet"], results["maskrcnn"]
        st.image(export.disagreement_map(image, lab_a, lab_b), width="stretch")
        colours = export.DISAGREEMENT_COLOURS
        panels.legend({f"only {name_a}": colours["A only"], f"only {name_b}": colours["B only"],
                       "both (darkened)": (110, 80, 110)})  # fmt: skip
        agree = ((lab_a > 0) == (lab_b > 0)).mean()
        st.caption(f"The models agree on {agree:.1%} of the pixels (gland vs background).")
    else:
        st.info("Needs both models' results.")
with right:
    if gt is not None:
        st.subheader("Ground truth")
        view = export.overlay(image, gt, alpha=alpha, outlines=outlines, ids=show_ids)
        st.image(view, caption=gt_name, width="stretch")
    else:
        st.subheader("Input image")
        st.image(image, width="stretch")
