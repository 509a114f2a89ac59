"""Turn label maps into tables, QuPath GeoJSON and coloured overlays.

Every function takes label maps: int (H, W), 0=NO masks; 1,2... are mask labels (ids need not be
consecutive, and one id may cover several pieces). Images are uint8 (H, W, 3) RGB. No file I/O here.
"""

from __future__ import annotations

import colorsys
import functools
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.measure import regionprops_table
from skimage.segmentation import find_boundaries

GLAND_COLUMNS = [
    *("id", "area", "perimeter", "centroid_row", "centroid_col", "bbox_min_row", "bbox_min_col"),
    *("bbox_max_row", "bbox_max_col", "eccentricity", "solidity"),
]
OUTCOME_COLOURS = {"TP": (40, 200, 80), "FP": (230, 50, 50), "FN": (40, 120, 255)}
DISAGREEMENT_COLOURS = {"A only": (255, 150, 0), "B only": (0, 220, 255)}
GLAND_CLASS_COLOUR = (0, 170, 90)  # QuPath class colour of every exported gland
_UNSCORED = (170, 170, 170)  # predicted ids that an Outcomes object lists neither as TP nor as FP
_HIGHLIGHT = (255, 225, 0)
_SKIMAGE_NAMES = ["label", "centroid-0", "centroid-1", "bbox-0", "bbox-1", "bbox-2", "bbox-3"]
_RENAME = dict(zip(_SKIMAGE_NAMES, ["id", *GLAND_COLUMNS[3:9]], strict=True))


class _Outcomes(Protocol):
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]


# ----------------------------------------------------------------------------------------------- table


def gland_table(labels: np.ndarray) -> pd.DataFrame:
    """Shape measurements of every gland, one row per id (``skimage.measure.regionprops_table``).

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.

    Returns:
        DataFrame with columns ``GLAND_COLUMNS``, sorted by id: area (int pixels), perimeter (pixels),
        centroid (row, col), bounding box (min inclusive, max exclusive), eccentricity, solidity.
        An empty map gives an empty frame with the same columns.

    Raises:
        ValueError: ``labels`` is not a 2-D non-negative integer array.
    """
    lab = _check_labels(labels)
    props = regionprops_table(
        lab, properties=("label", "area", "perimeter", "centroid", "bbox", "eccentricity", "solidity")
    )
    table = pd.DataFrame(props).rename(columns=_RENAME)[GLAND_COLUMNS]
    int_cols = ["id", "area", "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col"]
    table = table.astype(
        {c: "int64" for c in int_cols} | {c: "float64" for c in GLAND_COLUMNS if c not in int_cols}
    )
    return table.sort_values("id", ignore_index=True)


# --------------------------------------------------------------------------------------------- GeoJSON


def to_geojson(labels: np.ndarray, *, name: str = "Gland") -> dict[str, Any]:
    """Gland outlines as a GeoJSON FeatureCollection that QuPath imports as annotations.

    Coordinates are ``[x, y] = [col, row]`` in pixels on pixel corners, so each polygon covers exactly
    the gland's pixels and its area equals the pixel count. Shells run counter-clockwise and holes
    clockwise (x/y order, RFC 7946), rings are closed and have no collinear points. An id made of several
    4-connected pieces becomes a MultiPolygon. Rings never cross; pieces may touch at single corners.

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        name: QuPath classification of every gland.

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``, one Feature per id in id order, with
        properties ``objectType`` ("annotation"), ``name`` ("gland <id>"), ``classification``
        (``{"name": name, "color": GLAND_CLASS_COLOUR}``), ``color`` (``colour_for(id)``),
        ``gland_id`` and ``area`` (pixels).

    Raises:
        ValueError: ``labels`` is not a 2-D non-negative integer array.
    """
    lab = _check_labels(labels)
    ids, compact = _compact(lab)
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
        properties = {
            "objectType": "annotation",
            "name": f"gland {gid}",
            "classification": {"name": name, "color": list(GLAND_CLASS_COLOUR)},
            "color": list(colour_for(gid)),
            "gland_id": gid,
            "area": int(mask.sum()),
        }
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


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
    starts, ends, kinds, pixels = [], [], [], []
    # (neighbour shift, start corner, end corner) for the top, right, bottom and left sides of a pixel
    sides = (
        ((1, 0), (0, 0), (0, 1)),
        ((-1, 1), (0, 1), (1, 1)),
        ((-1, 0), (1, 1), (1, 0)),
        ((1, 1), (1, 0), (0, 0)),
    )
    for kind, ((shift, axis), (sy, sx), (ey, ex)) in enumerate(sides):
        rows, cols = np.nonzero(mask & ~np.roll(mask, shift, axis=axis))
        starts.append((rows + sy) * width + cols + sx)
        ends.append((rows + ey) * width + cols + ex)
        kinds.append(np.full(rows.size, kind, np.int8))
        pixels.append(rows * mask.shape[1] + cols)
    start, end, kind, pixel = (np.concatenate(a) for a in (starts, ends, kinds, pixels))
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


