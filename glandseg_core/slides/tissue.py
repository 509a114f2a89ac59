"""Find tissue on a slide thumbnail, so background windows are never segmented.

How it works: H&E tissue is coloured and glass is white or grey, so the HSV saturation ``(max - min) / max``
separates them. Otsu's threshold on the saturation splits the two, clipped to [``SAT_MIN``, ``SAT_MAX``] so
that a thumbnail that is all tissue (or all glass) is not split in two; holes (lumens, white fat) are filled,
specks smaller than ``MIN_SPECK`` thumbnail pixels dropped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

SAT_MIN = 0.04  # saturation below this is always background (white or grey glass)
SAT_MAX = 0.15  # above this always tissue (pale eosin still reaches ~0.2)
MIN_SPECK = 16  # thumbnail pixels; smaller tissue specks (dust) are dropped


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail.

    Args:
        thumbnail: uint8[h, w, 3] RGB.

    Returns:
        bool[h, w], True on tissue.
    """
    rgb = thumbnail.astype(np.float32)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    sat = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    t = threshold_otsu(sat) if sat.max() > sat.min() else SAT_MIN
    mask = sat > float(np.clip(t, SAT_MIN, SAT_MAX))
    mask = ndi.binary_opening(mask, iterations=1)
    mask = ndi.binary_fill_holes(mask)
    lab, n = ndi.label(mask)
    if n:
        sizes = np.bincount(lab.ravel())
        small = sizes < MIN_SPECK
        small[0] = True
        mask = ~small[lab]
    return mask


def has_tissue(mask: np.ndarray, scale: float, box: tuple[int, int, int, int]) -> bool:
    """Whether a level-0 box (x0, y0, x1, y1) holds any tissue of ``mask`` (a thumbnail whose pixels are
    ``scale`` level-0 pixels wide)."""
    x0, y0, x1, y1 = box
    h, w = mask.shape
    c0, r0 = max(0, int(x0 // scale)), max(0, int(y0 // scale))
    c1, r1 = min(w, int(-(-x1 // scale)) + 1), min(h, int(-(-y1 // scale)) + 1)
    return bool(mask[r0:r1, c0:c1].any())
