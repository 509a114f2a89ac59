"""Drawn gland outlines <-> instance label maps (the Annotate page's canvas, fabric.js 7 JSON).

Label maps are int32 (H, W): 0=NO masks; 1,2... are mask labels. The canvas shows the image scaled by
``(sx, sy) = (canvas_width / W, canvas_height / H)``; canvas coordinates are pixel-corner coordinates, so image
pixel ``(row, col)`` covers canvas ``[col * sx, (col + 1) * sx) x [row * sy, (row + 1) * sy)``.
No streamlit here: the page passes ``CanvasResult.json_data`` / ``.image_data`` in. Corrections of a label map
(erase, merge, split along a cut line) and saving it live in :mod:`.label_edits`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage
from skimage import draw
from skimage.measure import approximate_polygon
from skimage.segmentation import relabel_sequential

from glandseg_core.outputs.export import to_geojson

FABRIC_VERSION = "7.4.0"  # the fabric.js bundled with streamlit-drawable-canvas 0.13
STROKE = "#00e676"  # outline colour on H&E: green contrasts with pink/purple
FILL = "rgba(0, 230, 118, 0.18)"
_ORIGIN = {"left": -0.5, "top": -0.5, "center": 0.0, "right": 0.5, "bottom": 0.5}
_CURVE_SAMPLES = 6  # points per Bezier segment when a freehand path is turned into a polygon


def canvas_size(shape: tuple[int, int], max_width: int = 800) -> tuple[int, int]:
    """(width, height) of a canvas that shows an image of ``shape`` (H, W) at most ``max_width`` wide."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(1.0, max_width / w)
    return max(1, round(w * scale)), max(1, round(h * scale))


# ------------------------------------------------------------------------------------ canvas -> labels


