"""The Mask R-CNN kind: torchvision's Mask R-CNN (``models/maskrcnn.py``), its targets, presets and tuning grid.

Training targets are torchvision detection targets (boxes, labels, masks: ``transforms.maskrcnn_target``) and
the loss is torchvision's own sum of RPN, box and mask terms. The network resizes its input itself
(``params.min_size`` / ``max_size``), so images reach it at their own scale.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..errors import ConfigError
from ..models.maskrcnn import MaskRCNNParams, build_maskrcnn
from ..registry import MemoryCost, ModelKind
from ..segmenters.maskrcnn import MaskRCNNSegmenter
from ..thresholds import MaskRCNNPost
from ..transforms import maskrcnn_target
from .unet import grid_points

# Memory (benchmarks/bench_dashboard_memory.py, CPU, fp32, the shipped ResNet-18 model): 1011 MiB at 1 MP, 1090
# at 4, up to 1572 at 5.6 MP with 106 glands (kept instance crops); with a margin, 1152 MiB + 80 bytes per pixel.
# A ResNet-50 backbone adds its weights and wider activations to the fixed part.
BASE_BYTES = {"resnet18": 1152 * 2**20, "resnet34": 1280 * 2**20}
BASE_BYTES_OTHER = 1664 * 2**20  # resnet50 and larger
TRAIN_BYTES_PER_PIXEL = {"resnet18": 600, "resnet34": 800}  # one training image at the network's size
TRAIN_BYTES_PER_PIXEL_OTHER = 1500  # resnet50 (torchvision's reference: ~1.5 GB per 800 x 1333 image)

GRID = {
    "score_thresh": (0.3, 0.5, 0.7, 0.85),
    "min_area": (100, 300, 600),
    "min_visible": (0.3, 0.6),
}

FIELD_WORDS = {
    "maskrcnn_backbone": ("Mask R-CNN backbone", "", "The feature network under the FPN; ResNet-50 is the poster's."),
    "maskrcnn_min_size": ("Shorter image side", "px",
                          "Images are resized so that their shorter side is this long (GlaS: 522 at full size)."),
    "maskrcnn_max_size": ("Longest image side at most", "px", "Caps the resize above (GlaS: 775 at full size)."),
    "maskrcnn_anchor_sizes": ("Anchor sizes", "px, one per FPN level",
                              "Five box sizes the detector proposes from, smallest to largest, comma-separated."),
    "maskrcnn_detections_per_img": ("Glands kept per image at most", "glands",
                                    "The most instances the model returns for one image."),
    "maskrcnn_rpn_post_nms_top_n_train": ("Proposals kept per image in training", "boxes",
                                          "Region proposals passed on after non-maximum suppression while training (torchvision: 2000)."),
    "maskrcnn_rpn_pre_nms_top_n_test": ("Proposals per level before NMS at inference", "boxes",
                                        "Top-scoring region proposals per FPN level kept before non-maximum suppression when segmenting (torchvision: 1000)."),
    "maskrcnn_rpn_post_nms_top_n_test": ("Proposals kept per image at inference", "boxes",
                                         "Region proposals passed to the box head after non-maximum suppression when segmenting (torchvision: 1000)."),
    "maskrcnn_box_batch_size_per_image": ("Sampled boxes per image", "boxes",
                                          "Proposals sampled per image to train the box and mask heads (torchvision: 512)."),
    "maskrcnn_box_head_dim": ("Box head width", "units",
                              "Width of the box head's two fully connected layers (torchvision: 1024)."),
    "maskrcnn_mask_roi_size": ("Mask head input side", "px",
                               "14 gives torchvision's 28 x 28 masks; 28 gives 56 x 56 masks with finer boundaries."),
}  # fmt: skip

# The poster's values (docs/poster.md quotes them) and the words they come from; poster-maskrcnn copies them.
POSTER_VALUES: dict[str, tuple[Any, str]] = {
    "maskrcnn_backbone": ("resnet50", "Mask R-CNN with a ResNet-50 backbone"),
    "train_optimizer": ("sgd", "Optimizer: SGD"),
    "train_lr": (0.005, "initial learning rate 0.005"),
    "train_momentum": (0.9, "momentum 0.9"),
    "train_weight_decay": (0.0005, "weight decay 0.0005"),
    "train_lr_schedule": ("step", "Learning-rate decay: staircase"),
    "train_lr_step_epochs": (3, "×0.1 every 3 epochs"),
    "train_lr_gamma": (0.1, "×0.1 every 3 epochs"),
    "train_batch_size": (2, "Batch size 2"),
    "train_epochs": (200, "200 epochs"),
}


def _poster() -> RunConfig:
    """The poster's recipe, verbatim where the poster says."""
    return RunConfig(
        name="poster-maskrcnn",
        model="maskrcnn",
        # poster: "Mask R-CNN with a ResNet-50 backbone"; GlaS native size (the poster does not say; torchvision
        # would upscale to 800)
        params=MaskRCNNParams(backbone="resnet50", min_size=522, max_size=775),
        train_optimizer="sgd",  # poster: "Optimizer: SGD"
        train_lr=0.005,  # poster: "initial learning rate 0.005"
        train_momentum=0.9,  # poster: "momentum 0.9"
        train_weight_decay=0.0005,  # poster: "weight decay 0.0005"
        train_lr_schedule="step",  # poster: "staircase"
        train_lr_step_epochs=3,  # poster: "every 3 epochs"
        train_lr_gamma=0.1,  # poster: "x0.1"
        train_batch_size=2,  # poster: "Batch size 2"
        train_epochs=200,  # poster: "200 epochs"
        train_warmup_steps=0,
        train_augment="flip",  # the torchvision tutorial the poster follows: random horizontal flip
        train_crop_size=0,
        train_grad_clip=10.0,  # not on the poster: our trainer's default (no run without clipping was tried)
        pretrained="coco",  # the tutorial the poster follows fine-tunes COCO weights
    )


