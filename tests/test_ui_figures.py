"""glandseg_dashboard.figures and glandseg_dashboard.palette: one colour per model in every plot, legends, the paired plot's named band."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd

from glandseg_core import stats
from glandseg_core.outputs.overlays import MODEL_COLOURS
from glandseg_core.outputs.overlays.palette import hex_colour
from glandseg_dashboard import figures, palette


def _table(seed: int, n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "image": [f"testA_{i}" for i in range(n)],
            "grade": ["benign"] * n,
            "f1": rng.uniform(0, 1, n),
            "object_dice": rng.uniform(0, 1, n),
            "object_hausdorff": rng.uniform(10, 300, n),
        }
    )


def test_model_colours_by_folder_kind_and_preset() -> None:
    unet, mask, poster = (hex_colour(MODEL_COLOURS[k]) for k in ("unet", "maskrcnn", "poster-maskrcnn"))
    assert palette.model_colour("trained_models/unet") == unet
    assert palette.model_colour("/x/poster-maskrcnn") == poster
    assert palette.model_colour("runs/best", kind="maskrcnn") == mask
    assert palette.model_colour("elsewhere", k=1) in palette.OTHER
    folders = {
        "U-Net": types.SimpleNamespace(path="m/unet", kind="unet", preset=""),
        "Mask R-CNN": types.SimpleNamespace(path="m/maskrcnn", kind="maskrcnn", preset=""),
        "Poster recipe": types.SimpleNamespace(
            path="m/recipe", kind="maskrcnn", preset="poster-maskrcnn"
        ),
        "Mask R-CNN (other)": types.SimpleNamespace(path="m/other", kind="maskrcnn", preset=""),
    }
    colours = palette.colours_for(folders)
    assert (
        colours["U-Net"] == unet and colours["Mask R-CNN"] == mask and colours["Poster recipe"] == poster
    )
    assert (
        len(set(colours.values())) == 4
    )  # a second Mask R-CNN folder does not borrow the first one's colour


def test_distribution_figure_has_one_colour_and_legend_entry_per_model() -> None:
    tables = {"U-Net": _table(0), "Mask R-CNN": _table(1), "Poster recipe": _table(2)}
    fig = figures.distribution_figure(tables, "f1")
    boxes = [t for t in fig.data if t.type == "box"]
    assert [b.name for b in boxes] == list(tables)
    assert [b.marker.color for b in boxes] == [
        hex_colour(MODEL_COLOURS[k]) for k in ("unet", "maskrcnn", "poster-maskrcnn")
    ]
    assert all(b.showlegend is not False for b in boxes)
    points = [t for t in fig.data if t.type == "scatter"]
    assert [p.marker.color for p in points] == [b.marker.color for b in boxes]  # points follow their box
    assert list(fig.layout.xaxis.ticktext) == list(tables)  # every box labelled, the third too
    custom = figures.distribution_figure(tables, "f1", {"Poster recipe": "#000000"})
    assert [t for t in custom.data if t.type == "box"][2].marker.color == "#000000"


def test_difference_figure_names_its_band_mean_and_sides() -> None:
    a, b = _table(0).set_index("image")["f1"], _table(1).set_index("image")["f1"]
    res = stats.paired_comparison(a, b)
    fig = figures.difference_figure(res, "U-Net", "Mask R-CNN", "f1")
    names = [t.name for t in fig.data]
    assert "95% CI of the mean difference (bootstrap)" in names and "mean difference" in names
    sides = {t.name: t.marker.color for t in fig.data if t.name and t.name.endswith("better")}
    assert sides == {
        "Mask R-CNN better": hex_colour(MODEL_COLOURS["maskrcnn"]),
        "U-Net better": hex_colour(MODEL_COLOURS["unet"]),
    }
    assert fig.layout.shapes[0].fillcolor != "orange"  # the band is no model's colour
    haus = stats.paired_comparison(
        *(t.set_index("image")["object_hausdorff"] for t in (_table(0), _table(1)))
    )
    fig = figures.difference_figure(haus, "U-Net", "Mask R-CNN", "object_hausdorff")
    better = {t.name for t in fig.data if t.name and t.name.endswith("better")}
    diffs = haus.diffs
    assert ("Mask R-CNN better" in better) == bool((diffs < 0).any())  # lower Hausdorff is better
    assert all("%{y:+.1f}" in t.hovertemplate for t in fig.data if t.hovertemplate)
