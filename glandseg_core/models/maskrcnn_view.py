"""A Mask R-CNN for other input sizes and caps, sharing a trained network's weights.

torchvision sets how a Mask R-CNN resizes its input (``min_size``, ``max_size``), how many proposals it keeps
(``rpn_pre_nms_top_n_test``, ``rpn_post_nms_top_n_test``) and how many detections it returns
(``box_detections_per_img``) in its constructor. :func:`inference_view` builds a second ``MaskRCNN`` through
those public arguments around the SAME submodules (backbone, anchor generator, heads, predictors: no weight is
copied, so a view follows the network to any device), for inference only. Views are cached per network and
setting (a window of one size reuses its view), and the trained network itself is never changed.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from torchvision.models.detection import MaskRCNN


@dataclass(frozen=True)
class ViewSettings:
    """What a view changes: input resizing (as torchvision's ``min_size``/``max_size``) and the test-time caps."""

    min_size: float
    max_size: float
    rpn_pre_nms_top_n: int
    rpn_post_nms_top_n: int
    detections_per_img: int


MAX_VIEWS = 8  # views kept per network (one per window size in use; the oldest goes first)
# a cache, not settings: network -> {(settings, the network's live thresholds): view}; entries go with their network
_VIEWS: weakref.WeakKeyDictionary[MaskRCNN, dict[tuple, MaskRCNN]] = weakref.WeakKeyDictionary()


def own_caps(model: MaskRCNN) -> tuple[int, int, int]:
    """The network's own test-time caps: (RPN proposals before NMS, after NMS, detections per image).

    Read through the RPN's public ``pre_nms_top_n()``/``post_nms_top_n()``, which give the test values when the
    RPN is in eval mode (as a loaded segmenter's is).
    """
    rpn = model.rpn
    if rpn.training:
        raise ValueError("the Mask R-CNN must be in eval mode (model.eval()) to read its test-time caps")
    return int(rpn.pre_nms_top_n()), int(rpn.post_nms_top_n()), int(model.roi_heads.detections_per_img)


def _live(model: MaskRCNN) -> tuple:
    """The network's thresholds and normalisation that a view copies (they may change after loading, e.g.
    ``roi_heads.score_thresh``), as a hashable key."""
    t, rpn, roi = model.transform, model.rpn, model.roi_heads
    return (
        tuple(t.image_mean),
        tuple(t.image_std),
        int(t.size_divisible),
        float(rpn.nms_thresh),
        float(rpn.score_thresh),
        float(roi.score_thresh),
        float(roi.nms_thresh),
        tuple(float(w) for w in roi.box_coder.weights),
    )


def inference_view(model: MaskRCNN, settings: ViewSettings) -> MaskRCNN:
    """A ``MaskRCNN`` in eval mode that shares ``model``'s submodules and runs with ``settings``.

    Built with torchvision's public constructor arguments; the thresholds and normalisation are ``model``'s
    (read at each call, so a later change of ``model.roi_heads.score_thresh`` gives a new view). Only the view's
    own wrappers (transform, RPN, ROI heads) are put in eval mode; the shared submodules keep ``model``'s mode.
    """
    live = _live(model)
    cache = _VIEWS.setdefault(model, {})
    key = (settings, live)
    if key not in cache:
        mean, std, divisible, rpn_nms, rpn_score, box_score, box_nms, weights = live
        rpn, roi = model.rpn, model.roi_heads
        view = MaskRCNN(
            model.backbone,
            num_classes=None,
            min_size=settings.min_size,
            max_size=settings.max_size,
            image_mean=list(mean),
            image_std=list(std),
            size_divisible=divisible,
            rpn_anchor_generator=rpn.anchor_generator,
            rpn_head=rpn.head,
            rpn_pre_nms_top_n_test=settings.rpn_pre_nms_top_n,
            rpn_post_nms_top_n_test=settings.rpn_post_nms_top_n,
            rpn_nms_thresh=rpn_nms,
            rpn_score_thresh=rpn_score,
            box_roi_pool=roi.box_roi_pool,
            box_head=roi.box_head,
            box_predictor=roi.box_predictor,
            box_score_thresh=box_score,
            box_nms_thresh=box_nms,
            box_detections_per_img=settings.detections_per_img,
            bbox_reg_weights=weights,
            mask_roi_pool=roi.mask_roi_pool,
            mask_head=roi.mask_head,
            mask_predictor=roi.mask_predictor,
        )
        for part in (view, view.transform, view.rpn, view.roi_heads):
            part.training = False
        while len(cache) >= MAX_VIEWS:
            cache.pop(next(iter(cache)))
        cache[key] = view
    return cache[key]
