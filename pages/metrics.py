"""Metrics: GlaS F1 / object Dice / object Hausdorff per model beside the poster's and published figures (the
paper's layout, pooled or per-image mean, each row labelled with its convention), per-image distributions and a
paired comparison, on GlaS Test A / B or any evaluated set (an annotation set can be scored here in the
background). Reads precomputed per_image.csv and metrics.json; nothing is recomputed on page load."""

from __future__ import annotations

import streamlit as st

from glandseg_core import stats
from glandseg_dashboard import figures, loaders, metrics_table, palette, panels, set_results
from glandseg_dashboard import results as ur

loaders.ensure_router()  # a first direct visit to this URL must still go through app.py's router
palette.style_selected_pills()
st.title("Metrics")
ds = set_results.pick_set("metrics")
if ds is None:
    st.caption(
        "GlaS object-level F1, object Dice and object Hausdorff (pixels) on the held-out test splits, read "
        "from each model folder's `per_image.csv` and `metrics.json`. Click a point in any plot to open that "
        "image in the drill-down."
    )
    models, tables, summaries = ur.results_or_stop()
    split_sets, default_splits = stats.SPLIT_SETS, list(stats.SPLIT_SETS)[:2]
else:
    st.caption(
        f"The official GlaS metrics on {ds.label} (`{ds.folder}`), read from `evaluations/<model>/` in the set's "
        "folder. Click a point in any plot to open that image in the drill-down."
    )
    models, tables, summaries = set_results.results_or_stop(ds)
    split_sets = set_results.split_sets(tables)
    default_splits = [next(iter(split_sets))]
colours = palette.colours_for({label: models[label] for label in tables})
panels.legend(colours, "**Models:**")

# a set without GlaS grades (an annotation set of one's own images) gets no Grade choice: every image is "unknown"
all_grades = list(stats.GRADES) if ds is None else set_results.grade_choices(tables)
c1, c2 = st.columns(2)
suffix = "" if ds is None else f"_{ds.key}"  # each data set its own choices (their options differ)
split_names = c1.pills(
    "Split",
    list(split_sets),
    selection_mode="multi",
    default=default_splits,
    key=f"metrics_splits{suffix}",
)
grades = (
    c2.pills(
        "Grade", all_grades, selection_mode="multi", default=all_grades, key=f"metrics_grades{suffix}"
    )
    if all_grades
    else []
)
if not split_names or (all_grades and not grades):
    st.info("Choose at least one split and one grade." if all_grades else "Choose at least one split.")
    st.stop()
splits = list(dict.fromkeys(s for name in split_names for s in split_sets[name]))
grade_filter = None if set(grades) == set(all_grades) else list(grades)

st.subheader("Results")
comp = set_results.components({label: models[label] for label in tables})
notes = metrics_table.show(tables, summaries, comp, split_sets, grade_filter, glas=ds is None)
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
in_view = {n for df in tables.values() for n in stats.filter_images(df, splits, grade_filter)["image"]}
quirks = [n for n in loaders.single_id_images() if n in in_view] if ds is None else []
if quirks:
    notes.append(
        f"{', '.join(quirks)}: the annotation gives all glands one id, so each counts as one gland and a model "
        "that outlines glands one by one scores F1 0 there (the official figures keep them; see docs/METRICS.md)."
    )
st.caption(" ".join(notes))
with st.expander("How glands are matched"):
    st.markdown(ur.MATCHING_RULE)

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


chosen = ", ".join(split_names) + (f"; {', '.join(grades)}" if all_grades else "")
st.subheader(f"Per image ({chosen})")
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