# -------------------------------------------------------------------------------------------- overlays


@functools.lru_cache(maxsize=4096)
def colour_for(label_id: int) -> tuple[int, int, int]:
    """Stable, bright colour of a gland id.

    How it works: hues step by the golden ratio, so neighbouring ids get well-separated colours;
    saturation cycles over three levels to separate ids whose hues come close again.

    Args:
        label_id: Gland id (>= 0).

    Returns:
        (r, g, b) in 0..255.

    Raises:
        ValueError: ``label_id`` is negative.
    """
    if label_id < 0:
        raise ValueError(f"gland ids are >= 0, got {label_id}")
    hue = (0.11 + label_id * 0.618033988749895) % 1.0
    saturation = (0.85, 0.65, 0.75)[label_id % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float = 0.4,
    outlines: bool = True,
    ids: bool = False,
    colours: dict[int, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Glands drawn over the image, each in its own colour.

    Args:
        image (uint8[H, W, 3]): RGB image (uint8[H, W] grayscale is accepted too).
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        alpha: Opacity of the filled masks (0 = no fill).
        outlines: Draw each gland's inner boundary opaque (thicker on images over 1200 pixels).
        ids: Write each gland's id at its centroid.
        colours: Colour per id; other ids use :func:`colour_for`.

    Returns:
        uint8[H, W, 3]: a new image; pixels outside glands are unchanged.

    Raises:
        ValueError: Shapes or dtypes do not match the contract, or alpha is outside 0..1.
    """
    out = _check_image(image, labels, alpha)
    gids, compact = _compact(_check_labels(labels))
    custom = colours or {}
    lut = _lut([custom.get(int(i)) or colour_for(int(i)) for i in gids])
    _paint(out, compact, lut, np.ones(lut.shape[0], bool), alpha, outlines)
    if ids and gids.size:
        _draw_ids(out, compact, gids)
    return out


def outcome_overlay(
    image: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    outcomes: _Outcomes,
    *,
    alpha: float = 0.4,
    outlines: bool = True,
) -> np.ndarray:
    """Detection outcomes drawn over the image.

    Predicted glands in ``outcomes.tp`` are green, those in ``outcomes.fp`` red (``OUTCOME_COLOURS``),
    predicted ids in neither grey. Missed ground-truth glands (``outcomes.fn``) get a blue outline and a
    light blue fill (half of ``alpha``) underneath the predictions.

    Args:
        image (uint8[H, W, 3]): RGB image.
        pred (int[H, W]): Predicted label map, 0=NO masks; 1,2... are mask labels.
        gt (int[H, W]): Ground-truth label map, same convention.
        outcomes: Object with ``tp``, ``fp`` (predicted ids) and ``fn`` (ground-truth ids), e.g.
            ``glandseg_core.metrics.Outcomes``.
        alpha: Opacity of the filled predicted masks.
        outlines: Draw opaque outlines.

    Returns:
        uint8[H, W, 3]: a new image.

    Raises:
        ValueError: Shapes or dtypes do not match the contract, or alpha is outside 0..1.
    """
    out = _check_image(image, pred, alpha)
    _check_image(image, gt, alpha)
    gt_ids, gt_compact = _compact(_check_labels(gt))
    missed = np.concatenate([[False], np.isin(gt_ids, np.fromiter(map(int, outcomes.fn), np.int64))])
    _paint(out, gt_compact, _lut([OUTCOME_COLOURS["FN"]] * gt_ids.size), missed, alpha / 2, outlines)

    pred_ids, pred_compact = _compact(_check_labels(pred))
    tp, fp = set(map(int, outcomes.tp)), set(map(int, outcomes.fp))
    pred_colours = [
        OUTCOME_COLOURS["TP"] if int(i) in tp else OUTCOME_COLOURS["FP"] if int(i) in fp else _UNSCORED
        for i in pred_ids
    ]
    _paint(out, pred_compact, _lut(pred_colours), np.ones(pred_ids.size + 1, bool), alpha, outlines)
    return out


def disagreement_map(image: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """Where two label maps disagree on foreground.

    Pixels only ``labels_a`` calls gland are tinted orange, pixels only ``labels_b`` calls gland cyan
    (``DISAGREEMENT_COLOURS``, 65% opacity); pixels both call gland show the image dimmed to 55%, and
    pixels both call background are unchanged. Instance ids are ignored.

    Args:
        image (uint8[H, W, 3]): RGB image.
        labels_a, labels_b (int[H, W]): Two label maps, 0=NO masks; 1,2... are mask labels.

    Returns:
        uint8[H, W, 3]: a new image.

    Raises:
        ValueError: Shapes or dtypes do not match the contract.
    """
    out = _check_image(image, labels_a, 0.0)
    _check_image(image, labels_b, 0.0)
    fg_a, fg_b = _check_labels(labels_a) > 0, _check_labels(labels_b) > 0
    for sel, key in ((fg_a & ~fg_b, "A only"), (fg_b & ~fg_a, "B only")):
        out[sel] = np.rint(out[sel] * 0.35 + np.float32(DISAGREEMENT_COLOURS[key]) * 0.65).astype(
            np.uint8
        )
    both = fg_a & fg_b
    out[both] = np.rint(out[both] * 0.55).astype(np.uint8)
    return out


def highlight(image: np.ndarray, labels: np.ndarray, gland_id: int) -> np.ndarray:
    """One gland in focus: everything else dimmed to 35%, the gland outlined in yellow.

    Args:
        image (uint8[H, W, 3]): RGB image.
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        gland_id: The id to show.

    Returns:
        uint8[H, W, 3]: a new image.

    Raises:
        ValueError: ``gland_id`` is not in ``labels``, or shapes or dtypes do not match the contract.
    """
    out = _check_image(image, labels, 0.0)
    mask = _check_labels(labels) == gland_id
    if gland_id <= 0 or not mask.any():
        raise ValueError(f"gland {gland_id} is not in the label map")
    out[~mask] = np.rint(out[~mask] * 0.35).astype(np.uint8)
    out[_outline(mask.astype(np.int32))] = _HIGHLIGHT
    return out


# --------------------------------------------------------------------------------------------- helpers


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """The label map as an array, after checking it is 2-D, integer and non-negative."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "biu":
        raise ValueError(f"expected a 2-D integer label map, got {lab.dtype} {lab.shape}")
    if lab.dtype == bool:
        return lab.astype(np.int32)
    if lab.size and lab.dtype.kind == "i" and lab.min() < 0:
        raise ValueError(f"label ids must be >= 0, got min {lab.min()}")
    return lab


def _check_image(image: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """A float-free RGB copy of image, after checking it against the label map's shape."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    if img.shape[:2] != np.shape(labels):
        raise ValueError(f"image is {img.shape[:2]} but the label map is {np.shape(labels)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img.copy()


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted non-zero ids, map with ids replaced by 1..n), so lookups stay small for sparse ids."""
    ids = np.unique(labels)
    ids = ids[ids != 0]
    compact = np.zeros(labels.shape, np.int32)
    fg = labels != 0
    compact[fg] = np.searchsorted(ids, labels[fg]) + 1
    return ids, compact


def _lut(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """(n + 1, 3) uint8 colour table whose row 0 (background) is black."""
    return np.asarray([(0, 0, 0), *colours], np.uint8).reshape(-1, 3)


def _outline(compact: np.ndarray) -> np.ndarray:
    """Inner boundary pixels of every object, about 1 pixel per 1200 pixels of image side thick."""
    edge = find_boundaries(compact, mode="inner") & (compact > 0)
    extra = round(max(compact.shape) / 1200) - 1
    if extra > 0:
        edge = ndimage.binary_dilation(edge, iterations=extra) & (compact > 0)
    return edge


def _paint(
    out: np.ndarray,
    compact: np.ndarray,
    lut: np.ndarray,
    active: np.ndarray,
    alpha: float,
    outlines: bool,
) -> None:
    """Blend lut colours of the active compact ids into out at alpha, then draw their outlines opaque."""
    sel = active[compact]
    sel &= compact > 0
    if alpha > 0:
        colour = lut[compact[sel]].astype(np.float32)
        out[sel] = np.rint(out[sel] * (1.0 - alpha) + colour * alpha).astype(np.uint8)
    if outlines:
        edge = _outline(compact) & sel
        out[edge] = lut[compact[edge]]


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at size (a fixed-size bitmap font when Pillow lacks FreeType)."""
    return ImageFont.load_default(size=size)


def _draw_ids(out: np.ndarray, compact: np.ndarray, ids: np.ndarray) -> None:
    """Write each id at its object's centroid, white on a black stroke."""
    centres = ndimage.center_of_mass(compact > 0, compact, np.arange(1, ids.size + 1))
    size = max(10, round(min(out.shape[:2]) / 40))
    font = _font(size)
    stroke = max(1, size // 8) if isinstance(font, ImageFont.FreeTypeFont) else 0  # bitmap: no stroke
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    for gid, (row, col) in zip(ids.tolist(), centres, strict=True):
        text = str(gid)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        xy = (col - (left + right) / 2, row - (top + bottom) / 2)
        draw.text(xy, text, fill=(255, 255, 255), font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    out[...] = np.asarray(canvas)
