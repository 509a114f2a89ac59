"""Coloured overlays of label maps on images: one colour per gland, detection outcomes, disagreements.

Every function takes label maps: int (H, W), 0=NO masks; 1,2... are mask labels (ids need not be
consecutive, and one id may cover several pieces). Images are uint8 (H, W, 3) RGB; each function returns a
new image. No file I/O here. ``glandseg_core.export`` re-exports the public names.
"""

from __future__ import annotations

import colorsys
import functools
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.segmentation import find_boundaries, relabel_sequential

OUTCOME_COLOURS = {"TP": (40, 200, 80), "FP": (230, 50, 50), "FN": (40, 120, 255)}
DISAGREEMENT_COLOURS = {"A only": (255, 150, 0), "B only": (0, 220, 255)}
_UNSCORED = (170, 170, 170)  # predicted ids that an Outcomes object lists neither as TP nor as FP
_HIGHLIGHT = (255, 225, 0)


class _Outcomes(Protocol):
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]


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
    gids, compact = compact_ids(check_labels(labels))
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
    gt_ids, gt_compact = compact_ids(check_labels(gt))
    missed = np.concatenate([[False], np.isin(gt_ids, np.fromiter(map(int, outcomes.fn), np.int64))])
    _paint(out, gt_compact, _lut([OUTCOME_COLOURS["FN"]] * gt_ids.size), missed, alpha / 2, outlines)

    pred_ids, pred_compact = compact_ids(check_labels(pred))
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
    fg_a, fg_b = check_labels(labels_a) > 0, check_labels(labels_b) > 0
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
    mask = check_labels(labels) == gland_id
    if gland_id <= 0 or not mask.any():
        raise ValueError(f"gland {gland_id} is not in the label map")
    out[~mask] = np.rint(out[~mask] * 0.35).astype(np.uint8)
    out[_outline(mask.astype(np.int32))] = _HIGHLIGHT
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
