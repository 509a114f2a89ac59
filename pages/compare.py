"""Compare: U-Net and Mask R-CNN side by side on one image, with their disagreement and, when known, scores.

Opens on a bundled test sample (its results computed ahead, see ``glandseg_dashboard.diskcache``), with a drop zone for one's
own image. While the models run, a progress bar with a Cancel button stands where the results will be.
"""

import streamlit as st

from glandseg_core.outputs import overlays
from glandseg_dashboard import compare_view, inference, loaders, panels, pickers, settings

loaders.ensure_router()
st.title("Compare U-Net and Mask R-CNN")
tta = st.session_state.get("cmp_tta", False)
with st.container():  # one slot: an error line here never shifts the results' place (see below)
    # the budget with TTA: turning TTA on never asks again
    picked = pickers.pick_arrival("cmp", limit=pickers.page_limit(list(settings.ROLES), tta=True))
root = settings.models_root()
samples = [s for s in loaders.sample_sources() if s.image_path is not None]
inference.warm(  # the bundled samples' results, ahead of the first visit (kept on disk)
    f"samples:{root}",
    [(str(root / r), loaders.load_image(str(s.image_path), settings.mtime(s.image_path)))
     for s in samples for r in settings.ROLES if (root / r).is_dir()],
)  # fmt: skip
with st.sidebar:
    gt, gt_name = pickers.pick_ground_truth(picked, "cmp", st.sidebar) if picked else (None, "none")
    st.subheader("Display")
    alpha = st.slider("Mask opacity", 0.0, 1.0, 0.4, 0.05, key="cmp_alpha")
    outlines = st.toggle("Outlines", value=True, key="cmp_outlines")
    show_ids = st.toggle("Gland ids", value=False, key="cmp_ids")
    by_outcome = gt is not None and st.toggle(
        "Colour by outcome",
        value=True,
        key="cmp_outcome",
        help="Found, merged, split, false and missed glands in their own colours (legend above the images)",
    )
    st.checkbox("Test-time augmentation", key="cmp_tta", help="Average 8 flips/rotations (8× slower)")
    st.subheader("Models")
    chosen: dict[str, str | None] = {}
    for role, title in settings.ROLES.items():
        names, default = loaders.model_choices(role)
        chosen[role] = (
            st.selectbox(
                f"{title} model folder",
                names,
                index=default,
                key=f"cmp_model_{role}",
                placeholder="Pick another model folder",
            )
            if names
            else None
        )

header = st.container()
running = st.empty()  # the progress bar and Cancel while the models run
shown = st.empty()  # the results; emptied at once when a new image or setting needs the models again
if picked is None:
    st.stop()
with header:
    h, w = picked.original_shape
    facts = [f"**{picked.stem}**", f"{w}×{h} px"]
    if picked.scale != 1.0:
        facts.append(f"worked on downsampled to {picked.image.shape[1]}×{picked.image.shape[0]}")
    if picked.grade != "unknown":
        facts.append(f"GlaS grade: {picked.grade}")
    n_truth = None if gt is None else panels.count(gt)
    facts.append("no ground truth" if gt is None else f"ground truth: {gt_name} ({n_truth} glands)")
    left, right = st.columns([4, 1], vertical_alignment="bottom")
    left.caption(" · ".join(facts))
    mpp = right.number_input(
        "Pixel size (µm/px)",
        0.05,
        10.0,
        compare_view.GLAS_MPP,
        0.01,
        format="%.3f",
        key=f"cmp_mpp_{picked.key}",
        help="Micrometres per pixel of this image (GlaS: 0.62 at 20×). The image is segmented at the models' "
        "pixel size, and areas are given in µm².",
    )
    mpp_hint, mpp_warning = pickers.mpp_check(picked, mpp)  # the pixel size the nuclei suggest
    right.caption(mpp_hint)
    if mpp_warning:
        st.warning(f"Check the pixel size: {mpp_warning}.", icon=":material/straighten:")
    if note := pickers.split_note(picked):
        st.warning(note, icon=":material/school:")
    if gt is not None:
        compare_view.explain_single_id(compare_view.single_id(gt, picked.stem))

job = (picked.key, tuple(chosen.items()), tta, mpp)
if (
    st.session_state.get("cmp_last_job") != job
):  # a new image or model: no earlier result stays on screen
    shown.empty()  # sent while the models run (the progress goes to its own slot, not this one)
    st.session_state["cmp_last_job"] = job
with running.container():
    results, stopped = compare_view.run_models(picked, chosen, tta, mpp)
running.empty()
with shown.container():
    if stopped:
        st.info("Segmentation cancelled.")
        inference.offer_again(picked.image, "Run the models again")
    if by_outcome:
        panels.legend(overlays.outcome_legend(), title="Colours:")
        st.caption("White outlines: the true glands inside a merge or cut by a split.")
    for col, (role, title) in zip(st.columns(2, gap="medium"), settings.ROLES.items(), strict=True):
        with col:
            st.subheader(title)
            if chosen[role] is None:
                st.warning(
                    f"No {title} model: the folder `{root / role}` is missing or has no `weights.pt`."
                )
                st.caption("Train one on the Train page and promote it, or set GLANDSEG_MODELS.")
            elif role in results:
                compare_view.panel(
                    results[role],
                    picked,
                    gt,
                    alpha=alpha,
                    outlines=outlines,
                    ids=show_ids,
                    by_outcome=by_outcome,
                    mpp=mpp,
                )
            elif stopped:
                st.caption("Not segmented: cancelled.")
    if gt is not None:
        st.info(compare_view.MATCHING_RULE, icon=":material/rule:")
    st.divider()
    left, right = st.columns(2, gap="medium")
    with left:
        st.subheader("Where the models disagree")
        if len(results) == 2:
            compare_view.disagreement(picked.image, results["unet"], results["maskrcnn"])
        else:
            st.info("Needs both models' results.")
    with right:
        st.subheader("Ground truth" if gt is not None else "Input image")
        view = (
            compare_view.ground_truth_view(picked.image, gt, alpha, outlines, show_ids)
            if gt is not None
            else picked.image
        )
        st.image(
            view, caption=gt_name if gt is not None else None, width="stretch", output_format="JPEG"
        )
