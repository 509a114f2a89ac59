"""torchvision Mask R-CNN with two classes (background, gland), from scratch or from a pretrained start.

The builder never reads weights: it builds the network that ``cfg.pretrained`` needs, and
:func:`models.pretrained.load_pretrained` fills it at the start of a training run. From scratch (``none``, or a
file) the backbone has trainable BatchNorm (torchvision's FrozenBatchNorm is an identity when no pretrained
statistics exist); from COCO (v1) or ImageNet weights it has FrozenBatchNorm and trains its last 3 stages, as
torchvision's builders do; ``coco-v2`` builds torchvision's v2 network (BatchNorm in the FPN and heads, a 4-conv
box head, a 2-conv RPN head). The predictors are swapped as in the torchvision fine-tuning tutorial:
``FastRCNNPredictor(in_features, 2)``, ``MaskRCNNPredictor(..., 2)``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    _mobilenet_extractor,
    _resnet_fpn_extractor,
    resnet_fpn_backbone,
)
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from ..config import RunConfig
from ..device import autocast
from ..rules import Rule, Section, int_rule
from .pretrained import check_start, start_kind, uses_frozen_norm

NUM_CLASSES = 2  # background + gland
BACKBONES = ("resnet50", "resnet34", "resnet18", "mobilenet_v3_large")
ANCHOR_LEVELS = 5  # one anchor size per FPN level


@dataclass(frozen=True)
class MaskRCNNParams(Section):
    """The Mask R-CNN's config section (``maskrcnn_<field>`` in ``config.json`` and ``--set``)."""

    KIND: ClassVar[str] = "maskrcnn"
    RULES: ClassVar[dict[str, Rule]] = {
        "backbone": Rule(str, choices=BACKBONES),
        "min_size": int_rule(16, 2048),
        "max_size": int_rule(16, 4096),
        "anchor_sizes": Rule(tuple, 1, 2048, length=ANCHOR_LEVELS),
        "detections_per_img": int_rule(1, 500),
        "rpn_post_nms_top_n_train": int_rule(1, 10000),
        "rpn_pre_nms_top_n_test": int_rule(1, 10000),
        "rpn_post_nms_top_n_test": int_rule(1, 10000),
        "box_batch_size_per_image": int_rule(1, 4096),
        "box_head_dim": int_rule(16, 4096),
        "mask_roi_size": int_rule(7, 56),
    }

    backbone: str = "resnet50"
    min_size: int = 522
    max_size: int = 775
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    detections_per_img: int = 100
    rpn_post_nms_top_n_train: int = 2000
    # test-time proposals per FPN level before NMS, and in all after NMS (torchvision: 1000 and 1000)
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    box_head_dim: int = 1024  # width of the box head's two fully connected layers (torchvision: 1024)
    # side of the RoI features the mask head sees; its masks are twice as wide (14: torchvision's 28 x 28 masks;
    # 28: 56 x 56 masks, finer boundaries for 4x the mask head's work). The head's convolutions do not depend on
    # it, so weights trained at one size load at the other.
    mask_roi_size: int = 14


class MixedPrecisionBackbone(nn.Module):
    """Runs a ``BackboneWithFPN`` under autocast and returns fp32 features, so that the box coder, RPN and ROI
    heads stay in fp32 (in bf16, from-scratch proposals collapse to zero width and the box loss turns NaN).
    Keeps the wrapped module's ``body``/``fpn`` names, so state dicts match torchvision's."""

    def __init__(self, inner: nn.Module, enabled: bool) -> None:
        super().__init__()
        self.body, self.fpn, self.out_channels, self.enabled = (
            cast(nn.Module, inner.body),
            cast(nn.Module, inner.fpn),
            cast(int, inner.out_channels),  # BackboneWithFPN's attributes
            enabled,
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        with autocast(x.device, self.enabled):
            feats = self.fpn(self.body(x))
        return OrderedDict((k, v.float()) for k, v in feats.items())


def _backbone(cfg: RunConfig) -> nn.Module:
    name, frozen = cfg.params.backbone, uses_frozen_norm(cfg)
    norm = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    if (
        start_kind(cfg) == "coco-v2"
    ):  # torchvision's maskrcnn_resnet50_fpn_v2: BatchNorm, FPN with BatchNorm
        return _resnet_fpn_extractor(resnet50(weights=None), 3, norm_layer=nn.BatchNorm2d)
    if name.startswith("resnet"):
        return resnet_fpn_backbone(
            backbone_name=name, weights=None, norm_layer=norm, trainable_layers=3 if frozen else 5
        )
    if name == "mobilenet_v3_large":
        body = mobilenet_v3_large(weights=None, norm_layer=norm)
        return _mobilenet_extractor(body, True, trainable_layers=3 if frozen else 6)
    raise ValueError(f"unknown Mask R-CNN backbone {name!r}")


def _v2_heads(channels: int) -> dict[str, nn.Module]:
    """The RPN, box and mask heads of torchvision's Mask R-CNN v2 (for ``pretrained=coco-v2``)."""
    norm = nn.BatchNorm2d
    return {
        "rpn_head": RPNHead(channels, 3, conv_depth=2),
        "box_head": FastRCNNConvFCHead((channels, 7, 7), [256, 256, 256, 256], [1024], norm_layer=norm),
        "mask_head": MaskRCNNHeads(channels, [256, 256, 256, 256], 1, norm_layer=norm),
    }


def _mask_pool(side: int) -> MultiScaleRoIAlign:
    """The mask head's RoI pooling: torchvision's default but for its side (levels it lacks are skipped). The
    mask loss follows the predictor's output size (torchvision's ``maskrcnn_loss`` reads it from the logits)."""
    return MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=side, sampling_ratio=2)


def build_maskrcnn(cfg: RunConfig) -> MaskRCNN:
    """Mask R-CNN for glands: backbone ``params.backbone`` with FPN, anchors ``params.anchor_sizes``."""
    check_start(cfg)
    p: MaskRCNNParams = cfg.params
    backbone = MixedPrecisionBackbone(_backbone(cfg), cfg.train_amp)
    n_maps = 5 if p.backbone.startswith("resnet") else 3
    sizes = p.anchor_sizes[:n_maps] if n_maps == 5 else p.anchor_sizes[1:4]
    anchors = AnchorGenerator(
        sizes=tuple((s,) for s in sizes), aspect_ratios=((0.5, 1.0, 2.0),) * n_maps
    )
    if start_kind(cfg) == "coco-v2":
        heads, box_dim = _v2_heads(backbone.out_channels), 1024
    else:  # 7x7 ROI features into two fully connected layers
        box_dim = p.box_head_dim
        heads = {"box_head": TwoMLPHead(backbone.out_channels * 7 * 7, box_dim)}
    model = MaskRCNN(
        backbone,
        num_classes=91,  # replaced below, as in the tutorial
        rpn_anchor_generator=anchors,
        min_size=p.min_size,
        max_size=p.max_size,
        box_detections_per_img=p.detections_per_img,
        box_score_thresh=0.05,
        rpn_post_nms_top_n_train=p.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=p.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=p.rpn_post_nms_top_n_test,
        box_batch_size_per_image=p.box_batch_size_per_image,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        mask_roi_pool=_mask_pool(p.mask_roi_size),
        **heads,
    )
    model.roi_heads.box_predictor = FastRCNNPredictor(box_dim, NUM_CLASSES)
    in_features_mask = model.roi_heads.mask_predictor.conv5_mask.in_channels
    model.roi_heads.mask_predictor = MaskRCNNPredictor(in_features_mask, 256, NUM_CLASSES)
    return model
