"""Coloured overlays of label maps on images: gland identity, detection outcomes, disagreements.

Every function takes label maps: int (H, W), 0=NO masks; 1,2... are mask labels (ids need not be
consecutive, and one id may cover several pieces). Images are uint8 (H, W, 3) RGB; each function returns a
new image. No file I/O here. ``glandseg_core.outputs.export`` re-exports the public names.

Colours come from :mod:`.palette` (checked against H&E stain colours and colour-blind vision), three disjoint
sets for gland identity, outcomes and models; identity colours follow the glands' adjacency
(:mod:`.identity`: touching glands never share a colour). The merge /
split classification of the outcome view from :mod:`.outcomes`. Outlines are double: a dark outer ring and
the gland's colour inside it, so two touching glands always show a dark line between them.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.segmentation import find_boundaries, relabel_sequential

from .identity import gland_colours
from .outcomes import GlandOutcomes, gland_outcomes
from .palette import (
    DISAGREEMENT_COLOURS,
    GLAND_PALETTE,
    MODEL_COLOURS,
    OUTCOME_COLOURS,
    OUTCOME_NAMES,
    OUTLINE_DARK,
    TRUE_OUTLINE,
)

__all__ = [
    "DISAGREEMENT_COLOURS",
    "GLAND_PALETTE",
    "MODEL_COLOURS",
    "OUTCOME_COLOURS",
    "OUTCOME_NAMES",
    "GlandOutcomes",
    "check_labels",
    "colour_for",
    "compact_ids",
    "disagreement_map",
    "gland_colours",
    "gland_outcomes",
    "highlight",
    "outcome_legend",
    "outcome_overlay",
    "overlay",
]


# -------------------------------------------------------------------------------------------- overlays


def colour_for(label_id: int, labels: np.ndarray | None = None) -> tuple[int, int, int]:
    """Identity colour of a gland.

    With ``labels``, the colour :func:`gland_colours` gives the gland in that map (neighbouring glands
    differ; what every overlay draws). Without, ``GLAND_PALETTE`` cycled by id, so consecutive ids differ:
    a fallback for a gland seen without its map.

    Args:
        label_id: Gland id (>= 0; 0, the background, gets the last colour).
        labels (int[H, W] | None): The label map the gland belongs to, 0=NO masks; 1,2... are mask labels.

    Returns:
        (r, g, b) in 0..255.

    Raises:
        ValueError: ``label_id`` is negative, or not in ``labels``.
    """
    if label_id < 0:
        raise ValueError(f"gland ids are >= 0, got {label_id}")
    if labels is None:
        return GLAND_PALETTE[(label_id - 1) % len(GLAND_PALETTE)]
    colours = gland_colours(check_labels(labels))
    if label_id not in colours:
        raise ValueError(f"gland {label_id} is not in the label map")
    return colours[label_id]


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float = 0.4,
    outlines: bool = True,
    ids: bool = False,
    colours: dict[int, tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Glands drawn over the image, each in its identity colour; neighbouring glands (touching or within a
    few pixels) never share one (:func:`gland_colours`).

    Args:
        image (uint8[H, W, 3]): RGB image (uint8[H, W] grayscale is accepted too).
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels.
        alpha: Opacity of the filled masks (0 = no fill).
        outlines: Draw each gland's double outline opaque (a dark outer ring, then its colour; each ring
            about 1 pixel per 400 pixels of image side, 2 on a GlaS image).
        ids: Write each gland's id at its centroid.
        colours: Colour per id; other ids get their :func:`gland_colours` colour.

    Returns:
        uint8[H, W, 3]: a new image; pixels outside glands are unchanged.

    Raises:
        ValueError: Shapes or dtypes do not match the contract, or alpha is outside 0..1.
    """
    out = _check_image(image, labels, alpha)
    lab = check_labels(labels)
    gids, compact = compact_ids(lab)
    chosen = gland_colours(lab) | dict(colours or {})
    lut = _lut([chosen[int(i)] for i in gids])
    _paint(out, compact, lut, np.ones(lut.shape[0], bool), alpha, outlines)
    if ids and gids.size:
        _draw_ids(out, compact, gids)
    return out


