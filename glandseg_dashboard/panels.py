"""Small drawing helpers of the Compare page: colour legends, gland counts, score metrics and downloads.

Measurements of a downsampled image (``scale`` = original / working size, see :mod:`glandseg_dashboard.pickers`) are given
in the original image's pixels: the gland table's areas and lengths, the GeoJSON outlines, and Hausdorff.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import streamlit as st

from glandseg_core import metrics
from glandseg_core.imaging.io import label_png_bytes, png_bytes
from glandseg_core.outputs import export

from . import budget
from .annotation_sets import renumber

SWATCH = (
    '<span style="display:inline-block;width:.9em;height:.9em;background:{};border-radius:2px;'
    'border:1px solid #14141480;vertical-align:-.1em"></span>'
)


def count(labels: np.ndarray) -> int:
    """Number of glands (distinct non-zero ids) in a label map."""
    return int(np.count_nonzero(np.unique(labels)))


def legend(items: dict[str, tuple[int, int, int] | str], title: str = "") -> None:
    """One line of colour swatches with their names (colours as (r, g, b) or ``#rrggbb``)."""
    cells = [
        f"{SWATCH.format(c if isinstance(c, str) else f'rgb{tuple(c)}')} {name}"
        for name, c in items.items()
    ]
    st.markdown((f"{title} " if title else "") + " &nbsp; ".join(cells), unsafe_allow_html=True)


MATCHING_HELP = (
    "A predicted gland is found (TP) when it covers more than half (50 %) of the true gland it overlaps most; "
    "a merge of several true glands finds at most one of them."
)


@st.cache_data(show_spinner=False, max_entries=64)
def _score(labels: np.ndarray, gt: np.ndarray) -> metrics.ImageScores:
    return metrics.score_image(labels, gt)


def scores(labels: np.ndarray, gt: np.ndarray, scale: float) -> None:
    """F1, object Dice and object Hausdorff (original pixels) of a label map against its ground truth, with
    the counts and the GlaS matching rule they follow."""
    s = _score(labels, gt)
    m = st.columns(3)
    m[0].metric("F1", f"{s.f1:.3f}", help=f"TP {s.tp} · FP {s.fp} · missed {s.fn}. {MATCHING_HELP}")
    m[1].metric("Object Dice", f"{s.object_dice:.3f}")
    m[2].metric("Object Hausdorff", f"{s.object_hausdorff * scale:.1f} px")
    st.caption(
        f"Found {s.tp} · false {s.fp} · missed {s.fn}. Found = a prediction covering **more than 50 %** of a "
        "true gland (GlaS rule)."
    )


def downloads(
    labels: np.ndarray,
    view: np.ndarray,
    stem: str,
    *,
    key: str,
    scale: float = 1.0,
    mpp: float | None = None,
) -> None:
    """Label map, overlay, gland CSV and GeoJSON download buttons (measurements in original pixels; with
    ``mpp``, the original image's µm per pixel, areas in µm² and perimeters in µm as well). Each file is made
    when its button is clicked (Streamlit's deferred ``data``), not at every draw: the table and the outlines
    took seconds per model, and a result now shows without waiting for them (issue #22)."""
    items = download_files(labels, view, stem, scale, mpp)
    for c, (label, make, fname, mime, hint) in zip(st.columns(4), items, strict=True):
        c.download_button(
            label, make, fname, mime, key=f"dl_{label}_{key}", on_click="ignore", help=hint
        )


def gland_csv(labels: np.ndarray, scale: float, mpp: float | None) -> str:
    """The gland table as CSV, in the original image's pixels (and µm with ``mpp``)."""
    table = budget.to_original(export.gland_table(labels), scale)
    if mpp is not None:  # µm columns of the working image's pixels (mpp * scale µm each)
        um = export.gland_table(labels, mpp=mpp * scale)
        table = table.assign(
            area_um2=um["area_um2"].to_numpy(), perimeter_um=um["perimeter_um"].to_numpy()
        )
    return table.to_csv(index=False)


def gland_geojson(labels: np.ndarray, scale: float, mpp: float | None) -> str:
    """Gland outlines as GeoJSON in the original image's pixels; with ``mpp`` each gland's area in µm² and the
    original image's pixel size."""
    geo = budget.geojson_to_original(
        export.to_geojson(labels, mpp=None if mpp is None else mpp * scale), scale
    )
    for feature in geo["features"] if mpp is not None else []:  # the original image's pixel size
        feature["properties"]["mpp"] = mpp
    return json.dumps(geo)


def download_files(
    labels: np.ndarray, view: np.ndarray, stem: str, scale: float, mpp: float | None
) -> list[tuple[str, Callable[[], bytes | str], str, str, str]]:
    """(button label, a callable that makes the file, file name, MIME type, help) of each download; every
    file numbers the glands 1..N."""
    h, w = labels.shape
    size_note = f" ({w}×{h}, downsampled)" if scale != 1.0 else ""
    return [
        (
            "Label map",
            lambda: label_png_bytes(renumber(labels)),
            f"{stem}_labels.png",
            "image/png",
            f"16-bit PNG, 0 = background, 1..N = glands{size_note}",
        ),
        (
            "Overlay",
            lambda: png_bytes(view),
            f"{stem}_overlay.png",
            "image/png",
            f"The overlay as shown{size_note}",
        ),
        (
            "CSV",
            lambda: gland_csv(renumber(labels), scale, mpp),
            f"{stem}_glands.csv",
            "text/csv",
            "One row per gland: area (px and µm²), perimeter, centroid, bbox, shape",
        ),
        (
            "GeoJSON",
            lambda: gland_geojson(renumber(labels), scale, mpp),
            f"{stem}.geojson",
            "application/geo+json",
            "Gland outlines for QuPath"
            + (", with each gland's area in µm² at the pixel size set above" if mpp is not None else ""),
        ),
    ]