def drawing_to_labels(
    drawing: dict[str, Any] | None, shape: tuple[int, int], size: tuple[int, int] | None = None
) -> np.ndarray:
    """Rasterise every closed shape of a fabric.js drawing at the image's full resolution.

    Each object (polygon, freehand path, rectangle, circle, ellipse) becomes one gland, ids 1..N in drawing
    order; where shapes overlap, the later one wins. Freehand paths are closed by a straight line from their
    end back to their start. Lines, points, text and shapes with fewer than 3 points are ignored.

    Args:
        drawing: ``CanvasResult.json_data`` (``{"objects": [...]}``) or None. shape: (H, W) of the image.
        size: (width, height) of the canvas; default the image's own size (scale 1).

    Returns:
        labels (int32[H, W]): 0=NO masks; 1,2... are mask labels.
    """
    h, w = int(shape[0]), int(shape[1])
    cw, ch = size if size is not None else (w, h)
    sx, sy = cw / w, ch / h
    labels = np.zeros((h, w), np.int32)
    next_id = 1
    for obj in (drawing or {}).get("objects", []) or []:
        pts = object_outline(obj)
        if pts is None or len(pts) < 3:
            continue
        # canvas corner coordinates -> image pixel-centre coordinates
        mask = fill_polygon(pts[:, 0] / sx - 0.5, pts[:, 1] / sy - 0.5, (h, w))
        if mask is None:
            continue
        labels[mask] = next_id
        next_id += 1
    # ids 1..N in order, without ids that later shapes covered completely
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def fill_polygon(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
    """Pixels whose centres lie inside a closed polygon, as a mask (``skimage.draw.polygon``).

    Vertices are in pixel-centre coordinates (pixel (r, c) is at y=r, x=c); the image clips the polygon. Even-odd
    rule; centres exactly on an edge count as inside (corners at centres (0, 0) and (4, 4) fill 5 x 5 pixels).

    Returns:
        bool[H, W] mask, or None when no pixel centre is inside.
    """
    rr, cc = draw.polygon(np.asarray(ys, float), np.asarray(xs, float), shape)
    if rr.size == 0:
        return None
    mask = np.zeros(shape, bool)
    mask[rr, cc] = True
    return mask


def image_data_to_labels(rgba: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Fallback for ``CanvasResult.image_data``: each 8-connected painted region (alpha > 0) is one gland.

    Touching shapes merge here, so prefer :func:`drawing_to_labels`. Filled holes count as painted.

    Args:
        rgba: uint8[h, w, 4] canvas pixels, or None. shape: (H, W) of the image (canvas resized to it).

    Returns:
        labels (int32[H, W]): 0=NO masks; 1,2... are mask labels.
    """
    h, w = int(shape[0]), int(shape[1])
    if rgba is None or np.asarray(rgba).ndim != 3:
        return np.zeros((h, w), np.int32)
    painted = ndimage.binary_fill_holes(np.asarray(rgba)[..., 3] > 0)
    ch, cw = painted.shape
    rows = np.minimum((np.arange(h) + 0.5) * ch / h, ch - 1).astype(int)
    cols = np.minimum((np.arange(w) + 0.5) * cw / w, cw - 1).astype(int)
    labels, _ = ndimage.label(painted[rows][:, cols], structure=np.ones((3, 3), bool))
    return labels.astype(np.int32)


def object_outline(obj: dict[str, Any]) -> np.ndarray | None:
    """The outline of one fabric.js object as float[N, 2] (x, y) canvas coordinates, or None.

    How it works: fabric stores ``points`` / ``path`` in the object's own space; the canvas position is
    ``T(center) @ R(angle) @ S(scale, flip) @ K(skew) @ (p - pathOffset)`` (fabric's ``calcOwnMatrix``), where
    ``pathOffset`` is the centre of the points' bounding box and ``center`` follows from ``left``/``top``,
    the origin and the stroked, scaled size (``translateToCenterPoint``).
    """
    kind = str(obj.get("type", "")).lower()
    if kind in ("polygon", "polyline"):
        pts = np.asarray([(p["x"], p["y"]) for p in obj.get("points") or []], float).reshape(-1, 2)
        if len(pts) == 0:
            return None
        lo, hi = pts.min(0), pts.max(0)
        local = pts - (lo + hi) / 2
        width, height = hi - lo
    elif kind == "path":
        parsed = _path_points(obj.get("path") or [])
        if parsed is None:
            return None
        pts, (lo, hi) = parsed
        local = pts - (lo + hi) / 2
        width, height = hi - lo
    elif kind in ("rect", "labeledrect"):
        width, height = float(obj.get("width", 0)), float(obj.get("height", 0))
        local = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) / 2
    elif kind in ("circle", "ellipse"):
        rx = float(obj.get("rx", obj.get("radius", 0)))
        ry = float(obj.get("ry", obj.get("radius", 0)))
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        local = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
        width, height = 2 * rx, 2 * ry
    else:
        return None
    width = float(obj.get("width", width))
    height = float(obj.get("height", height))
    return local @ _linear(obj).T + _center(obj, width, height)


def _linear(obj: dict[str, Any]) -> np.ndarray:
    """fabric's rotate @ scale/flip @ skewX @ skewY as a 2x2 matrix."""
    sx = float(obj.get("scaleX", 1)) * (-1 if obj.get("flipX") else 1)
    sy = float(obj.get("scaleY", 1)) * (-1 if obj.get("flipY") else 1)
    a = math.radians(float(obj.get("angle", 0)))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    skew_x = np.array([[1.0, math.tan(math.radians(float(obj.get("skewX", 0))))], [0.0, 1.0]])
    skew_y = np.array([[1.0, 0.0], [math.tan(math.radians(float(obj.get("skewY", 0)))), 1.0]])
    return rot @ np.diag([sx, sy]) @ skew_x @ skew_y


def _center(obj: dict[str, Any], width: float, height: float) -> np.ndarray:
    """fabric's getCenterPoint: left/top at the object's origin, moved to its centre (skew ignored here)."""
    stroke = float(obj.get("strokeWidth", 1) or 0)
    sx, sy = abs(float(obj.get("scaleX", 1))), abs(float(obj.get("scaleY", 1)))
    if obj.get("strokeUniform"):
        dims = np.array([width * sx + stroke, height * sy + stroke])
    else:
        dims = np.array([(width + stroke) * sx, (height + stroke) * sy])
    origin = np.array([_origin(obj.get("originX", "center")), _origin(obj.get("originY", "center"))])
    a = math.radians(float(obj.get("angle", 0)))
    offset = -origin * dims  # from the origin point to the centre, before rotation
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.array([float(obj.get("left", 0)), float(obj.get("top", 0))]) + rot @ offset


def _origin(value: Any) -> float:
    return _ORIGIN.get(value, 0.0) if isinstance(value, str) else float(value) - 0.5


def _path_points(path: list) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
    """(outline points, (bbox min, bbox max) as fabric computes it) of an absolute M/L/Q/C/Z path."""
    pts: list[tuple[float, float]] = []
    bounds: list[tuple[float, float]] = []
    cur = start = (0.0, 0.0)
    t = np.linspace(0, 1, _CURVE_SAMPLES + 1)[1:, None]
    for cmd in path:
        if not isinstance(cmd, (list, tuple)) or not cmd:
            return None
        op, args = str(cmd[0]).upper(), [float(v) for v in cmd[1:]]
        if op == "M" and len(args) == 2:
            cur = start = (args[0], args[1])
            pts.append(cur)
        elif op == "L" and len(args) == 2:
            bounds += [cur, (args[0], args[1])]
            cur = (args[0], args[1])
            pts.append(cur)
        elif op in ("Q", "C") and len(args) in (4, 6):
            p0, end = np.array(cur), np.array(args[-2:])
            ctrl = [np.array(args[0:2])] * 2 if op == "Q" else [np.array(args[0:2]), np.array(args[2:4])]
            if op == "Q":  # the drawn curve is quadratic
                curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl[0] + t**2 * end
            else:
                curve = _cubic(p0, ctrl[0], ctrl[1], end, t)
            pts += [tuple(p) for p in curve]
            # fabric's bounding box treats Q as a cubic with both control points at the Q control point
            bounds += [tuple(p) for p in _cubic_extrema(p0, ctrl[0], ctrl[1], end)]
            cur = (float(end[0]), float(end[1]))
        elif op == "Z":
            cur = start
        else:
            return None
    if len(pts) < 2:  # a cut line may be one straight segment; a shape needs 3 (drawing_to_labels)
        return None
    b = np.asarray(bounds or pts, float)
    return np.asarray(pts, float), (b.min(0), b.max(0))


def _cubic(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _cubic_extrema(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """End points and per-axis extrema of a cubic Bezier (exact bounding box)."""
    ts = [0.0, 1.0]
    for k in range(2):
        a = -p0[k] + 3 * p1[k] - 3 * p2[k] + p3[k]
        b = 2 * (p0[k] - 2 * p1[k] + p2[k])
        c = p1[k] - p0[k]
        if abs(a) < 1e-12:
            roots = [-c / b] if abs(b) > 1e-12 else []
        else:
            disc = b * b - 4 * a * c
            roots = [] if disc < 0 else [(-b + s * math.sqrt(disc)) / (2 * a) for s in (1, -1)]
        ts += [r for r in roots if 0 < r < 1]
    return _cubic(p0, p1, p2, p3, np.asarray(ts)[:, None])


# ------------------------------------------------------------------------------------ labels -> canvas


def labels_to_drawing(
    labels: np.ndarray,
    size: tuple[int, int] | None = None,
    *,
    tolerance: float = 1.0,
    min_area: int = 20,
    stroke: str = STROKE,
    fill: str = FILL,
    stroke_width: int = 2,
) -> dict[str, Any]:
    """Editable fabric.js polygons, one per gland piece, for the canvas's ``initial_drawing``.

    Uses the outer ring of each gland (:func:`glandseg_core.outputs.export.to_geojson`; holes are dropped), simplified
    with Douglas-Peucker at ``tolerance`` image pixels. A gland made of several pieces becomes several polygons
    (pieces under ``min_area`` pixels are dropped), so it comes back as several glands.

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels. size: (width, height) of the canvas (default
            the image's). tolerance: in image pixels. min_area: smaller pieces (pixels) are left out.
        stroke, fill, stroke_width: fabric styling of every polygon.

    Returns:
        ``{"version": ..., "objects": [polygon, ...]}``.
    """
    h, w = np.shape(labels)
    cw, ch = size if size is not None else (w, h)
    scale = np.array([cw / w, ch / h])
    objects = []
    for feature in to_geojson(labels)["features"]:
        geom = feature["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polys:
            ring = np.asarray(rings[0], float)
            if _ring_area(ring) < min_area:
                continue
            ring = approximate_polygon(ring, tolerance=tolerance)[:-1] * scale  # drop the closing point
            if len(ring) < 3:
                continue
            objects.append(
                _fabric_polygon(ring, {"fill": fill, "stroke": stroke, "strokeWidth": stroke_width})
            )
    return {"version": FABRIC_VERSION, "objects": objects}


def _fabric_polygon(ring: np.ndarray, style: dict[str, Any]) -> dict[str, Any]:
    """A fabric.js Polygon with centre origin through the canvas points ``ring`` (float[N, 2], x/y)."""
    lo, hi = ring.min(0), ring.max(0)
    centre = (lo + hi) / 2
    return {
        "type": "Polygon",
        "version": FABRIC_VERSION,
        "originX": "center",
        "originY": "center",
        "left": float(centre[0]),
        "top": float(centre[1]),
        "width": float(hi[0] - lo[0]),
        "height": float(hi[1] - lo[1]),
        **style,
        "scaleX": 1,
        "scaleY": 1,
        "angle": 0,
        "points": [{"x": round(float(x), 2), "y": round(float(y), 2)} for x, y in ring],
    }


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


# ------------------------------------------------------------------------------------- canvas clicks


def canvas_points(obj: dict, shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray | None:
    """float[N, 2] (row, col) image pixel-centre coordinates of a canvas object's outline or stroke (a click
    of the point tool is a small circle: pass it to ``label_edits.ids_at`` as its centre, ``pts.mean(0)``)."""
    pts = object_outline(obj)
    if pts is None or len(pts) == 0:
        return None
    sx, sy = size[0] / shape[1], size[1] / shape[0]
    return np.stack([pts[:, 1] / sy - 0.5, pts[:, 0] / sx - 0.5], axis=1)
