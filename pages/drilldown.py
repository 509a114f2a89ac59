"""Image drill-down (GlaS Test A / B or any evaluated set): images sorted by any metric, one image's ground truth and predictions coloured by outcome
(TP, FP, missed, merges and splits), and each gland's own Dice and Hausdorff. Reads per_image.csv and
predictions/<image>_labels.png."""

from __future__ import annotations

import numpy as np
import streamlit as st

from glandseg_core.outputs import overlays
from glandseg_dashboard import drilldown, loaders, palette, panels, set_results, settings
from glandseg_dashboard import results as ur

loaders.ensure_router()  # a first direct visit to this URL must still go through app.py's router
palette.style_selected_pills()
st.title("Image drill-down")

ds = set_results.pick_set("drill")  # GlaS (None) or an evaluated set, as chosen on the Metrics page
models, all_tables, _ = (
    ur.results_or_stop() if ds is None else set_results.results_or_stop(ds, score=False)
)
chosen = st.pills(
    "Models",
    list(all_tables),
    selection_mode="multi",
    key="drill_models",
    default=drilldown.default_models(list(all_tables)),
)
tables = {m: t for m, t in all_tables.items() if m in chosen} or all_tables
images = drilldown.image_table(tables)
if ds is None and settings.glas_dir() is None:
    st.info(
        "GLANDSEG_DATA is not set, so only the bundled samples in `samples/` can be shown. Point it at "
        "the unpacked GlaS folder and restart: `GLANDSEG_DATA=/path/to/glas streamlit run app.py`."
    )
    samples = images["image"].isin(ur.sample_names())
    images = images[samples] if samples.any() else images
metric_cols = drilldown.metric_columns(tables)
c1, c2 = st.columns([2, 1])
sort_col = c1.selectbox("Sort images by", list(metric_cols), key="drill_sort")
worst = (
    c2.radio("Order", ["worst first", "best first"], horizontal=True, key="drill_order") == "worst first"
)
ordered = images.sort_values(sort_col, ascending=worst == metric_cols[sort_col], na_position="last")
ordered = ordered.reset_index(drop=True)
names = ordered["image"].tolist()
st.session_state["_drill_names"] = names
if st.session_state.get("drill_image") not in names:
    st.session_state["drill_image"] = names[0]


def _on_table() -> None:
    rows = st.session_state[table_key].selection.rows
    if rows:
        st.session_state["drill_image"] = st.session_state["_drill_names"][rows[0]]


def _on_pick() -> None:
    st.session_state["drill_image"] = st.session_state["drill_pick"]


table_key = f"drill_table_{sort_col}_{worst}"
fmt = {
    "glands": st.column_config.NumberColumn(help="Glands in the ground truth"),
    **{c: st.column_config.NumberColumn(format=drilldown.number_format(c)) for c in metric_cols},
}
st.dataframe(
    ordered,
    hide_index=True,
    height=min(250, 35 * (len(ordered) + 1) + 3),
    column_config=fmt,
    on_select=_on_table,
    selection_mode="single-row",
    key=table_key,
)
st.session_state["drill_pick"] = st.session_state["drill_image"]
name = st.selectbox("Image (or select a row above)", names, key="drill_pick", on_change=_on_pick)

row = ordered.loc[ordered["image"] == name].iloc[0]
n_gt = int(row["glands"])
st.subheader(f"{name} — {row['grade']}, {n_gt} gland{'' if n_gt == 1 else 's'} annotated")
st.caption(drilldown.score_line(row, list(tables)))
if ds is None and name in loaders.single_id_images():
    st.info(
        "This annotation gives all its glands one id: the official metrics count it as one gland, so a "
        "gland-by-gland segmentation scores F1 0 here however well it draws (see docs/METRICS.md)."
    )
image, gt, source = ur.glas_image(name) if ds is None else set_results.set_image(ds, name)
if image is None:
    st.warning(f"Cannot show {name}: {source}")
    st.stop()

