"""Turn label maps into tables and QuPath GeoJSON; coloured overlays come from :mod:`glandseg_core.outputs.overlays`.

Every function takes label maps: int (H, W), 0=NO masks; 1,2... are mask labels (ids need not be
consecutive, and one id may cover several pieces). No file I/O here. The overlay functions and colours are
re-exported, so ``export.overlay`` and friends keep working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.measure import regionprops_table

from .overlays import (
    DISAGREEMENT_COLOURS,
    OUTCOME_COLOURS,
    check_labels,
    colour_for,
    compact_ids,
    disagreement_map,
    highlight,
    outcome_overlay,
    overlay,
)

__all__ = [
    "DISAGREEMENT_COLOURS",
    "GLAND_CLASS_COLOUR",
    "GLAND_COLUMNS",
    "OUTCOME_COLOURS",
    "colour_for",
    "disagreement_map",
    "gland_table",
    "highlight",
    "outcome_overlay",
    "overlay",
    "to_geojson",
]

GLAND_COLUMNS = [
    *("id", "area", "perimeter", "centroid_row", "centroid_col", "bbox_min_row", "bbox_min_col"),
    *("bbox_max_row", "bbox_max_col", "eccentricity", "solidity"),
]
GLAND_CLASS_COLOUR = (0, 170, 90)  # QuPath class colour of every exported gland
_SKIMAGE_NAMES = ["label", "centroid-0", "centroid-1", "bbox-0", "bbox-1", "bbox-2", "bbox-3"]
_RENAME = dict(zip(_SKIMAGE_NAMES, ["id", *GLAND_COLUMNS[3:9]], strict=True))


# ----------------------------------------------------------------------------------------------- table


def gland_table(labels: np.ndarray, *, mpp: float | None = None) -> pd.DataFrame:
    """Shape measurements of every gland, one row per id (``skimage.measure.regionprops_table``).

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        mpp: micrometres per pixel; when given, ``UM_COLUMNS`` (area in µm², perimeter in µm) follow.

    Returns:
        DataFrame with columns ``GLAND_COLUMNS``, sorted by id: area (int pixels), perimeter (pixels),
        centroid (row, col), bounding box (min inclusive, max exclusive), eccentricity, solidity; then
        ``area_um2`` and ``perimeter_um`` when ``mpp`` is given.
        An empty map gives an empty frame with the same columns.

    Raises:
        ValueError: ``labels`` is not a 2-D non-negative integer array.
    """
    lab = check_labels(labels)
    props = regionprops_table(
        lab, properties=("label", "area", "perimeter", "centroid", "bbox", "eccentricity", "solidity")
    )
    table = pd.DataFrame(props).rename(columns=_RENAME)[GLAND_COLUMNS]
    int_cols = ["id", "area", "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col"]
    table = table.astype(
        {c: "int64" for c in int_cols} | {c: "float64" for c in GLAND_COLUMNS if c not in int_cols}
    )
    table = table.sort_values("id", ignore_index=True)
    if mpp is not None:
        _check_mpp(mpp)
        table["area_um2"] = table["area"] * (mpp * mpp)
        table["perimeter_um"] = table["perimeter"] * mpp
    return table


def _check_mpp(mpp: float) -> None:
    """Refuse a pixel size that is not a positive finite number of micrometres."""
    if not (np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp}")


# --------------------------------------------------------------------------------------------- GeoJSON


def to_geojson(labels: np.ndarray, *, name: str = "Gland", mpp: float | None = None) -> dict[str, Any]:
    """Gland outlines as a GeoJSON FeatureCollection that QuPath imports as annotations.

    Coordinates are ``[x, y] = [col, row]`` in pixels on pixel corners, so each polygon covers exactly
    the gland's pixels and its area equals the pixel count. Shells run counter-clockwise and holes
    clockwise (x/y order, RFC 7946), rings are closed and have no collinear points. An id made of several
    4-connected pieces becomes a MultiPolygon. Rings never cross; pieces may touch at single corners.

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        name: QuPath classification of every gland.
        mpp: micrometres per pixel; when given, each feature also carries QuPath ``measurements``
            (``"Area µm^2"``, the pixel count times ``mpp**2``), ``area_um2`` and the pixel size ``mpp``
            (as the slide GeoJSON of ``glandseg predict`` does). Coordinates stay pixels.

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``, one Feature per id in id order, with
        properties ``objectType`` ("annotation"), ``name`` ("gland <id>"), ``classification``
        (``{"name": name, "color": GLAND_CLASS_COLOUR}``), ``color`` (``colour_for(id)``),
        ``gland_id`` and ``area`` (pixels).

    Raises:
        ValueError: ``labels`` is not a 2-D non-negative integer array.
    """
    lab = check_labels(labels)
    if mpp is not None:
        _check_mpp(mpp)
    ids, compact = compact_ids(lab)
    features = []
    for k, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is None:
            continue
        gid = int(ids[k - 1])
        mask = np.pad(compact[box] == k, 1)
        polygons = _polygons(mask, x_off=box[1].start - 1, y_off=box[0].start - 1)
        if len(polygons) == 1:
            geometry = {"type": "Polygon", "coordinates": polygons[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        properties: dict[str, Any] = {
            "objectType": "annotation",
            "name": f"gland {gid}",
            "classification": {"name": name, "color": list(GLAND_CLASS_COLOUR)},
            "color": list(colour_for(gid)),
            "gland_id": gid,
            "area": int(mask.sum()),
        }
        if mpp is not None:
            area_um2 = properties["area"] * mpp * mpp
            properties |= {
                "area_um2": area_um2,
                "mpp": float(mpp),
                "measurements": {"Area µm^2": area_um2},
            }
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


# (neighbour shift, start corner, end corner) for the top, right, bottom and left sides of a pixel
_SIDES = (
    ((1, 0), (0, 0), (0, 1)),
    ((-1, 1), (0, 1), (1, 1)),
    ((-1, 0), (1, 1), (1, 0)),
    ((1, 1), (1, 0), (0, 0)),
)


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(start vertex, end vertex, side 0..3, flat pixel index) of every foreground/background pixel side.

    Vertices are numbered row * (W + 1) + column on the pixel-corner grid; each edge runs with the
    foreground on its left in x/y order.
    """
    width = mask.shape[1] + 1
    starts, ends, kinds, pixels = [], [], [], []
    for side, ((shift, axis), (sy, sx), (ey, ex)) in enumerate(_SIDES):
        rows, cols = np.nonzero(mask & ~np.roll(mask, shift, axis=axis))
        starts.append((rows + sy) * width + cols + sx)
        ends.append((rows + ey) * width + cols + ex)
        kinds.append(np.full(rows.size, side, np.int8))
        pixels.append(rows * mask.shape[1] + cols)
    start, end, kind, pixel = (np.concatenate(a) for a in (starts, ends, kinds, pixels))
    return start, end, kind, pixel


