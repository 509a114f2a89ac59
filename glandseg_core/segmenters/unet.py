"""The U-Net segmenter: gland and contour probabilities, then a marker-controlled watershed.

Post-processing (instance mode): markers are the gland interiors (gland probability high, contour probability
low); a marker-controlled watershed on the gland probability grows them back to the full gland mask, so touching
glands stay apart. With the separation head (``unet_separation``) the markers are the cores of the predicted
per-gland distance instead, and the watershed floods the negated distance. Semantic mode labels the connected
components of the gland mask.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import SupportsInt, cast

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed
from torch.nn import functional as F

from ..config import RunConfig
from ..device import autocast
from ..progress import Counter, ProgressFn
from ..thresholds import UNetPost
from .base import Plan, check_image, to_tensor
from .instances import Instances, labels_to_instances
from .scale import at_model_scale, model_factor, scaled_shape
from .tiling import Tiling, aligned_spans, blend_windows
from .tta import VIEWS_8, mean_of_views

Forward = Callable[
    [torch.Tensor], torch.Tensor
]  # float32[1, 3, h, w] -> probabilities float32[1, C, h, w] (C = 2, or 3 with the separation head)


def remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Set to 0 the objects of int32[H, W] ``labels`` smaller than ``min_area`` pixels."""
    if min_area <= 0 or not labels.any():
        return labels
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def _sequential(labels: np.ndarray) -> np.ndarray:
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)