def outcome_overlay(
    image: np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray,
    outcomes: object = None,
    *,
    alpha: float = 0.4,
    outlines: bool = True,
    ids: bool = False,
) -> np.ndarray:
    """Detection outcomes drawn over the image, merges and splits as such (``OUTCOME_COLOURS``).

    Predicted glands are filled by class (:func:`gland_outcomes`): TP bluish green, merge orange, split
    yellow, FP rust. Missed ground-truth glands get an azure outline and a light fill underneath. The ground-truth
    glands inside a merge, and the glands a split cuts, are outlined in white over the predictions, so a
    merge shows the several glands it swallowed and a split the one gland its pieces share.

    Args:
        image (uint8[H, W, 3]): RGB image.
        pred (int[H, W]): Predicted label map, 0=NO masks; 1,2... are mask labels.
        gt (int[H, W]): Ground-truth label map, same convention.
        outcomes: A precomputed :class:`GlandOutcomes` of (pred, gt); anything else (None, or an old
            ``metrics.Outcomes``) is ignored and the classification is computed here.
        alpha: Opacity of the filled predicted masks.
        outlines: Draw opaque double outlines (and the white ground-truth outlines).
        ids: Write each predicted gland's id at its centroid.

    Returns:
        uint8[H, W, 3]: a new image; pixels outside every gland are unchanged.

    Raises:
        ValueError: Shapes or dtypes do not match the contract, or alpha is outside 0..1.
    """
    out = _check_image(image, pred, alpha)
    _check_image(image, gt, alpha)
    pred, gt = check_labels(pred), check_labels(gt)
    klass = outcomes if isinstance(outcomes, GlandOutcomes) else gland_outcomes(pred, gt)
    gt_ids, gt_compact = compact_ids(gt)
    inside = set(klass.merged_or_split_gt())
    missed = [int(i) in set(klass.missed) - inside for i in gt_ids]
    _paint(
        out,
        gt_compact,
        _lut([OUTCOME_COLOURS["FN"]] * gt_ids.size),
        np.array([False, *missed]),
        alpha / 2,
        outlines,
    )
    pred_ids, pred_compact = compact_ids(pred)
    lut = _lut([OUTCOME_COLOURS[klass.pred.get(int(i), "FP")] for i in pred_ids])
    _paint(out, pred_compact, lut, np.ones(pred_ids.size + 1, bool), alpha, outlines)
    if outlines and inside:
        shown = np.isin(gt_compact, 1 + np.flatnonzero(np.isin(gt_ids, list(inside))))
        out[_rings(np.where(shown, gt_compact, 0), 1)[0]] = TRUE_OUTLINE
    if ids and pred_ids.size:
        _draw_ids(out, pred_compact, pred_ids)
    return out


def outcome_legend(klass: GlandOutcomes | None = None) -> dict[str, tuple[int, int, int]]:
    """Legend entries (name -> colour) of :func:`outcome_overlay`, with each class's count when ``klass``
    is given; the white ground-truth outline is not a fill colour and is left to the caption."""
    counts = klass.counts() if klass is not None else {}
    return {
        OUTCOME_NAMES[k] + (f" ×{counts[k]}" if k in counts else ""): c
        for k, c in OUTCOME_COLOURS.items()
    }