preds, notes = {}, []
for label in tables:
    pred, how = ur.prediction(models[label], name, image)
    if pred is None:
        notes.append(f"{label}: {how}")
    else:
        preds[label] = (pred, *drilldown.analyse(pred, gt))
        if how != "saved prediction":
            notes.append(f"{label}: {how}")
for note in notes:
    st.caption(note)

glands = drilldown.gland_rows({label: (p[1], p[2]) for label, p in preds.items()})
gland_ids = [int(g) for g in glands["gland"]] if len(glands) else [int(i) for i in np.unique(gt) if i]
gland_key = f"drill_gland_{name}"


def _on_gland_row() -> None:
    rows = st.session_state[f"drill_glands_{name}"].selection.rows
    st.session_state[gland_key] = gland_ids[rows[0]] if rows else None


c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
gland = c1.selectbox(
    "Highlight a gland (or select a row in the gland table below)",
    [None, *gland_ids],
    key=gland_key,
    format_func=lambda g: "none" if g is None else f"gland {g}",
)
by_outcome = c2.toggle(
    "Colour by outcome", value=True, key="drill_outcome", help="Off: one colour per gland"
)
show_ids = c3.toggle("Prediction ids", value=False, key="drill_ids", help="Each predicted gland's id")
if by_outcome:
    panels.legend(overlays.outcome_legend())
cells = drilldown.views(image, gt, preds, gland, by_outcome=by_outcome, ids=show_ids)
for start in range(0, len(cells), 2):
    cols = st.columns(2)
    for col, (caption, view) in zip(cols, cells[start : start + 2], strict=False):
        col.image(view, caption=caption, width="stretch")
st.caption(
    f"Source: {source}. "
    + ("White lines: the true glands inside a merge or cut by a split. " if by_outcome else "")
    + "Dark lines separate touching glands; a white outline marks the highlighted gland."
)
with st.expander("How glands are matched (the 50% rule)"):
    st.markdown(ur.MATCHING_RULE)
for label, (pred, _, rows) in preds.items():
    if near := drilldown.near_misses(pred, gt, rows):
        st.caption(
            f"**{label}** missed {'; '.join(near)}: a prediction overlaps it well but covers only half of it "
            "or less, so it does not count as found (the 50% rule)."
        )

if len(glands):
    st.markdown(
        "**Glands of the ground truth**: per model, what happened to each (found / missed, merges, splits), "
        "its Dice and Hausdorff (pixels) with its partner prediction."
    )
    gfmt = {
        c: st.column_config.NumberColumn(format=drilldown.number_format(c))
        for c in glands.columns[2:]
        if c.endswith(("Dice", "Hausdorff"))
    }
    gfmt |= {
        "gland": st.column_config.NumberColumn(width="small"),
        "area (px)": st.column_config.NumberColumn("area", width="small", help="pixels"),
    }
    gfmt |= {
        c: st.column_config.TextColumn(
            c.removesuffix(" (partner)"),
            help="Found or missed, in a merge or "
            "split, and (in brackets) its partner: the prediction covering most of it",
        )
        for c in glands.columns
        if c.endswith(" (partner)")
    }
    st.dataframe(
        glands,
        hide_index=True,
        column_config=gfmt,
        key=f"drill_glands_{name}",
        on_select=_on_gland_row,
        selection_mode="single-row",
    )
    pfmt = {
        c: st.column_config.NumberColumn(format=drilldown.number_format(c))
        for c in ("Dice", "Hausdorff")
    }
    for label, (_, klass, rows) in preds.items():
        with st.expander(f"{label}: predicted glands (outcome, partner, Dice, Hausdorff)"):
            table = drilldown.pred_rows(klass, rows)
            st.dataframe(table, hide_index=True, column_config=pfmt, key=f"drill_pred_{label}_{name}")