def number_kept(labels: np.ndarray, min_area: int, areas: np.ndarray | None = None) -> np.ndarray:
    """``relabel_sequential(remove_small(labels, min_area))`` of int32[H, W] pre-labels: the objects of at least
    ``min_area`` pixels get ids 1..N in increasing order of their old id, the others 0.

    How it works: a lookup table from old id to new id, built from ``areas`` (``np.bincount(labels.ravel())``,
    given by a caller that scores many ``min_area`` on the same pre-labels) in one pass.
    """
    areas = np.bincount(labels.ravel()) if areas is None else areas
    keep = areas >= min_area if min_area > 0 else areas > 0
    keep[0] = False
    lut = np.zeros(areas.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


# The stages of probs_to_labels, each a function of fewer settings than the next; segmenters/unet_grid.py
# runs the same functions over a tuning grid, computing each stage once per distinct value of its settings.


def gland_mask(prob: np.ndarray, fg_thresh: float) -> np.ndarray:
    """bool[H, W]: gland probability ``prob[0]`` above ``fg_thresh``, holes filled."""
    return ndi.binary_fill_holes(prob[0] > fg_thresh)


def marker_components(prob: np.ndarray, mask: np.ndarray, post: UNetPost) -> np.ndarray:
    """int32[H, W] connected components of the watershed seeds (before ``post.min_marker_area``).

    With the distance channel (``prob[2]``, ``unet_separation``): distance > ``post.marker_dist`` inside
    ``mask``. Else the gland interiors: gland probability above ``post.fg_thresh`` and contour probability
    below ``post.contour_thresh``.
    """
    if prob.shape[0] == 3:
        seeds = mask & (prob[2] > post.marker_dist)
    else:
        seeds = (prob[0] > post.fg_thresh) & (prob[1] < post.contour_thresh)
    return ndi.label(seeds)[0].astype(np.int32)


def flood_surface(prob: np.ndarray) -> np.ndarray:
    """float[H, W] the watershed floods (lowest first): the negated distance with the separation head, else
    the negated gland probability."""
    return -(prob[2] if prob.shape[0] == 3 else prob[0])


def grow(surface: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """int32[H, W] pre-labels: a watershed of ``surface`` from ``markers`` within ``mask``; gland pixels that no
    marker reached (a gland whose interior was all contour) become their own objects, numbered after."""
    labels = watershed(surface, markers, mask=mask).astype(np.int32)
    orphan, _ = ndi.label(mask & (labels == 0))
    if orphan.any():
        labels = np.where(orphan > 0, orphan + labels.max(), labels).astype(np.int32)
    return labels


def components(mask: np.ndarray) -> np.ndarray:
    """int32[H, W] pre-labels of semantic mode: the connected components of ``mask``."""
    return ndi.label(mask)[0].astype(np.int32)


def probs_to_labels(prob: np.ndarray, post: UNetPost) -> np.ndarray:
    """Turn U-Net probabilities into a label map.

    Args:
        prob: float32[2, H, W]: gland probability and contour probability (sigmoid outputs); or float32[3, H, W]
            from a U-Net with the separation head, whose third channel (the per-gland normalised distance)
            gives the markers (:func:`marker_components`).
        post: thresholds.

    Returns:
        int32[H, W] label map, 0=background, 1..N glands.
    """
    if prob.ndim != 3 or prob.shape[0] not in (2, 3):
        raise ValueError(f"prob must be [2, H, W] or [3, H, W], got {prob.shape}")
    mask = gland_mask(prob, post.fg_thresh)
    if not post.instance:
        return number_kept(components(mask), post.min_area)
    markers = remove_small(marker_components(prob, mask, post), post.min_marker_area)
    return number_kept(grow(flood_surface(prob), markers, mask), post.min_area)


@dataclass
class UNetSegmenter:
    """A loaded U-Net (see :class:`segmenters.base.Segmenter`); ``raw`` gives float32[C, H, W] probabilities
    (C = 2: gland, contour; C = 3 with the separation head: and the per-gland normalised distance)."""

    model: torch.nn.Module
    cfg: RunConfig
    post: UNetPost
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    path: Path | None = None
    tta: bool = False
    tiling: Tiling = field(default_factory=Tiling)
    kind: str = "unet"

    def network_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(h, w) the network sees for an image of ``shape`` (H, W[, C]) at the model's pixel size: resized
        by ``cfg.params.scale`` (at least 16 pixels a side)."""
        h, w = shape[0], shape[1]
        scale = self.cfg.params.scale
        if scale == 1.0:
            return h, w
        return max(16, round(h * scale)), max(16, round(w * scale))

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8[H, W, 3] -> float32[1, 3, h, w] in [0, 1] at the U-Net's scale (``cfg.params.scale``)."""
        check_image(image)
        x = to_tensor(image).to(self.device)
        if self.cfg.params.scale != 1.0:
            size = self.network_shape(image.shape)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def _windows(self, size: tuple[int, int]) -> int:
        """Windows of a prepared input of ``size`` (h, w), as :func:`tiling.blend_windows` cuts it."""
        t, align = self.tiling, int(cast(SupportsInt, self.model.multiple))
        return math.prod(len(aligned_spans(n, t.unet_tile, t.unet_overlap, align)) for n in size)

    def plan(self, shape: tuple[int, ...], mpp: float | None = None) -> Plan:
        """Windows and views of segmenting an image of ``shape`` (H, W[, C]) at ``mpp`` µm/px: above
        ``tiling.tile_above`` pixels (at the model's pixel size), windows of ``tiling.unet_tile`` at the
        U-Net's scale, starting on its pooling grid; 8 views each with TTA."""
        f = model_factor(mpp, self.cfg.data_mpp)
        work = scaled_shape(shape, f)
        views = len(VIEWS_8) if self.tta else 1
        if not self.tiling.needed(work):
            return Plan(work, 1, views, f)
        return Plan(work, self._windows(self.network_shape(work)), views, f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities float32[1, 2, h, w] of a prepared input: padded to the network's stride (reflect),
        run, cropped back."""
        multiple = cast(int, self.model.multiple)  # UNet.multiple, ResNetUNet.multiple
        h, w = x.shape[-2:]
        ph, pw = -h % multiple, -w % multiple
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        with autocast(x.device, self.cfg.train_amp):
            logits = self.model(xp.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits.float())[..., :h, :w]

    def window(self, x: torch.Tensor, forward: Forward | None = None) -> torch.Tensor:
        """``forward`` (default :meth:`forward`), averaged over 8 flips/rotations when ``tta`` is on."""
        forward = self.forward if forward is None else forward
        with torch.inference_mode():
            return mean_of_views(forward, x) if self.tta else forward(x)

    def prepared_probs(
        self, x: torch.Tensor, *, tiled: bool, counter: Counter | None = None
    ) -> torch.Tensor:
        """Probabilities float32[1, C, h, w] of a prepared input, window by window when ``tiled``; each
        forward pass ticks ``counter``."""
        forward = self.forward if counter is None else counter.counted(self.forward)
        with torch.inference_mode():
            if not tiled:
                return self.window(x, forward)
            t = self.tiling
            return blend_windows(
                partial(self.window, forward=forward),
                x,
                tile=t.unet_tile,
                overlap=t.unet_overlap,
                align=int(cast(SupportsInt, self.model.multiple)),
            )

    def raw(self, image: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
        """Gland and contour probabilities (and the distance with the separation head) float32[C, H, W] at the
        image's size (windowed above ``tiling.tile_above`` pixels, blended without seams); ``progress`` gets a
        step per forward pass."""
        check_image(image)
        counter = self.plan(image.shape).counter(progress)
        with torch.inference_mode():
            x = self.prepare(image)
            h, w = image.shape[:2]
            counter.start()
            p = self.prepared_probs(x, tiled=self.tiling.needed(image.shape), counter=counter)
            del x
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p[0].cpu().numpy()

    def labels(self, raw: np.ndarray, post: UNetPost | None = None) -> np.ndarray:
        """int32[H, W] label map (0=background, 1..N glands) of :meth:`raw`'s probabilities."""
        return probs_to_labels(raw, self.post if post is None else post)

    def __call__(
        self, image: np.ndarray, mpp: float | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """int32[H, W] label map of uint8[H, W, 3] RGB (0=background, 1..N glands) of pixel size ``mpp`` µm
        (None: already at the model's scale), at the image's size; see :meth:`plan` for ``progress``."""
        return at_model_scale(
            lambda im: self.labels(self.raw(im, progress)), image, mpp, self.cfg.data_mpp
        )

    def window_plan(self, shape: tuple[int, ...]) -> Plan:
        """Views of :meth:`window_instances` on a window of ``shape``: one window (no inner tiling)."""
        return Plan(scaled_shape(shape, 1.0), 1, len(VIEWS_8) if self.tta else 1)

    def window_instances(self, image: np.ndarray, progress: ProgressFn | None = None) -> Instances:
        """The glands of a slide window, segmented whole (no inner tiling), one instance per label scored by
        its mean gland probability (:func:`instances.labels_to_instances`)."""
        check_image(image)
        whole = self
        if self.tiling.tile_above < max(image.shape[:2]):  # a window is already a tile
            whole = replace(self, tiling=replace(self.tiling, tile_above=max(image.shape[:2])))
        prob = whole.raw(image, progress)
        return labels_to_instances(whole.labels(prob), prob[0])