def disagreement_map(image: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """Where two label maps disagree on foreground.

    Pixels only ``labels_a`` calls gland are painted in U-Net's colour, pixels only ``labels_b`` calls gland
    in Mask R-CNN's (``DISAGREEMENT_COLOURS``, 85% opacity); pixels both call gland show the image lightened
    (45% image, 55% white), so that both models' colours, the darker one too, stand out against it; pixels
    both call background are unchanged. Instance ids are ignored.

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
    fg_a, fg_b = check_labels(labels_a) > 0, check_labels(labels_b) > 0
    for sel, key in ((fg_a & ~fg_b, "A only"), (fg_b & ~fg_a, "B only")):
        out[sel] = np.rint(
            out[sel] * 0.15 + np.asarray(DISAGREEMENT_COLOURS[key], np.float32) * 0.85
        ).astype(np.uint8)
    both = fg_a & fg_b
    out[both] = np.rint(out[both] * 0.45 + 255 * 0.55).astype(np.uint8)
    return out


def highlight(image: np.ndarray, labels: np.ndarray, gland_id: int) -> np.ndarray:
    """One gland in focus: everything else dimmed to 35%, the gland outlined in white over a dark ring.

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
    mask = check_labels(labels) == gland_id
    if gland_id <= 0 or not mask.any():
        raise ValueError(f"gland {gland_id} is not in the label map")
    out[~mask] = np.rint(out[~mask] * 0.35).astype(np.uint8)
    white, dark = _rings(mask.astype(np.int32), 2)
    out[white], out[dark] = TRUE_OUTLINE, OUTLINE_DARK
    return out


# --------------------------------------------------------------------------------------------- helpers


def check_labels(labels: np.ndarray) -> np.ndarray:
    """The label map as an array (bool becomes int32), after checking it is 2-D, integer and non-negative."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "biu":
        raise ValueError(f"expected a 2-D integer label map, got {lab.dtype} {lab.shape}")
    if lab.dtype == bool:
        return lab.astype(np.int32)
    if lab.size and lab.dtype.kind == "i" and lab.min() < 0:
        raise ValueError(f"label ids must be >= 0, got min {lab.min()}")
    return lab


def compact_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted non-zero ids, int32 map with ids replaced by 1..n), so lookups stay small for sparse ids.

    ``skimage.segmentation.relabel_sequential`` does the renumbering (it keeps the ids' order).
    """
    if labels.size == 0:
        return np.zeros(0, labels.dtype), np.zeros(labels.shape, np.int32)
    compact, _, inverse = relabel_sequential(labels)
    ids = inverse.out_values[inverse.in_values != 0]
    return ids, compact.astype(np.int32, copy=False)


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


def _lut(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """(n + 1, 3) uint8 colour table whose row 0 (background) is black."""
    return np.asarray([(0, 0, 0), *colours], np.uint8).reshape(-1, 3)


def _rings(compact: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` nested rings inside every object, outermost first, each about 1 pixel per 400 pixels of image
    side thick (2 on a GlaS image). Where two objects touch, each gets its own rings on its side of the line."""
    fg = compact > 0
    thick = max(1, round(max(compact.shape) / 400))
    edge = find_boundaries(compact, mode="inner") & fg
    rings, done = [], np.zeros_like(fg)
    for k in range(1, n + 1):
        reach = ndimage.binary_dilation(edge, iterations=k * thick - 1) if k * thick > 1 else edge
        rings.append(reach & fg & ~done)
        done |= rings[-1]
    return rings


def _paint(
    out: np.ndarray,
    compact: np.ndarray,
    lut: np.ndarray,
    active: np.ndarray,
    alpha: float,
    outlines: bool,
) -> None:
    """Blend lut colours of the active compact ids into out at alpha, then draw their double outlines
    opaque: a dark outer ring, then the object's own colour."""
    sel = active[compact]
    sel &= compact > 0
    if alpha > 0:
        colour = lut[compact[sel]].astype(np.float32)
        out[sel] = np.rint(out[sel] * (1.0 - alpha) + colour * alpha).astype(np.uint8)
    if outlines:
        dark, inner = (ring & sel for ring in _rings(compact, 2))
        out[dark] = OUTLINE_DARK
        out[inner] = lut[compact[inner]]


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at size (a fixed-size bitmap font when Pillow lacks FreeType)."""
    return ImageFont.load_default(size=size)


def _draw_ids(out: np.ndarray, compact: np.ndarray, ids: np.ndarray) -> None:
    """Write each id at its object's centroid, white on a black stroke."""
    centres = ndimage.center_of_mass(compact > 0, compact, np.arange(1, ids.size + 1))
    size = max(10, round(min(out.shape[:2]) / 28))
    font = _font(size)
    stroke = max(1, size // 6) if isinstance(font, ImageFont.FreeTypeFont) else 0  # bitmap: no stroke
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    for gid, (row, col) in zip(ids.tolist(), centres, strict=True):
        text = str(gid)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        xy = (col - (left + right) / 2, row - (top + bottom) / 2)
        draw.text(xy, text, fill=(255, 255, 255), font=font, stroke_width=stroke, stroke_fill=(0, 0, 0))
    out[...] = np.asarray(canvas)
