"""One colour per model on every page and plot, as ``#rrggbb`` for plotly and HTML legends.

The colours themselves live in :mod:`glandseg_core.outputs.overlays.palette` (``MODEL_COLOURS``, checked against H&E
stain colours and colour-blind vision): U-Net green, Mask R-CNN dark green, the poster's recipe lime. They are
a set of their own, disjoint from the outcome colours (found, merge, split, false, missed) and the gland
identity colours, so a model's colour never reads as an outcome or a gland (docs/PALETTE.md). A model is
known by its folder name (``poster-maskrcnn``), else by its kind (``maskrcnn``); anything else gets a grey.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import streamlit as st

from glandseg_core.outputs.overlays.palette import MODEL_COLOURS, hex_colour

#: Neutral greys for model folders the palette does not know (never a stain-like hue).
OTHER = ("#6b6b6b", "#a0a0a0", "#3d3d3d")


def model_colour(folder: str, kind: str = "", k: int = 0) -> str:
    """The colour of a model folder (its name or path), else of its kind, else the ``k``-th grey."""
    name = Path(folder).name.lower() if folder else ""
    if name in MODEL_COLOURS:
        return hex_colour(MODEL_COLOURS[name])
    if name.startswith("poster"):
        return hex_colour(MODEL_COLOURS["poster-maskrcnn"])
    if kind in MODEL_COLOURS:
        return hex_colour(MODEL_COLOURS[kind])
    return OTHER[k % len(OTHER)]


def colours_for(models: Mapping[str, object]) -> dict[str, str]:
    """Display label -> colour for model folders (objects with ``path`` and ``kind``, e.g.
    :class:`glandseg_dashboard.results.ModelFolder`; a ``poster-*`` preset is the poster's recipe). Two folders of one kind keep distinct colours: the second falls back
    to a grey."""
    out: dict[str, str] = {}
    for k, (label, m) in enumerate(models.items()):
        folder = str(getattr(m, "path", ""))
        if str(getattr(m, "preset", "")).startswith("poster-"):
            folder = "poster-maskrcnn"  # the poster's recipe, whatever its folder is called
        colour = model_colour(folder, str(getattr(m, "kind", "")), k)
        out[label] = colour if colour not in out.values() else OTHER[k % len(OTHER)]
    return out


_PILLS_CSS = """<style>
button[data-variant="pills"][data-selected="true"],
button[data-variant="segmented_control"][data-selected="true"] {
  background-color: #2d2430 !important; border-color: #2d2430 !important; color: #ffffff !important;
}
button[data-variant="pills"][data-selected="true"] p::before { content: "✓ "; }
button[data-variant="pills"]:not([data-selected="true"]) {
  background-color: #ffffff !important; color: #77707a !important; border-style: dashed !important;
}
</style>"""


def style_selected_pills() -> None:
    """Make selected filter pills (and segmented controls) unmistakable: dark with white text and a tick;
    unselected pills white, grey and dashed (Streamlit marks the selected button ``data-selected="true"``)."""
    st.html(_PILLS_CSS)
