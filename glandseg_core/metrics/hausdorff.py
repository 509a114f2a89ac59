"""Exact Hausdorff distances between objects of two label maps, and nearest-object search.

Distances are Euclidean, in pixels, on (row, column), between *all* foreground pixels of two objects (not
only their contours). Pure numpy + scipy, no I/O.

Why our own code and not ``scipy.spatial.distance.directed_hausdorff``: this pruned search (k-d tree of
one object's boundary, tile-level upper bounds, see `_directed_sq`) gives the same exact distances and is
faster. Measured on 20 GlaS Test A annotations against a shifted, eroded copy (258 partner pairs, both
directions, pixel extraction included): 1.7 s here against 12.1 s with ``directed_hausdorff`` (7x), with
no difference in any value. ``tests/test_metrics.py`` checks distances against ``directed_hausdorff``:
random objects, an interior-pixel case, a naive reference implementation and a real GlaS annotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .overlap import Overlap

_N_REFS = 16  # boundary points per object used for the cheap upper bounds
_N_SEEDS = 8  # pixels evaluated exactly to seed the lower bound
_TILE = 8  # side of the square tiles that group an object's pixels
_TILE_RADIUS = (_TILE - 1) * math.sqrt(0.5)  # farthest a pixel of a tile lies from the tile's centre


class _Obj:
    """Pixels (grouped by tile), 4-boundary, reference points and a lazy k-d tree of one object."""

    def __init__(self, compact: np.ndarray, k: int, box: tuple[slice, slice]) -> None:
        """Extracts object k of a compact map from its bounding-box crop `box`."""
        (r0, r1), (c0, c1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
        mask = compact[box] == k
        m = np.pad(mask, 1)
        inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        self.boundary = np.argwhere(mask & ~inner) + np.array([r0, c0], np.int64)
        self.box = (r0, r1 - 1, c0, c1 - 1)
        # Pixels in tile-major order: lay the crop on whole tiles of the image grid, viewed as
        # (tile row, tile column, row in tile, column in tile); np.nonzero then walks tile by tile.
        ar, ac = r0 - r0 % _TILE, c0 - c0 % _TILE
        nr, nc = -(-(r1 - ar) // _TILE), -(-(c1 - ac) // _TILE)
        grid = np.zeros((nr * _TILE, nc * _TILE), bool)
        grid[r0 - ar : r1 - ar, c0 - ac : c1 - ac] = mask
        tr, tc, dr, dc = np.nonzero(grid.reshape(nr, _TILE, nc, _TILE).transpose(0, 2, 1, 3))
        self.pixels = np.stack([tr * _TILE + dr + ar, tc * _TILE + dc + ac], axis=1).astype(np.int64)
        key = tr * nc + tc
        new_tile = np.ones(key.size, bool)
        new_tile[1:] = key[1:] != key[:-1]
        starts = np.flatnonzero(new_tile)
        self.tile_of = np.cumsum(new_tile) - 1  # non-decreasing: pixels are sorted by tile
        corner = np.stack([tr[starts] * _TILE + ar, tc[starts] * _TILE + ac], axis=1)
        self.tile_centre = corner + (_TILE - 1) / 2.0
        centre = self.boundary.mean(axis=0)
        angle = np.arctan2(*(self.boundary - centre).T)
        picks = np.linspace(0, len(angle) - 1, min(_N_REFS, len(angle))).round().astype(np.intp)
        self.refs = self.boundary[np.argsort(angle, kind="stable")[picks]]
        self._tree: cKDTree | None = None

    @property
    def tree(self) -> cKDTree:
        """k-d tree of the boundary pixels."""
        if self._tree is None:
            self._tree = cKDTree(self.boundary)
        return self._tree

    def upper_sq(self, pts: np.ndarray) -> np.ndarray:
        """Upper bounds (n,) on the squared distance from each point (n, 2) to this object."""
        out = np.full(
            pts.shape[0], np.inf if pts.dtype.kind == "f" else np.iinfo(np.int64).max, pts.dtype
        )
        r, c = pts[:, 0], pts[:, 1]
        for rr, cc in self.refs:
            np.minimum(out, (r - rr) ** 2 + (c - cc) ** 2, out=out)
        return out


def _directed_sq(x: _Obj, y: _Obj, y_map: np.ndarray, y_label: int) -> int:
    """Squared directed Hausdorff distance max_{a in X} min_{b in Y} |a - b|^2 (exact, an integer).

    How it works: pixels of X inside Y contribute 0. For a pixel a outside Y the nearest pixel of Y lies
    on Y's 4-boundary (if all 4 neighbours of the nearest pixel were in Y, the one a step towards a would
    be nearer), so a k-d tree of the boundary gives d(a, Y) exactly. To avoid querying every pixel:
    d(a, Y) <= min_k |a - r_k| over a few boundary points r_k of Y, and for a whole tile of X that bound
    is at most the bound of the tile's centre plus the tile radius. A few pixels from the tiles with the
    largest bounds are evaluated exactly, giving a lower bound L on the maximum; only tiles, then pixels,
    whose upper bound exceeds L can raise it, so only those are queried.
    """
    (xr0, xr1, xc0, xc1), (yr0, yr1, yc0, yc1) = x.box, y.box
    if xr1 < yr0 or yr1 < xr0 or xc1 < yc0 or yc1 < xc0:  # disjoint boxes: every pixel lies outside Y
        pts, tiles, present = x.pixels, x.tile_of, np.arange(x.tile_centre.shape[0])
    else:
        outside = y_map[x.pixels[:, 0], x.pixels[:, 1]] != y_label
        if not outside.any():
            return 0
        pts, tiles = x.pixels[outside], x.tile_of[outside]
        present = tiles[np.flatnonzero(np.diff(tiles, prepend=-1))]  # tiles is sorted
    tile_ub = np.sqrt(y.upper_sq(x.tile_centre[present])) + _TILE_RADIUS
    n_seed = min(_N_SEEDS, present.size)
    seed_tiles = present[np.argpartition(tile_ub, present.size - n_seed)[present.size - n_seed :]]
    low = int(_exact_sq(y.tree, pts[np.searchsorted(tiles, seed_tiles)]).max())
    kept = present[tile_ub > math.sqrt(low) - 1e-6]
    if kept.size * 4 < present.size:  # few tiles left: gather their (contiguous) pixel runs
        lo, hi = np.searchsorted(tiles, kept), np.searchsorted(tiles, kept, side="right")
        cand = pts[
            np.concatenate(
                [np.arange(a, b) for a, b in zip(lo, hi, strict=True)] + [np.zeros(0, np.intp)]
            )
        ]
    else:
        keep = np.zeros(x.tile_centre.shape[0], bool)
        keep[kept] = True
        cand = pts[keep[tiles]]
    cand = cand[y.upper_sq(cand) > low]
    if cand.shape[0]:
        low = max(low, int(_exact_sq(y.tree, cand).max()))
    return low


def _exact_sq(tree: cKDTree, pts: np.ndarray) -> np.ndarray:
    """Exact squared distances (int64) from each point to its nearest tree point."""
    _, idx = tree.query(pts)
    d = pts - np.asarray(tree.data)[idx].astype(np.int64)
    out: np.ndarray = (d * d).sum(axis=1)
    return out


def _boxes(compact: np.ndarray, n: int) -> tuple[list[tuple[slice, slice]], np.ndarray]:
    """Bounding slices of objects 1..n and their inclusive boxes (n, 4) as (r0, r1, c0, c1)."""
    slices = ndimage.find_objects(compact, max_label=n) if n else []
    boxes = np.array([(s[0].start, s[0].stop - 1, s[1].start, s[1].stop - 1) for s in slices], np.int64)
    return list(slices), boxes.reshape(-1, 4)


def _lower_bounds(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Lower bounds (m,) on the Hausdorff distance from one box's object to each of `others`' objects.

    How it works: if A's top row lies above B's top row, A's topmost pixel is at least that row gap away
    from every pixel of B (and symmetrically), so H >= |top_A - top_B|; likewise for the other three
    extents. Every pixel of A is also at least the Euclidean gap between the two boxes away from B.
    """
    extents = np.abs(others - box[None, :]).max(axis=1).astype(np.float64)
    gap_r = np.maximum(0, np.maximum(others[:, 0] - box[1], box[0] - others[:, 1]))
    gap_c = np.maximum(0, np.maximum(others[:, 2] - box[3], box[2] - others[:, 3]))
    out: np.ndarray = np.maximum(extents, np.sqrt((gap_r * gap_r + gap_c * gap_c).astype(np.float64)))
    return out