def _ours(poster: RunConfig) -> RunConfig:
    """Our recipes' base: the poster's model with AdamW, a cosine schedule and strong augmentation, from
    scratch."""
    return dataclasses.replace(
        poster,
        train_optimizer="adamw",
        train_weight_decay=1e-4,
        train_lr_schedule="cosine",
        train_augment="strong",
        pretrained="none",
    )


def _cpu(ours: RunConfig) -> RunConfig:
    """What two CPU cores allow: ResNet-18-FPN at half resolution, lighter ROI sampling (the shipped model's
    section, and so the fine-tune's)."""
    return dataclasses.replace(
        ours,
        name="glandseg-maskrcnn-cpu",
        params=dataclasses.replace(
            ours.params,
            backbone="resnet18",
            min_size=261,
            max_size=388,
            anchor_sizes=(16, 32, 64, 128, 256),
            rpn_post_nms_top_n_train=500,
            box_batch_size_per_image=128,
        ),
        train_lr=3e-4,
        train_warmup_steps=100,
        train_epochs=30,
        train_batch_size=2,
    )


@functools.cache
def _presets() -> dict[str, RunConfig]:
    poster = _poster()
    ours, base = _ours(poster), poster.params
    cpu = _cpu(ours)
    return {
        "poster-maskrcnn": poster,
        "glandseg-maskrcnn": dataclasses.replace(
            ours,
            name="glandseg-maskrcnn",
            params=dataclasses.replace(
                base, rpn_post_nms_top_n_train=1000, box_batch_size_per_image=256
            ),
            train_lr=2e-4,
            train_warmup_steps=200,
            train_epochs=100,
        ),
        "glandseg-maskrcnn-cpu": cpu,
        # ResNet-18 and a 512-wide box head keep the fp16 weights (45 MiB) small enough to come back from the
        # GPU machine beside the U-Net's (15 MiB) and to ship.
        "glandseg-maskrcnn-gpu": dataclasses.replace(
            ours,
            name="glandseg-maskrcnn-gpu",
            params=dataclasses.replace(
                base,
                backbone="resnet18",
                box_head_dim=512,
                rpn_post_nms_top_n_train=1000,
                box_batch_size_per_image=256,
            ),
            train_lr=3e-4,
            train_warmup_steps=100,
            train_epochs=150,
            train_batch_size=4,
            train_val_every=3,
        ),
        # Fine-tune a trained Mask R-CNN on a few dozen glands (--init trained_models/maskrcnn): the shipped
        # model's section (glandseg-maskrcnn-cpu's, its config.json), a low rate, 4 epochs of 15 steps of whole
        # images, every epoch validated; fit re-tunes post-processing on the set's val.
        "finetune-maskrcnn": dataclasses.replace(
            cpu,
            name="finetune-maskrcnn",
            train_lr=5e-5,  # the shipped run's peak was 2e-4
            train_warmup_steps=10,
            train_epochs=4,
            train_steps_per_epoch=15,
            train_val_every=1,
        ),
    }


