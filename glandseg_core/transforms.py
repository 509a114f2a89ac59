"""Joint augmentation of (image, labels): image uint8[H, W, 3], labels int32[H, W] (0=background, 1..N glands).

Geometry (crop, scale, free rotation, elastic deformation) is one resampling pass with
``scipy.ndimage.map_coordinates`` (bilinear for the image, nearest for the labels, so ids never blend);
flips and 90-degree rotations are exact array moves; colour is HED stain jitter plus brightness/contrast.
Where a crop reaches beyond the image it sees white glass, or with ``strong-mirror`` the image mirrored at its
edge (as the U-Net paper extrapolates borders), each mirrored gland a gland of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi
from skimage import measure
from skimage.color import hed2rgb, rgb2hed
from skimage.segmentation import find_boundaries

from .config import AUGMENT_POLICIES


@dataclass(frozen=True)
class AugmentParams:
    """Strength of each augmentation for a named policy."""

    flip_h: bool = False
    flip_v_rot90: bool = False
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: bool = False
    elastic_alpha: float = 0.0  # displacement scale in pixels
    elastic_grid: int = 48  # control-point spacing in pixels
    hed_sigma: float = 0.0
    hed_bias: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    # beyond the image: "white" glass, or "mirror" (the image reflected at its edge)
    outside: str = "white"


POLICIES: dict[str, AugmentParams] = {
    "none": AugmentParams(),
    "flip": AugmentParams(flip_h=True),
    "strong": AugmentParams(
        flip_h=True,
        flip_v_rot90=True,
        scale=(0.75, 1.33),
        rotate=True,
        elastic_alpha=6.0,
        elastic_grid=48,
        hed_sigma=0.05,
        hed_bias=0.05,
        brightness=0.1,
        contrast=0.15,
    ),
}
POLICIES["strong-mirror"] = replace(POLICIES["strong"], outside="mirror")
assert set(POLICIES) == set(AUGMENT_POLICIES)

_BACKGROUND_RGB = 255  # outside the slide: white glass, no gland


def _sample_grid(
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
    p: AugmentParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Input (row, col) coordinates for every output pixel: scale, rotation, crop centre and elastic field."""
    oh, ow = out_shape
    ih, iw = in_shape
    s = (
        float(np.exp(rng.uniform(np.log(p.scale[0]), np.log(p.scale[1]))))
        if p.scale != (1.0, 1.0)
        else 1.0
    )
    theta = rng.uniform(0, 2 * np.pi) if p.rotate else 0.0
    rr, cc = np.meshgrid(
        np.arange(oh, dtype=np.float32) - (oh - 1) / 2,
        np.arange(ow, dtype=np.float32) - (ow - 1) / 2,
        indexing="ij",
    )
    cos, sin = np.cos(theta) / s, np.sin(theta) / s
    r_in = cos * rr - sin * cc
    c_in = sin * rr + cos * cc
    # Crop centre: anywhere that keeps the rotated crop's centre inside the image.
    half_r, half_c = min(oh / 2 / s, ih / 2), min(ow / 2 / s, iw / 2)
    centre_r = rng.uniform(half_r * 0.5, ih - half_r * 0.5) if (oh, ow) != (ih, iw) else (ih - 1) / 2
    centre_c = rng.uniform(half_c * 0.5, iw - half_c * 0.5) if (oh, ow) != (ih, iw) else (iw - 1) / 2
    r_in += centre_r
    c_in += centre_c
    if p.elastic_alpha > 0:
        gh, gw = max(2, oh // p.elastic_grid + 2), max(2, ow // p.elastic_grid + 2)
        for coord in (r_in, c_in):
            coarse = rng.normal(0, p.elastic_alpha, size=(gh, gw)).astype(np.float32)
            coord += ndi.zoom(coarse, (oh / gh, ow / gw), order=3, mode="nearest")[:oh, :ow]
    return np.stack([r_in, c_in])


def _resample(
    image: np.ndarray, labels: np.ndarray, grid: np.ndarray, outside: str = "white"
) -> tuple[np.ndarray, np.ndarray]:
    mode = "mirror" if outside == "mirror" else "constant"
    out_img = np.empty(grid.shape[1:] + (3,), dtype=np.uint8)
    for ch in range(3):
        out_img[..., ch] = ndi.map_coordinates(
            image[..., ch], grid, order=1, mode=mode, cval=_BACKGROUND_RGB, prefilter=False
        )
    out_lab = ndi.map_coordinates(labels, grid, order=0, mode=mode, cval=0, prefilter=False)
    out_lab = out_lab.astype(np.int32)
    if mode == "mirror":
        out_lab = mirrored_apart(out_lab, _inside(grid, image.shape[:2]))
    return out_img, out_lab


def _inside(grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """bool[h, w]: the output pixels whose source (nearest pixel) lies inside an image of ``shape``."""
    r, c = np.rint(grid[0]), np.rint(grid[1])
    return (r >= 0) & (r <= shape[0] - 1) & (c >= 0) & (c <= shape[1] - 1)


def mirrored_apart(labels: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``labels`` where each part of a gland that lies wholly outside the image (``~inside``: a mirrored copy)
    gets an id of its own; parts with a pixel inside keep theirs, so a gland cut by the edge and its mirror
    image stay one gland, as at an edge mirrored at inference.

    How it works: connected regions of equal id (``skimage.measure.label``); a region without an inside pixel
    is a copy and is numbered after the largest id."""
    regions = measure.label(labels, background=0, connectivity=1)
    if regions.max() == 0:
        return labels
    touches = np.zeros(regions.max() + 1, bool)
    touches[regions[inside]] = True
    copies = ~touches
    copies[0] = False
    if not copies.any():
        return labels
    new = np.zeros(regions.max() + 1, np.int32)
    new[copies] = np.arange(1, int(copies.sum()) + 1, dtype=np.int32) + int(labels.max())
    return np.where(copies[regions], new[regions], labels).astype(np.int32)


def shift_stains(
    image: np.ndarray, scale: np.ndarray, offset: np.ndarray, *, relative: bool = False
) -> np.ndarray:
    """The image with each H&E stain's optical density scaled and offset: the random stain jitter of training
    and the fixed stain change of ``benchmarks/stain_shift.py``.

    How it works: colour deconvolution (``skimage.color.rgb2hed``, the Ruifrok-Johnston vectors) gives the
    haematoxylin, eosin and DAB densities; each is multiplied by its ``scale`` and moved by its ``offset``
    (with ``relative``, by ``offset`` times that stain's largest absolute density in the image), and
    ``hed2rgb`` mixes them back.

    Args:
        image: RGB (H, W, 3), uint8 or float in [0, 1].
        scale: float[3], the factor of each stain (H, E, DAB); 1 changes nothing.
        offset: float[3], added to each stain's density; 0 changes nothing.
        relative: ``offset`` in units of each stain's largest absolute density in ``image``.

    Returns:
        float64 (H, W, 3) RGB in [0, 1].
    """
    hed = rgb2hed(image)
    if relative:
        offset = offset * np.abs(hed).max(axis=(0, 1))
    return hed2rgb(hed * scale + offset)


def _colour(image: np.ndarray, p: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    if p.hed_sigma > 0 or p.hed_bias > 0:
        alpha = rng.uniform(1 - p.hed_sigma, 1 + p.hed_sigma, size=3)
        beta = rng.uniform(-p.hed_bias, p.hed_bias, size=3)
        x = shift_stains(x, alpha, beta, relative=True).astype(np.float32)
    if p.brightness > 0 or p.contrast > 0:
        c = rng.uniform(1 - p.contrast, 1 + p.contrast)
        b = rng.uniform(-p.brightness, p.brightness)
        x = (x - 0.5) * c + 0.5 + b
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    policy: str,
    rng: np.random.Generator,
    crop: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment an image and its label map together.

    Args:
        image: uint8[H, W, 3] RGB.
        labels: int32[H, W], 0=background, 1..N glands.
        policy: one of ``none``, ``flip``, ``strong``.
        rng: the random generator (the trainer seeds it, so runs repeat exactly).
        crop: output side in pixels; 0 keeps the whole image.

    Returns:
        (image uint8[h, w, 3], labels int32[h, w]); with ``crop`` h = w = crop.

    Raises:
        ValueError: for an unknown policy name.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; available: {', '.join(POLICIES)}")
    p = POLICIES[policy]
    geometric = p.scale != (1.0, 1.0) or p.rotate or p.elastic_alpha > 0
    if crop or geometric:
        out_shape = (crop, crop) if crop else image.shape[:2]
        if not geometric and crop <= min(image.shape[:2]):
            r0 = int(rng.integers(0, image.shape[0] - crop + 1))
            c0 = int(rng.integers(0, image.shape[1] - crop + 1))
            image, labels = image[r0 : r0 + crop, c0 : c0 + crop], labels[r0 : r0 + crop, c0 : c0 + crop]
        else:
            grid = _sample_grid(image.shape[:2], out_shape, p, rng)
            image, labels = _resample(image, labels, grid, p.outside)
    if p.flip_h and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if p.flip_v_rot90:
        if rng.random() < 0.5:
            image, labels = image[::-1], labels[::-1]
        # whole images keep their orientation (0 or 180 degrees); crops may turn by any multiple of 90
        k = int(rng.integers(0, 4)) if crop else 2 * int(rng.integers(0, 2))
        image, labels = np.rot90(image, k), np.rot90(labels, k)
    if p.hed_sigma > 0 or p.brightness > 0:
        image = _colour(image, p, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels, dtype=np.int32)


def unet_targets(labels: np.ndarray, contour_width: int) -> np.ndarray:
    """Gland and contour targets for the U-Net.

    Returns:
        float32[2, H, W]: channel 0 = gland (labels > 0), channel 1 = the inner contour band of each gland,
        ``contour_width`` pixels wide, which also separates touching glands.
    """
    fg = labels > 0
    contour = find_boundaries(labels, mode="inner") & fg
    if contour_width > 1:
        contour = ndi.binary_dilation(contour, iterations=contour_width - 1) & fg
    return np.stack([fg, contour]).astype(np.float32)


GAP_W0 = 10.0  # the U-Net paper's gap weight w0 (Ronneberger et al. 2015, eq. 2)
GAP_SIGMA = 5.0  # its sigma, in pixels at the U-Net's scale


def _touching_sides(box: tuple[slice, slice], shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """For each axis, whether the box starts at 0 / ends at the edge of ``shape`` (1) or not (0)."""
    return tuple((int(s.start == 0), int(s.stop == n)) for s, n in zip(box, shape, strict=True))


def gland_distance(labels: np.ndarray) -> np.ndarray:
    """Per-gland normalised distance transform: each gland pixel's Euclidean distance to its gland's border,
    divided by that gland's largest distance.

    A gland cut by the map's edge continues beyond it (the edge is not its border), as in a training crop.

    Args:
        labels: int[H, W], 0=background, 1..N glands.

    Returns:
        float32[H, W] in [0, 1]: 0 on the background, each gland's maximum 1.
    """
    out = np.zeros(labels.shape, np.float32)
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == k
        # pad with background, except where the box meets the map's edge: there the gland goes on
        padded = np.pad(mask, 1, mode="edge")
        (top, bottom), (left, right) = _touching_sides(box, labels.shape)
        padded[0] &= bool(top)
        padded[-1] &= bool(bottom)
        padded[:, 0] &= bool(left)
        padded[:, -1] &= bool(right)
        if padded.all():  # the map lies inside one gland: no border in sight
            out[box][mask] = 1.0
            continue
        dist = ndi.distance_transform_edt(padded)[1:-1, 1:-1]
        out[box][mask] = dist[mask] / dist[mask].max()
    return out


def gap_weights(labels: np.ndarray, w0: float = GAP_W0, sigma: float = GAP_SIGMA) -> np.ndarray:
    """The U-Net paper's separation weights: ``1 + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background
    pixels, where d1 and d2 are the distances to the nearest and second-nearest gland; 1 on gland pixels and
    where fewer than two glands lie within ``4 sigma`` (the thin gaps between touching glands weigh most).

    Args:
        labels: int[H, W], 0=background, 1..N glands.

    Returns:
        float32[H, W], at least 1.
    """
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    reach = int(np.ceil(4 * sigma))
    h, w = labels.shape
    for k, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        r0, r1 = max(0, box[0].start - reach), min(h, box[0].stop + reach)
        c0, c1 = max(0, box[1].start - reach), min(w, box[1].stop + reach)
        d = ndi.distance_transform_edt(labels[r0:r1, c0:c1] != k).astype(np.float32)
        a, b = d1[r0:r1, c0:c1], d2[r0:r1, c0:c1]
        b[...] = np.minimum(b, np.maximum(a, d))
        a[...] = np.minimum(a, d)
    gap = (labels == 0) & (d1 + d2 <= 4 * sigma)
    weights = np.ones(labels.shape, np.float32)
    weights[gap] += w0 * np.exp(-((d1[gap] + d2[gap]) ** 2) / (2 * sigma**2))
    return weights


def unet_separation_targets(labels: np.ndarray, contour_width: int) -> np.ndarray:
    """Targets of a U-Net with the separation head (``unet_separation``).

    Returns:
        float32[4, H, W]: gland and contour (:func:`unet_targets`), the per-gland normalised distance
        (:func:`gland_distance`, the third output's target) and the gap weights of the gland loss
        (:func:`gap_weights`, not an output).
    """
    return np.concatenate(
        [unet_targets(labels, contour_width), gland_distance(labels)[None], gap_weights(labels)[None]]
    )


def maskrcnn_target(labels: np.ndarray) -> dict[str, np.ndarray]:
    """torchvision detection target from a label map (as in the torchvision tutorial's PennFudanDataset).

    Returns:
        dict with ``masks`` uint8[N, H, W], ``boxes`` float32[N, 4] (x1, y1, x2, y2), ``labels`` int64[N] (all 1).
        Objects smaller than 2 pixels in either direction are dropped.
    """
    ids = np.unique(labels)
    ids = ids[ids != 0]
    masks = labels[None] == ids[:, None, None]
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    keep, boxes = [], []
    for i in range(len(ids)):
        r, c = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(r) and len(c) and r[-1] > r[0] and c[-1] > c[0]:
            keep.append(i)
            boxes.append((c[0], r[0], c[-1] + 1, r[-1] + 1))
    return {
        "masks": masks[keep].astype(np.uint8),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.ones(len(keep), dtype=np.int64),
    }
