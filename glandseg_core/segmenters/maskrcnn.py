"""The Mask R-CNN segmenter: detections kept as box-cropped instances, painted into a label map.

Instances are painted from the highest score down; a pixel belongs to the first instance that claims it, and
instances left with too little of their own mask are dropped (:func:`instances.paint`).

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN

from ..config import RunConfig
from ..progress import Counter, ProgressFn
from ..thresholds import MaskRCNNPost
from .base import Plan, check_image, to_tensor
from .instances import Instances, compact, paint, survivors
from .native import maskrcnn_instances
from .scale import at_model_scale, model_factor, scaled_shape
from .tiling import Tiling, even_tiles, tiled_instances, tiles
from .tta import VIEWS_8, merged_views


@dataclass
class MaskRCNNSegmenter:
    """A loaded Mask R-CNN (see :class:`segmenters.base.Segmenter`); ``raw`` gives :class:`Instances`.

    ``raw`` keeps the detections that painting with ``post`` could use (score at least ``post.score_thresh``,
    mask above ``post.mask_thresh``); :meth:`labels` may then paint them with stricter thresholds.
    """

    model: torch.nn.Module
    cfg: RunConfig
    post: MaskRCNNPost
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    path: Path | None = None
    tta: bool = False
    tiling: Tiling = field(default_factory=Tiling)
    kind: str = "maskrcnn"

    def outputs(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's detections at the image's size: scores float32[N], mask probabilities float32[N, H, W]
        (a segmenter from :func:`segmenters.load_segmenter` reports only those scoring at least
        ``post.score_thresh``)."""
        check_image(image)
        x = to_tensor(image).to(self.device)[0]
        with (
            torch.inference_mode()
        ):  # the backbone runs in mixed precision by itself (models/maskrcnn.py)
            out = self.model([x])[0]
        return out["scores"].float().cpu().numpy(), out["masks"][:, 0].float().cpu().numpy()

    def window(self, image: np.ndarray, counter: Counter | None = None) -> Instances:
        """Compact detections of one GlaS-sized image or window (merged over 8 views when ``tta`` is on); each
        forward pass ticks ``counter``."""
        outputs = self.outputs if counter is None else counter.counted(self.outputs)
        if self.tta:
            scores, masks = merged_views(outputs, image, self.post)
        else:
            scores, masks = outputs(image)
        return compact(scores, masks, self.post)

    @property
    def native_windows(self) -> bool:
        """Whether large images are cut into windows at the training scale (``tiling.maskrcnn_window``), not
        GlaS-sized ones: without TTA, for a torchvision Mask R-CNN."""
        return not self.tta and isinstance(self.model, MaskRCNN)

    def native(self, image: np.ndarray) -> Instances:
        """Detections of a window of any size at the scale the model was trained at (``segmenters/native.py``)."""
        return maskrcnn_instances(self, image)

    def _grid(self, shape: tuple[int, ...]) -> list[tuple[slice, slice]]:
        """The windows :meth:`raw` cuts an image of ``shape`` into (one: the whole image)."""
        t = self.tiling
        if not t.needed(shape):
            return [(slice(0, shape[0]), slice(0, shape[1]))]
        if self.native_windows:
            return even_tiles(shape, t.maskrcnn_window, t.maskrcnn_overlap)
        return tiles(shape, t.maskrcnn_tile, t.maskrcnn_overlap)

    def plan(self, shape: tuple[int, ...], mpp: float | None = None) -> Plan:
        """Windows and views of segmenting an image of ``shape`` (H, W[, C]) at ``mpp`` µm/px: above
        ``tiling.tile_above`` pixels (at the model's pixel size), evenly spaced windows of up to
        ``tiling.maskrcnn_window`` at the training scale, or with TTA GlaS-sized tiles of 8 views each."""
        f = model_factor(mpp, self.cfg.data_mpp)
        work = scaled_shape(shape, f)
        return Plan(work, len(self._grid(work)), len(VIEWS_8) if self.tta else 1, f)

    def raw(self, image: np.ndarray, progress: ProgressFn | None = None) -> Instances:
        """Detections of uint8[H, W, 3] RGB in image coordinates; windowed above ``tiling.tile_above`` pixels
        (memory bounded by one window's detections, glands never cut, duplicates merged). Windows run at the
        training scale (up to ``tiling.maskrcnn_window`` a side); with TTA they are GlaS-sized. ``progress``
        gets a step per forward pass (:meth:`plan`)."""
        check_image(image)
        counter = self.plan(image.shape).counter(progress)
        counter.start()
        t = self.tiling
        if not t.needed(image.shape):
            inst = self.window(image, counter)
        elif not self.native_windows:  # views resized by torchvision: GlaS-sized
            detect: Callable[[np.ndarray], Instances] = partial(self.window, counter=counter)
            inst = tiled_instances(
                detect, image, self.post, tile=t.maskrcnn_tile, overlap=t.maskrcnn_overlap
            )
        else:  # large windows at the training scale, evenly spaced
            side = (t.maskrcnn_window, t.maskrcnn_window)
            detect = counter.counted(self.native)
            inst = tiled_instances(
                detect, image, self.post, tile=side, overlap=t.maskrcnn_overlap, even=True
            )
        return replace(inst, shape=image.shape[:2])

    def window_plan(self, shape: tuple[int, ...]) -> Plan:
        """Windows and views of :meth:`window_instances` on a window of ``shape``: one pass at the training
        scale, or with TTA what :meth:`raw` runs."""
        return self.plan(shape) if self.tta else Plan(scaled_shape(shape, 1.0), 1, 1)

    def window_instances(self, image: np.ndarray, progress: ProgressFn | None = None) -> Instances:
        """The glands of a slide window: the whole window at the training scale (with TTA, :meth:`raw`),
        painted on its own (:func:`instances.survivors`) as an image is painted."""
        check_image(image)
        if self.tta:
            inst = self.raw(image, progress)
        else:
            counter = self.window_plan(image.shape).counter(progress)
            counter.start()
            inst = counter.counted(maskrcnn_instances)(self, image)
        return survivors(inst, self.post, image.shape[:2])

    def labels(self, raw: Instances, post: MaskRCNNPost | None = None) -> np.ndarray:
        """int32[H, W] label map (0=background, 1..N glands, ids by decreasing score) of :meth:`raw`'s instances.

        ``post`` may raise ``score_thresh``, ``min_area`` and ``min_visible``; its ``mask_thresh`` has no effect,
        because ``raw`` holds masks already thresholded at the segmenter's own ``post.mask_thresh``.
        """
        if raw.shape is None:
            raise ValueError("instances without an image shape: pass the output of raw()")
        return paint(raw, self.post if post is None else post, raw.shape)

    def __call__(
        self, image: np.ndarray, mpp: float | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """int32[H, W] label map of uint8[H, W, 3] RGB (0=background, 1..N glands) of pixel size ``mpp`` µm
        (None: already at the model's scale), at the image's size; see :meth:`plan` for ``progress``."""
        return at_model_scale(
            lambda im: self.labels(self.raw(im, progress)), image, mpp, self.cfg.data_mpp
        )
