"""QuPath GeoJSON annotations rasterised to label maps (int32[H, W]: 0=background, 1..N glands).

QuPath exports one ``.geojson`` per image (File > Export objects as GeoJSON, or a script): a FeatureCollection,
a bare list of features or a single feature, in full-resolution pixel coordinates. Each Polygon or MultiPolygon
feature is one gland (its id is its place among them, 1..N); inner rings are holes and stay background.
Points and lines are not glands and are passed over. With ``classes``, only features whose QuPath
classification is one of them count (e.g. ``["Gland"]``, leaving out a tissue outline).

Pixel (row r, column c) covers [c, c + 1) × [r, r + 1) in QuPath's coordinates: it belongs to a polygon when
its centre (c + 0.5, r + 0.5) lies inside (even-odd rule, a scanline fill). Two glands that
share more than ``OVERLAP_TOLERANCE`` of the smaller one's pixels are a problem (one line naming the file);
a thinner overlap (a shared edge, a few brush pixels) goes to the gland drawn first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .spec import read_json

GEOJSON_EXT = ".geojson"
OVERLAP_TOLERANCE = (
    0.05  # shared pixels, as a fraction of the smaller gland, before an overlap is a problem
)
MAX_FEATURES = 65_535  # ids a 16-bit PNG label map holds
Ring = np.ndarray  # float64[K, 2]: (x, y) vertices
Shape = list[list[Ring]]  # polygons, each an exterior ring and its holes


def _ring(raw: Any, where: str) -> Ring:
    try:
        ring = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: a ring that is not a list of [x, y] points") from None
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 3 or not np.isfinite(ring).all():
        raise DatasetError(f"{where}: a ring needs at least 3 finite [x, y] points")
    return ring[:, :2]


def _polygons(geometry: Any, where: str) -> Shape | None:
    """The polygons of a geometry (None for points and lines, which are not glands)."""
    if not isinstance(geometry, dict):
        raise DatasetError(f"{where}: no geometry")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "GeometryCollection":
        parts = [_polygons(g, where) for g in geometry.get("geometries") or []]
        found = [p for part in parts if part for p in part]
        return found or None
    if kind not in ("Polygon", "MultiPolygon"):
        return None
    if not isinstance(coords, list) or not coords:
        raise DatasetError(f"{where}: a {kind} without coordinates")
    polys = [coords] if kind == "Polygon" else coords
    return [[_ring(r, where) for r in poly] for poly in polys]


def _class_name(feature: dict) -> str | None:
    props = feature.get("properties") or {}
    cls = props.get("classification") if isinstance(props, dict) else None
    if isinstance(cls, dict):
        return cls.get("name")
    return cls if isinstance(cls, str) else None


def _features(raw: Any) -> list[Any]:
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "FeatureCollection":
        return list(raw.get("features") or [])
    if isinstance(raw, dict) and raw.get("type") == "Feature":
        return [raw]
    if (
        isinstance(raw, dict)
        and "coordinates" in raw
        or isinstance(raw, dict)
        and raw.get("type") == "GeometryCollection"
    ):
        return [{"type": "Feature", "geometry": raw}]
    return []


def read_glands(path: Path, classes: Sequence[str] | None = None) -> list[Shape]:
    """The glands of a QuPath GeoJSON file in order: each one a list of polygons (exterior ring, then holes).

    Raises:
        DatasetError: unreadable JSON, a malformed polygon, or more glands than a label map holds (names the file).
    """
    raw = read_json(path, "GeoJSON")
    glands = []
    for i, feature in enumerate(_features(raw), 1):
        if not isinstance(feature, dict):
            raise DatasetError(f"{path}: feature {i} is not a GeoJSON object")
        if classes is not None and _class_name(feature) not in classes:
            continue
        shape = _polygons(feature.get("geometry"), f"{path}: feature {i}")
        if shape:
            glands.append(shape)
    if len(glands) > MAX_FEATURES:
        raise DatasetError(f"{path}: {len(glands)} glands, above the {MAX_FEATURES} a label map holds")
    return glands


def _fill(ring: Ring, shape: tuple[int, int]) -> tuple[slice, np.ndarray]:
    """(rows, bool[rows, W]): the pixels whose centres lie inside ``ring`` (even-odd rule), rows it spans.

    How it works: a scanline fill. Pixel centres sit at integers once the ring is moved by half a pixel; each
    row's centre line crosses the ring's edges (half-open in y, so a vertex is counted once), the sorted
    crossings pair up into runs [a, b), and a run covers the columns ceil(a) .. ceil(b) - 1 (a running sum
    over +1 at each start and -1 at each end). O(rows × edges) in numpy, unlike a point-in-polygon test per
    pixel.
    """
    h, w = shape
    x0, y0 = ring[:, 0] - 0.5, ring[:, 1] - 0.5
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r0, r1 = max(0, math.ceil(y0.min())), min(h - 1, math.floor(y0.max()))
    if r1 < r0:
        return slice(0, 0), np.zeros((0, w), bool)
    ys = np.arange(r0, r1 + 1, dtype=np.float64)[:, None]
    crosses = (y0 <= ys) != (y1 <= ys)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(crosses, x0 + (ys - y0) * (x1 - x0) / (y1 - y0), np.inf)
    xs.sort(axis=1)
    starts, ends = xs[:, 0::2], xs[:, 1::2][:, : xs[:, 0::2].shape[1]]
    rows, k = np.nonzero(np.isfinite(starts))
    diff = np.zeros((len(ys), w + 1), np.int32)
    np.add.at(diff, (rows, np.clip(np.ceil(starts[rows, k]), 0, w).astype(np.intp)), 1)
    np.add.at(diff, (rows, np.clip(np.ceil(ends[rows, k]), 0, w).astype(np.intp)), -1)
    return slice(r0, r1 + 1), np.cumsum(diff[:, :w], axis=1) > 0


def gland_mask(gland: Shape, shape: tuple[int, int]) -> np.ndarray:
    """bool[H, W]: the pixels of one gland (its polygons, less their holes)."""
    mask = np.zeros(shape, bool)
    for poly in gland:
        part = np.zeros(shape, bool)
        rows, inside = _fill(poly[0], shape)
        part[rows] = inside
        for hole in poly[1:]:
            rows, inside = _fill(hole, shape)
            part[rows] &= ~inside
        mask |= part
    return mask


def rasterise(glands: Sequence[Shape], shape: tuple[int, int], path: Path) -> np.ndarray:
    """The label map of ``glands`` on an image of ``shape`` (H, W): int32, 0=background, 1..N in file order.

    Raises:
        DatasetError: a gland with no pixel inside the image, or two glands that overlap by more than
            ``OVERLAP_TOLERANCE`` of the smaller one (names the file and both glands).
    """
    labels = np.zeros(shape, np.int32)
    areas = [0]
    for k, gland in enumerate(glands, 1):
        mask = gland_mask(gland, shape)
        area = int(mask.sum())
        if area == 0:
            raise DatasetError(
                f"{path}: gland {k} covers no pixel of the {shape[1]}×{shape[0]} image (other coordinates?)"
            )
        under = labels[mask]
        hits = np.bincount(under[under > 0], minlength=1)
        if hits.any():
            other = int(hits.argmax())
            shared = int(hits[other])
            if shared > OVERLAP_TOLERANCE * min(area, areas[other]):
                pct = math.floor(100 * shared / min(area, areas[other]) + 0.5)
                raise DatasetError(
                    f"{path}: glands {other} and {k} overlap ({shared} pixels, {pct}% of the smaller one)"
                )
        labels[mask & (labels == 0)] = k
        areas.append(area)
    return labels
