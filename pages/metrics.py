"""Metrics: GlaS F1 / object Dice / object Hausdorff per model beside the poster's and published figures,
per-image distributions and a paired comparison. Reads each model folder's precomputed per_image.csv and
metrics.json; nothing is recomputed."""

from __future__ import annotations

import streamlit as st

from glandseg_core import stats
from ui import figures, loaders
from ui import results as ur

loaders.ensure_router()  # a first direct visit to this URL must still go through app.py's router
st.title("Metrics")
st.caption(
    "GlaS object-level F1, object Dice and object Hausdorff (pixels) on the held-out test splits, read "
    "from each model folder's `per_image.csv` and `metrics.json`. **Pooled** = the official GlaS figure "
    "(counts and object weights summed over the split); **per-image mean** = the mean of the image "
    "scores, as on the poster. Click a point in any plot to open that image in the drill-down."
)

models, tables, summaries = ur.results_or_stop()

c1, c2 = st.columns(2)
split_names = c1.pills(
    "Split",
    list(stats.SPLIT_SETS)[:2],
    selection_mode="multi",
    default=list(stats.SPLIT_SETS)[:2],
    key="metrics_splits",
)
grades = c2.pills(
    "Grade", list(stats.GRADES), selection_mode="multi", default=list(stats.GRADES), key="metrics_grades"
)
if not split_names or not grades:
    st.info("Choose at least one split and one grade.")
    st.stop()
splits = [s for name in split_names for s in stats.SPLIT_SETS[name]]
grade_filter = None if set(grades) == set(stats.GRADES) else list(grades)

st.subheader("Results")
table = stats.results_table(tables, grade_filter, summaries)
if not st.toggle("Show the poster's and published figures", value=True, key="metrics_refs"):
    table = table[table["source"] == "ours"]
st.dataframe(
    table,
    hide_index=True,
    height=35 * (len(table) + 1) + 3,
    placeholder="—",
    column_config={
        "method": st.column_config.TextColumn("Method", width="medium"),
        "split": st.column_config.TextColumn("Split", width="medium"),
        **{c: c.capitalize() for c in ("source", "aggregation")},
        "f1": st.column_config.NumberColumn("F1", format="%.3f"),
        "object_dice": st.column_config.NumberColumn("Object Dice", format="%.3f"),
        "object_hausdorff": st.column_config.NumberColumn("Object Hausdorff (px)", format="%.1f"),
        "n_images": st.column_config.NumberColumn("images"),
    },
    key="metrics_table",
)
notes = [
    (
        "The poster's figures are per-image means over a split it does not name; its Mask R-CNN trained "
        "200 epochs, its U-Net 15. Published figures are the official pooled GlaS results."
    ),
    (
        "Pooled object Dice and Hausdorff need per-object sums that only the `evaluate` summary "
        "(metrics.json) holds, so they are blank under a grade filter or without a matching "
        "metrics.json; pooled F1 is always recomputed from the summed TP / FP / FN."
    ),
]
recipes = [label for label, m in models.items() if ur.is_poster_recipe(m)]
if recipes:
    notes.append(
        f"{', '.join(recipes)}: the poster's own recipe, trained by our trainer from scratch (no COCO weights can "
        "be downloaded), so its learning-rate staircase ends before the network learns; scored on JPEG copies of the "
        "test images on the GPU machine, without weights to re-run here. Its folder's MODEL_CARD.md says more."
    )
quirks = [n for n in loaders.single_id_images() if n.split("_")[0] in splits]
if quirks:
    notes.append(
        f"{', '.join(quirks)}: the annotation gives all glands one id, so each counts as one gland and a model "
        "that outlines glands one by one scores F1 0 there (the official figures keep them; see docs/METRICS.md)."
    )
if grade_filter:
    notes.insert(0, f"Grade filter: {', '.join(grade_filter)} images only.")
st.caption(" ".join(notes))

shown = {m: stats.filter_images(df, splits, grade_filter) for m, df in tables.items()}
shown = {m: df for m, df in shown.items() if len(df)}
if not shown:
    st.info("No images match the filters.")
    st.stop()
labels = list(shown)
pair = None
if len(labels) >= 2:
    a_default = next((i for i, lab in enumerate(labels) if lab.startswith("U-Net")), 0)
    b_default = next((i for i, lab in enumerate(labels) if lab.startswith("Mask R-CNN")), 1)
    if len(labels) > 2:
        c1, c2 = st.columns(2)
        pair = (
            c1.selectbox("Model A", labels, index=a_default, key="metrics_a"),
            c2.selectbox("Model B", labels, index=b_default, key="metrics_b"),
        )
    else:
        pair = (labels[a_default], labels[b_default if b_default != a_default else 1 - a_default])


def _paired(metric: str, a: str, b: str) -> str | None:
    """Differences plot and test of b - a for one metric; returns the clicked image, if any."""
    res = stats.paired_comparison(*(shown[m].set_index("image")[metric] for m in (a, b)))
    event = st.plotly_chart(
        figures.difference_figure(res, a, b, metric),
        on_select="rerun",
        selection_mode="points",
        key=f"metrics_diff_{metric}",
    )
    favour = "Positive" if stats.METRICS[metric][1] else "Negative"
    f = "+.1f" if metric == "object_hausdorff" else "+.3f"
    st.markdown(
        f"**{b} − {a}** over {res.n} paired images: mean {res.mean_diff:{f}} "
        f"(bootstrap 95% CI {res.ci_low:{f}} to {res.ci_high:{f}}), median {res.median_diff:{f}}; "
        f"Wilcoxon signed-rank p {stats.format_p(res.p_value)}. {favour} differences favour {b}."
    )
    if res.note:
        st.caption(res.note)
    return figures.clicked_image(event)


st.subheader(f"Per image ({', '.join(split_names)}; {', '.join(grades)})")
for tab, metric in zip(st.tabs([stats.METRICS[m][0] for m in stats.METRICS]), stats.METRICS):
    with tab:
        left, right = st.columns(2)
        with left:
            event = st.plotly_chart(
                figures.distribution_figure(shown, metric),
                on_select="rerun",
                selection_mode="points",
                key=f"metrics_dist_{metric}",
            )
            clicked = figures.clicked_image(event)
        with right:
            if pair is None:
                st.info("A paired comparison needs results from two models.")
            else:
                clicked = _paired(metric, *pair) or clicked
        if clicked:
            st.session_state["drill_image"] = clicked
            st.switch_page("pages/drilldown.py")