@dataclass
class HausdorffMemo:
    """What stays valid between `Overlap`s that share one ground truth (many predictions scored against it):
    the ground-truth objects' pixels and trees, and each distance keyed by the predicted object's own pixels
    (its box and packed mask) and the ground-truth index, so an object that reappears unchanged in another
    prediction is never measured again. Only valid for one ground-truth map."""

    gt_objs: dict[int, _Obj] = field(default_factory=dict)
    distances: dict[tuple[bytes, int], float] = field(default_factory=dict)


def _object_key(compact: np.ndarray, k: int, box: tuple[slice, slice]) -> bytes:
    """The pixels of object k of a compact map, as bytes: its box, then its mask inside the box, packed."""
    corner = np.array([box[0].start, box[0].stop, box[1].start, box[1].stop], np.int64)
    return corner.tobytes() + np.packbits(compact[box] == k).tobytes()


class HausdorffCache:
    """Computes and memoises H(pred object i, gt object j) for one `Overlap` (0-based object indices).

    H(A, B) = max(max_{a in A} d(a, B), max_{b in B} d(b, A)) over all pixels of both objects. Exact, and
    kept instead of scipy's ``directed_hausdorff`` because it is 7x faster on GlaS (see the module docstring).
    With a `HausdorffMemo` (the same ground truth as every earlier `Overlap` given it), ground-truth objects
    and distances carry over between predictions; the values are the same as without it.
    """

    def __init__(self, ov: Overlap, memo: HausdorffMemo | None = None) -> None:
        """Prepares the object boxes of both maps; pixels are extracted lazily."""
        self._ov = ov
        self._pred_slices, self.pred_boxes = _boxes(ov.pred_map, ov.n_pred)
        self._gt_slices, self.gt_boxes = _boxes(ov.gt_map, ov.n_gt)
        self._pred_objs: dict[int, _Obj] = {}
        self._gt_objs: dict[int, _Obj] = {} if memo is None else memo.gt_objs
        self._memo = memo
        self._keys: dict[int, bytes] = {}
        self._cache: dict[tuple[int, int], float] = {}

    @property
    def diagonal(self) -> float:
        """The image diagonal sqrt(H^2 + W^2): the term of an object whose other map is empty."""
        h, w = self._ov.shape
        return math.hypot(h, w)

    def _pred(self, i: int) -> _Obj:
        """Lazily extracted pred object i."""
        if i not in self._pred_objs:
            self._pred_objs[i] = _Obj(self._ov.pred_map, i + 1, self._pred_slices[i])
        return self._pred_objs[i]

    def _gt(self, j: int) -> _Obj:
        """Lazily extracted gt object j."""
        if j not in self._gt_objs:
            self._gt_objs[j] = _Obj(self._ov.gt_map, j + 1, self._gt_slices[j])
        return self._gt_objs[j]

    def distance(self, i: int, j: int) -> float:
        """Symmetric Hausdorff distance between pred object index i and gt object index j (0-based)."""
        key = (i, j)
        hit = self._cache.get(key)
        if hit is None and self._memo is not None:
            if i not in self._keys:
                self._keys[i] = _object_key(self._ov.pred_map, i + 1, self._pred_slices[i])
            hit = self._memo.distances.get((self._keys[i], j))
        if hit is None and self._identical(i, j):
            hit = 0.0
        if hit is None:
            a, b = self._pred(i), self._gt(j)
            sq = max(
                _directed_sq(a, b, self._ov.gt_map, j + 1), _directed_sq(b, a, self._ov.pred_map, i + 1)
            )
            hit = math.sqrt(sq)
        self._cache[key] = hit
        if self._memo is not None:
            self._memo.distances[(self._keys[i], j)] = hit
        return hit

    def _identical(self, i: int, j: int) -> bool:
        """Whether pred object i and gt object j cover exactly the same pixels."""
        ov = self._ov
        return bool(
            ov.pred_partner[i] == j
            and ov.pred_inter[i] == ov.pred_area[i]
            and ov.pred_area[i] == ov.gt_area[j]
        )

    def nearest_gt(self, i: int) -> tuple[int, float]:
        """(gt index nearest to pred object i by Hausdorff distance, ties: smallest id; the distance)."""
        return self._nearest(i, self.pred_boxes[i], self.gt_boxes, lambda j: self.distance(i, j))

    def nearest_pred(self, j: int) -> tuple[int, float]:
        """(pred index nearest to gt object j by Hausdorff distance, ties: smallest id; the distance)."""
        return self._nearest(j, self.gt_boxes[j], self.pred_boxes, lambda i: self.distance(i, j))

    @staticmethod
    def _nearest(
        own: int, box: np.ndarray, others: np.ndarray, dist: Callable[[int], float]
    ) -> tuple[int, float]:
        """Best-first search over candidates sorted by (lower bound, index); stops once bound > best."""
        if others.shape[0] == 0:
            raise ValueError(f"object {own} has no candidate on the other map")
        bounds = _lower_bounds(box, others)
        order = np.lexsort((np.arange(bounds.size), bounds))
        best, best_h = -1, math.inf
        for k in order:
            if bounds[k] > best_h + 1e-9:
                break
            h = dist(int(k))
            if h < best_h or (h == best_h and k < best):
                best, best_h = int(k), h
        return best, best_h


def hausdorff_terms(ov: Overlap, memo: HausdorffMemo | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-object Hausdorff terms of one image, as docs/METRICS.md defines them.

    Args:
        ov: The `Overlap` of a (pred, gt) pair.
        memo: Work kept between predictions scored against the same ground truth (`HausdorffMemo`).

    Returns:
        (pred_terms (n_pred,), gt_terms (n_gt,)) float64: each object's distance to its partner; without
        a partner, to the other map's object nearest by Hausdorff (ties: smallest id); when the other map
        has no objects, the image diagonal sqrt(H^2 + W^2).
    """
    cache = HausdorffCache(ov, memo)
    pred_haus = np.full(ov.n_pred, cache.diagonal)
    gt_haus = np.full(ov.n_gt, cache.diagonal)
    if ov.n_pred == 0 or ov.n_gt == 0:
        return pred_haus, gt_haus
    for i, j in enumerate(ov.pred_partner):
        pred_haus[i] = cache.distance(i, int(j)) if j >= 0 else cache.nearest_gt(i)[1]
    for j, i in enumerate(ov.gt_partner):
        gt_haus[j] = cache.distance(int(i), j) if i >= 0 else cache.nearest_pred(j)[1]
    return pred_haus, gt_haus
