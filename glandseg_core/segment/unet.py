"""The U-Net segmenter: gland and contour probabilities, then a marker-controlled watershed.

Post-processing (instance mode): markers are the gland interiors (gland probability high, contour probability
low); a marker-controlled watershed on the gland probability grows them back to the full gland mask, so touching
glands stay apart. Semantic mode labels the connected components of the gland mask.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed
from torch.nn import functional as F

from ..config import RunConfig
from ..device import autocast
from ..thresholds import UNetPost
from .base import check_image, to_tensor
from .tiling import Tiling, blend_windows
from .tta import mean_of_views


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


def probs_to_labels(prob: np.ndarray, post: UNetPost) -> np.ndarray:
    """Turn U-Net probabilities into a label map.

    Args:
        prob: float32[2, H, W]: gland probability and contour probability (sigmoid outputs).
        post: thresholds.

    Returns:
        int32[H, W] label map, 0=background, 1..N glands.
    """
    if prob.ndim != 3 or prob.shape[0] != 2:
        raise ValueError(f"prob must be [2, H, W], got {prob.shape}")
    fg_prob, contour_prob = prob[0], prob[1]
    mask = ndi.binary_fill_holes(fg_prob > post.fg_thresh)
    if not post.instance:
        labels, _ = ndi.label(mask)
        return _sequential(remove_small(labels.astype(np.int32), post.min_area))
    markers_mask = (fg_prob > post.fg_thresh) & (contour_prob < post.contour_thresh)
    markers, _ = ndi.label(markers_mask)
    markers = remove_small(markers.astype(np.int32), post.min_marker_area)
    labels = watershed(-fg_prob, markers, mask=mask).astype(np.int32)
    # Gland pixels that no marker reached (a gland whose interior was all contour) become their own objects.
    orphan, _ = ndi.label(mask & (labels == 0))
    if orphan.any():
        labels = np.where(orphan > 0, orphan + labels.max(), labels).astype(np.int32)
    return _sequential(remove_small(labels, post.min_area))


@dataclass
class UNetSegmenter:
    """A loaded U-Net (see :class:`segment.base.Segmenter`); ``raw`` gives float32[2, H, W] probabilities."""

    model: torch.nn.Module
    cfg: RunConfig
    post: UNetPost
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    path: Path | None = None
    tta: bool = False
    tiling: Tiling = field(default_factory=Tiling)
    kind: str = "unet"

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """uint8[H, W, 3] -> float32[1, 3, h, w] in [0, 1] at the U-Net's scale (``cfg.unet_scale``)."""
        check_image(image)
        h, w = image.shape[:2]
        x = to_tensor(image).to(self.device)
        scale = self.cfg.unet_scale
        if scale != 1.0:
            size = (max(16, round(h * scale)), max(16, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities float32[1, 2, h, w] of a prepared input: padded to the network's stride (reflect),
        run, cropped back."""
        multiple = self.model.multiple
        h, w = x.shape[-2:]
        ph, pw = -h % multiple, -w % multiple
        xp = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        with autocast(x.device, self.cfg.train_amp):
            logits = self.model(xp.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits.float())[..., :h, :w]

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`, averaged over 8 flips/rotations when ``tta`` is on."""
        with torch.inference_mode():
            return mean_of_views(self.forward, x) if self.tta else self.forward(x)

    def prepared_probs(self, x: torch.Tensor, *, tiled: bool) -> torch.Tensor:
        """Probabilities float32[1, 2, h, w] of a prepared input, window by window when ``tiled``."""
        with torch.inference_mode():
            if not tiled:
                return self.window(x)
            t = self.tiling
            return blend_windows(
                self.window, x, tile=t.unet_tile, overlap=t.unet_overlap, align=int(self.model.multiple)
            )

    def raw(self, image: np.ndarray) -> np.ndarray:
        """Gland and contour probabilities float32[2, H, W] at the image's size (windowed above
        ``tiling.tile_above`` pixels, blended without seams)."""
        with torch.inference_mode():
            x = self.prepare(image)
            h, w = image.shape[:2]
            p = self.prepared_probs(x, tiled=self.tiling.needed(image.shape))
            del x
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p[0].cpu().numpy()

    def labels(self, raw: np.ndarray, post: UNetPost | None = None) -> np.ndarray:
        """int32[H, W] label map (0=background, 1..N glands) of :meth:`raw`'s probabilities."""
        return probs_to_labels(raw, self.post if post is None else post)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """int32[H, W] label map of uint8[H, W, 3] RGB (0=background, 1..N glands)."""
        return self.labels(self.raw(image))