def _polygons(mask: np.ndarray, *, x_off: int, y_off: int) -> list[list[list[list[int]]]]:
    """Pixel-corner polygons, [shell, *holes] per 4-connected piece, of a mask with an empty border.

    How it works: every side between a foreground and a background pixel is a directed edge, oriented
    so the foreground lies to its left in x/y order; edges chain into closed rings, end vertex to start
    vertex. Where two foreground pixels touch only at a corner, that vertex has two ways out: if the
    pixels are in different 4-connected pieces the ring stays with its own pixel (the pieces become
    polygons touching at that corner), otherwise it crosses over (the background pocket becomes a hole
    touching the shell there). So no ring touches itself, and each piece has exactly one
    counter-clockwise ring (its shell); its clockwise rings are its holes.
    """
    comp, _ = ndimage.label(mask)
    width = mask.shape[1] + 1  # vertices per row
    start, end, kind, pixel = _boundary_edges(mask)
    piece = comp.ravel()[pixel]

    order = np.argsort(start, kind="stable")
    first = np.searchsorted(start[order], end)
    n_out = np.searchsorted(start[order], end, side="right") - first
    out1 = order[first]
    out2 = order[np.minimum(first + 1, start.size - 1)]
    same1 = pixel[out1] == pixel
    stay, cross = np.where(same1, out1, out2), np.where(same1, out2, out1)
    succ = np.where(n_out == 1, out1, np.where(piece[cross] != piece, stay, cross))

    rings: dict[int, list[tuple[float, list[list[int]]]]] = {}
    seen = bytearray(start.size)
    succ_list = succ.tolist()
    for e0 in range(start.size):
        if seen[e0]:
            continue
        cycle = []
        e = e0
        while not seen[e]:
            seen[e] = 1
            cycle.append(e)
            e = succ_list[e]
        idx = np.asarray(cycle)
        corner = kind[idx] != np.roll(kind[idx], 1)  # keep only vertices where the direction changes
        ys, xs = np.divmod(start[idx][corner], width)
        xs, ys = xs + x_off, ys + y_off
        area = 0.5 * float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys))
        ring = np.stack([xs, ys], axis=1).tolist()
        ring.append(ring[0])
        rings.setdefault(int(piece[e0]), []).append((area, ring))
    # each piece has exactly one shell (positive area, see How it works): put it first, holes after
    return [[ring for _, ring in sorted(rings[p], key=lambda ar: -ar[0])] for p in sorted(rings)]
