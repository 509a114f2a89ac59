"""The Metrics page's results table: our models beside the poster's and published figures, each row labelled with
its convention (pooled official GlaS, per-image mean, ground truth split into connected components), and the
notes that go with it, each said once."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from glandseg_core import stats

from . import results as ur

COMPONENTS_HINT = (
    "The connected-components convention (each separate piece of a ground-truth id counts as its own gland, "
    "as several published GlaS evaluations do) needs `per_image_relabel_gt.csv` beside a model's scores or in "
    "its `components/` folder: `glandseg evaluate --predictions <model folder>/predictions --data "
    "$GLANDSEG_DATA --split testA testB --relabel-gt --out <model folder>/components` writes it from the saved "
    "predictions; the dashboard's own scoring of a data set always does."
)


def _column_config(table: pd.DataFrame) -> dict:
    return {
        "method": st.column_config.TextColumn("Method", width="medium"),
        "source": st.column_config.TextColumn("Source", width="small"),
        "convention": st.column_config.TextColumn(
            "Convention", width="medium", help="How the figures were aggregated (docs/METRICS.md)"
        ),
        **{
            c: st.column_config.NumberColumn(
                c.replace(" Hausdorff", " · Hausdorff (px)")
                .replace(" F1", " · F1")
                .replace(" Dice", " · Dice"),
                format="%.1f" if c.endswith("Hausdorff") else "%.3f",
            )
            for c in table.columns[3:]
        },
    }


def show(
    tables: dict[str, pd.DataFrame],
    summaries: dict[str, dict],
    components: tuple[dict[str, pd.DataFrame], dict[str, dict]],
    split_sets: dict[str, tuple[str, ...]],
    grade_filter: list[str] | None,
    *,
    glas: bool,
) -> list[str]:
    """Draw the aggregation choice and the table; returns the notes to print under it (each once)."""
    c1, c2 = st.columns([3, 2])
    aggregation = (
        c1.segmented_control(
            "Aggregation",
            list(ur.AGGREGATIONS),
            format_func=ur.AGGREGATIONS.get,
            default="pooled",
            key="metrics_aggregation",
            help="Pooled: counts and object weights summed over the split (the official GlaS figures). "
            "Per-image mean: the mean of the image scores (the poster's figures).",
        )
        or "pooled"
    )
    references = glas and c2.toggle(
        "Show the poster's and published figures", value=True, key="metrics_refs"
    )
    comp_tables, comp_sums = components
    with_components = bool(comp_tables) and c2.toggle(
        "Also: ground truth split into components", value=True, key="metrics_components"
    )
    tidy = stats.results_table(
        tables, grade_filter, summaries, split_sets=split_sets, references=references
    )
    comp = (
        stats.results_table(
            comp_tables, grade_filter, comp_sums, split_sets=split_sets, references=False
        )
        if with_components
        else None
    )
    shown = ("Test A", "Test B") if glas else tuple(split_sets)
    table = ur.paper_table(tidy, aggregation, shown, comp)
    st.dataframe(
        table, hide_index=True, placeholder="—", column_config=_column_config(table), key="metrics_table"
    )
    return _notes(table, references, with_components, bool(comp_tables), glas)


def _notes(
    table: pd.DataFrame, references: bool, with_components: bool, have: bool, glas: bool
) -> list[str]:
    notes = [
        "F1: detection (a gland counts as found when one prediction covers more than 50% of it); Dice: "
        "object Dice; Hausdorff: object Hausdorff, in pixels (lower is better)."
    ]
    if references:
        notes.append(
            "Published rows are the official pooled GlaS figures, shown in both views and labelled so; the "
            f"poster's rows are per-image means over a split it does not name (“{ur.UNNAMED_SPLIT}”)."
        )
    if with_components:
        notes.append(
            "“GT split into components” rows are a diagnostic: each separate piece of a ground-truth id "
            "counts as its own gland; the official figures keep the ids as annotated."
        )
    elif glas and not have:
        notes.append(COMPONENTS_HINT)
    ours = table[table["source"] == "ours"]
    if ours["convention"].str.startswith("pooled").any() and ours.iloc[:, 3:].isna().any().any():
        notes.append(
            "Pooled object Dice and Hausdorff need per-object sums that only the `evaluate` summary "
            "(metrics.json) holds, so they are blank under a grade filter or without a matching "
            "metrics.json; pooled F1 is always recomputed from the summed TP / FP / FN."
        )
    return notes
