"""Gland identity colours by adjacency: neighbouring glands never share a colour (pure numpy / scipy).

Two glands are neighbours when they touch or lie within ``gap`` pixels of each other (each gland is dilated by
``gap`` pixels, a square of side ``2 * gap + 1``). The adjacency graph is coloured with DSatur (Brélaz 1979):
repeatedly colour the gland whose neighbours already use the most distinct colours (ties: more neighbours,
then the smaller id) with the first palette colour none of its neighbours uses. Glands far apart may share a
colour. The result depends only on the label map, so the same map always gets the same colours.

Label maps: int (H, W), 0=NO masks; 1,2... are mask labels (ids need not be consecutive).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from .palette import GLAND_PALETTE, RGB

GAP = 3  # pixels: glands this close are neighbours


def adjacency(labels: np.ndarray, gap: int = GAP) -> dict[int, set[int]]:
    """Gland id -> ids of the glands within ``gap`` pixels of it (touching ones included).

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        gap: Distance in pixels (>= 1; 1 means the glands touch, diagonals included).

    Returns:
        Every gland id of ``labels`` as a key, with its neighbours (a symmetric relation).
    """
    compact, _, inverse = relabel_sequential(np.asarray(labels))
    ids = inverse.out_values[inverse.in_values != 0].tolist()
    out: dict[int, set[int]] = {int(i): set() for i in ids}
    square = np.ones((2 * gap + 1, 2 * gap + 1), bool)
    for k, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is None:
            continue
        rows = slice(max(0, box[0].start - gap), box[0].stop + gap)
        cols = slice(max(0, box[1].start - gap), box[1].stop + gap)
        window = compact[rows, cols]
        grown = ndimage.binary_dilation(window == k, structure=square)
        near = {int(ids[j - 1]) for j in np.unique(window[grown]) if j and j != k}
        out[int(ids[k - 1])] |= near
        for j in near:
            out[j].add(int(ids[k - 1]))
    return out


def colour_indices(neighbours: dict[int, set[int]], n_colours: int) -> dict[int, int]:
    """DSatur colouring: gland id -> palette index in 0..n_colours-1, neighbours differing whenever
    ``n_colours`` suffices; where it does not, the index least used among the gland's neighbours."""
    index: dict[int, int] = {}
    todo = set(neighbours)
    while todo:
        gid = min(
            todo,
            key=lambda g: (
                -len({index[n] for n in neighbours[g] if n in index}),
                -len(neighbours[g]),
                g,
            ),
        )
        used = [index[n] for n in neighbours[gid] if n in index]
        free = [k for k in range(n_colours) if k not in used]
        index[gid] = free[0] if free else min(range(n_colours), key=lambda k: (used.count(k), k))
        todo.remove(gid)
    return index


def gland_colours(labels: np.ndarray, gap: int = GAP) -> dict[int, RGB]:
    """Gland id -> its identity colour (``GLAND_PALETTE``), neighbouring glands in different colours.

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        gap: Glands within this many pixels of each other count as neighbours.

    Returns:
        One (r, g, b) colour per gland id of ``labels``; the same map always gets the same colours.
    """
    index = colour_indices(adjacency(labels, gap), len(GLAND_PALETTE))
    return {gid: GLAND_PALETTE[k] for gid, k in sorted(index.items())}