class MaskRCNNKind(ModelKind):
    """The Mask R-CNN: instances from box proposals, each with a 28x28 mask."""

    name = "maskrcnn"
    title = "Mask R-CNN"
    params_type = MaskRCNNParams
    post_type = MaskRCNNPost
    segmenter_class = MaskRCNNSegmenter

    def presets(self) -> dict[str, RunConfig]:
        return dict(_presets())

    def field_words(self) -> dict[str, tuple[str, str, str]]:
        return FIELD_WORDS

    def poster_values(self) -> dict[str, tuple[Any, str]]:
        return POSTER_VALUES

    def build(self, cfg: RunConfig) -> nn.Module:
        return build_maskrcnn(cfg)

    def check_start(self, cfg: RunConfig, start: str) -> None:
        p: MaskRCNNParams = cfg.params
        if start in ("coco", "coco-v2"):
            if p.backbone != "resnet50":
                raise ConfigError(
                    f"pretrained={start} holds a ResNet-50-FPN Mask R-CNN; it needs model=maskrcnn and "
                    f"maskrcnn_backbone=resnet50, got model=maskrcnn, maskrcnn_backbone={p.backbone}"
                )
            if start == "coco" and p.box_head_dim != 1024:
                raise ConfigError(
                    f"pretrained=coco has a 1024-wide box head; set maskrcnn_box_head_dim=1024 (got {p.box_head_dim})"
                )

    def imagenet_arch(self, cfg: RunConfig) -> str:
        return str(cfg.params.backbone)

    def imagenet_module(self, model: nn.Module) -> tuple[nn.Module, str]:
        net: Any = model  # a torchvision MaskRCNN (untyped)
        return net.backbone.body, "backbone"

    def targets(self, cfg: RunConfig, image: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        return maskrcnn_target(labels)

    def collate(self, batch: list[tuple[np.ndarray, Any]]) -> tuple[list[torch.Tensor], list[dict]]:
        """(list of float32[3, H, W] in [0, 1], list of target dicts: boxes, labels, masks)."""
        images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in batch]
        return images, [{k: torch.from_numpy(v) for k, v in t.items()} for _, t in batch]

    def loss(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> dict[str, torch.Tensor]:
        # the backbone runs in mixed precision by itself (models/maskrcnn.py), the heads in fp32
        images, targets = batch
        images = [im.to(device) for im in images]
        return net(images, [{k: v.to(device) for k, v in t.items()} for t in targets])

    def default_post(self, cfg: RunConfig) -> MaskRCNNPost:
        return MaskRCNNPost()

    def tuning(self, cfg: RunConfig) -> tuple[MaskRCNNPost, list[dict[str, Any]]]:
        """A base that keeps every detection the grid's lowest ``score_thresh`` could paint, so one ``raw`` per
        image serves every grid point."""
        return MaskRCNNPost(score_thresh=min(GRID["score_thresh"])), grid_points(GRID)

    def memory_cost(self, cfg: RunConfig) -> MemoryCost:
        backbone = str(cfg.params.backbone)
        return MemoryCost(base_bytes=BASE_BYTES.get(backbone, BASE_BYTES_OTHER), work_bytes_per_pixel=80)

    def train_bytes(self, cfg: RunConfig) -> int:
        """Activations of one batch: each image reaches the network at most ``min_size`` x ``max_size``
        pixels (torchvision resizes it), about ``TRAIN_BYTES_PER_PIXEL`` bytes each; plus the fixed part."""
        p: MaskRCNNParams = cfg.params
        per_px = TRAIN_BYTES_PER_PIXEL.get(str(p.backbone), TRAIN_BYTES_PER_PIXEL_OTHER)
        fixed = BASE_BYTES.get(str(p.backbone), BASE_BYTES_OTHER)
        return int(fixed + cfg.train_batch_size * p.min_size * p.max_size * per_px)

    def loaded(self, model: nn.Module, post: Any) -> None:
        """Drop detections scoring below the painting threshold inside the network: they are never painted,
        and this skips their mask head and full-size paste. Exact: NMS only lets higher-scoring boxes suppress
        lower ones."""
        floor = float(
            np.nextafter(np.float32(post.score_thresh), np.float32(0))
        )  # keep scores == thresh
        heads: Any = model.roi_heads  # a torchvision RoIHeads (untyped)
        heads.score_thresh = max(heads.score_thresh, floor)


MASKRCNN = MaskRCNNKind()
