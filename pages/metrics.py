"""Metrics: GlaS F1 / object Dice / object Hausdorff per model beside the poster's and published figures (the
paper's layout, pooled or per-image mean), per-image distributions and a paired comparison. Reads each model folder's precomputed per_image.csv and
metrics.json; nothing is recomputed."""

from __future__ import annotations

import streamlit as st

from glandseg_core import stats
from glandseg_dashboard import figures, loaders, palette, panels
from glandseg_dashboard import results as ur

loaders.ensure_router()  # a first direct visit to this URL must still go through app.py's router
palette.style_selected_pills()
st.title("Metrics")
st.caption(
    "GlaS object-level F1, object Dice and object Hausdorff (pixels) on the held-out test splits, read "
    "from each model folder's `per_image.csv` and `metrics.json`. Click a point in any plot to open that "
    "image in the drill-down."
)

models, tables, summaries = ur.results_or_stop()
colours = palette.colours_for({label: models[label] for label in tables})
panels.legend(colours, "**Models:**")

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
c1, c2 = st.columns([3, 2])
aggregation = (
    c1.segmented_control(
        "Aggregation",
        list(ur.AGGREGATIONS),
        format_func=ur.AGGREGATIONS.get,
        default="pooled",
        key="metrics_aggregation",
        help="Pooled: counts and object weights summed over the split (the official "
        "GlaS figures). Per-image mean: the mean of the image scores (the poster's figures).",
    )
    or "pooled"
)
references = c2.toggle("Show the poster's and published figures", value=True, key="metrics_refs")
tidy = stats.results_table(tables, grade_filter, summaries, references=references)
table = ur.paper_table(tidy, aggregation)
st.dataframe(
    table,
    hide_index=True,
    placeholder="—",
    column_config={
        "method": st.column_config.TextColumn("Method", width="medium"),
        "source": st.column_config.TextColumn("Source", width="small"),
        **{
            c: st.column_config.NumberColumn(
                c.replace(" Hausdorff", " · Hausdorff (px)")
                .replace(" F1", " · F1")
                .replace(" Dice", " · Dice"),
                format="%.1f" if c.endswith("Hausdorff") else "%.3f",
            )
            for c in table.columns[2:]
        },
    },
    key="metrics_table",
)
notes = [
    (
        "F1: detection (a gland counts as found when one prediction covers more than 50% of it); Dice: "
        "object Dice; Hausdorff: object Hausdorff, in pixels (lower is better)."
    )
]
if references and aggregation == "pooled":
    notes.append("Published figures are the official pooled GlaS results.")
elif references:
    notes.append(ur.poster_line())
if aggregation == "pooled" and table[table["source"] == "ours"].iloc[:, 2:].isna().any().any():
    notes.append(
        "Pooled object Dice and Hausdorff need per-object sums that only the `evaluate` summary "
        "(metrics.json) holds, so they are blank under a grade filter or without a matching "
        "metrics.json; pooled F1 is always recomputed from the summed TP / FP / FN."
    )
recipes = [label for label, m in models.items() if ur.is_poster_recipe(m)]
if recipes:
    notes.append(
        f"{', '.join(recipes)}: the poster's own recipe (a Mask R-CNN), trained by our trainer from scratch (no "
        "COCO weights can be downloaded), so its learning-rate staircase ends before the network learns; scored "
        "on JPEG copies of the test images on the GPU machine, without weights to re-run here. Its folder's "
        "MODEL_CARD.md says more."
    )
if grade_filter:
    notes.insert(0, f"Grade filter: {', '.join(grade_filter)} images only.")
st.caption(" ".join(notes))
in_view = {n for df in tables.values() for n in stats.filter_images(df, splits, grade_filter)["image"]}
quirks = [n for n in loaders.single_id_images() if n in in_view]
with st.expander("How glands are matched, and the images whose annotation gives every gland one id"):
    st.markdown(ur.MATCHING_RULE)
    if quirks:
        st.markdown(
            f"**{', '.join(quirks)}**: the annotation gives all glands one id, so each counts as one gland and a "
            "model that outlines glands one by one scores F1 0 there (the official figures keep them; see "
            "docs/METRICS.md)."
        )
if quirks:
    st.caption(f"{', '.join(quirks)}: the annotation gives all glands one id (see above).")

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
        figures.difference_figure(res, a, b, metric, colours),
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
for tab, metric in zip(
    st.tabs([stats.METRICS[m][0] for m in stats.METRICS]), stats.METRICS, strict=True
):
    with tab:
        left, right = st.columns(2)
        with left:
            event = st.plotly_chart(
                figures.distribution_figure(shown, metric, colours),
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
