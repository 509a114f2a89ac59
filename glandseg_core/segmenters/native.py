"""Mask R-CNN detections of an image of any size at the scale its training images were resized by.

torchvision fits every input into ``min_size``/``max_size``, so an image larger than a GlaS image would be
shrunk below the scale the model learnt. :func:`maskrcnn_instances` resizes it by the training images' own
factor instead, grows the proposal and detection caps with its area (a view of the network built through
torchvision's constructor arguments, :func:`native_view`; the network is never changed), and pastes each
detection's 28x28 mask into its own box only (torchvision would paste every mask into a full-image array: N x
image bytes). Used by the Mask R-CNN segmenter's windows and by whole-slide windows.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import resize_boxes

from ..models.maskrcnn_view import ViewSettings, inference_view, own_caps
from .base import Segmenter, to_tensor
from .instances import Instances, mask_boxes
from .tiling import MASKRCNN_TILE


def native_view(model: MaskRCNN, shape: tuple[int, int], scale: float) -> MaskRCNN:
    """The detector resizing an image of ``shape`` by ``scale`` (the training images' factor) and keeping as many
    proposals and detections per pixel as on a GlaS image: a view sharing ``model``'s weights, built through
    torchvision's constructor arguments (``models/maskrcnn_view.py``); ``model`` itself is not changed."""
    area = max(1.0, shape[0] * shape[1] / (MASKRCNN_TILE[0] * MASKRCNN_TILE[1]))
    pre, post, det = own_caps(model)
    settings = ViewSettings(
        min_size=min(shape) * scale,
        max_size=max(shape) * scale,
        rpn_pre_nms_top_n=math.ceil(pre * area),
        rpn_post_nms_top_n=math.ceil(post * area),
        detections_per_img=math.ceil(det * area),
    )
    return inference_view(model, settings)


def maskrcnn_instances(segmenter: Segmenter, image: np.ndarray) -> Instances:
    """Mask R-CNN detections of a window of any size, at the scale its training images were resized by.

    How it works: torchvision resizes a GlaS image (522x775) by ``s = min(min_size / 522, max_size / 775)``;
    a window is resized by the same ``s`` (not fitted into ``min_size``), with proposal and detection caps
    grown with its area. Each 28x28 mask is pasted into its own box exactly as torchvision's
    ``paste_masks_in_image`` does (padding 1, bilinear), thresholded and cropped to its pixels.

    Returns:
        Detections scoring at least ``post.score_thresh`` with a non-empty mask, as box-cropped instances.
    """
    model, cfg, post = segmenter.model, segmenter.cfg, segmenter.post
    h, w = image.shape[:2]
    scale = min(cfg.params.min_size / MASKRCNN_TILE[0], cfg.params.max_size / MASKRCNN_TILE[1])
    x = to_tensor(image).to(segmenter.device)[0]
    view = native_view(model, (h, w), scale)
    with torch.inference_mode():
        images, _ = view.transform([x])
        features = view.backbone(images.tensors)
        proposals, _ = view.rpn(images, features)
        det = view.roi_heads(features, proposals, images.image_sizes)[0][0]
        boxes = resize_boxes(det["boxes"], images.image_sizes[0], [h, w])
        keep = det["scores"] >= post.score_thresh
        masks, pad = expand_masks(det["masks"][keep].float(), padding=1)
        boxes = expand_boxes(boxes[keep], pad).to(torch.int64).tolist()
        scores = det["scores"][keep].float().cpu().numpy()
        crops, out_boxes, out_scores = [], [], []
        for m, (x0, y0, x1, y1), s in zip(masks, boxes, scores, strict=True):
            bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
            full = F.interpolate(m[None], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            binary = (full[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] > post.mask_thresh).cpu().numpy()
            if not binary.any():
                continue
            a, c, b, d = mask_boxes(binary[None])[0]
            crops.append(np.ascontiguousarray(binary[a:b, c:d]))
            out_boxes.append([cy0 + a, cx0 + c, cy0 + b, cx0 + d])
            out_scores.append(s)
    if not crops:
        return dataclasses.replace(Instances.empty(), shape=(h, w))
    return Instances(
        np.asarray(out_scores, np.float32),
        np.asarray(out_boxes, np.int64),
        crops,
        np.zeros(len(crops), bool),
        (h, w),
    )
