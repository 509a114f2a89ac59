"""The U-Net kind: our contour-aware U-Net (``models/unet.py``), its targets, loss, presets and tuning grid.

Training targets are two channels (gland, gland contour: ``transforms.unet_targets``); the loss is binary
cross-entropy on both (contours weighted 3x) plus a soft Dice on the gland channel. With the separation head
(``unet_separation``) the targets add the per-gland normalised distance and the U-Net paper's gap weights
(``transforms.unet_separation_targets``): the gland cross-entropy is weighted by them, and the distance output
is regressed on gland pixels. Images are resized by ``params.scale`` before the network, in training and
inference alike.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import RunConfig
from ..device import autocast
from ..errors import ConfigError
from ..models.unet import UNetParams, build_unet
from ..registry import MemoryCost, ModelKind
from ..segmenters.unet import UNetSegmenter
from ..thresholds import UNetPost
from ..transforms import unet_separation_targets, unet_targets

GRID = {
    "fg_thresh": (0.4, 0.5, 0.6),
    "contour_thresh": (0.3, 0.5, 0.7),
    "min_marker_area": (20, 80),
    "min_area": (100, 300, 600),
}
SEMANTIC_GRID = {"fg_thresh": (0.4, 0.5, 0.6), "min_area": (100, 300, 600)}
# With the separation head: markers from the distance output (contour_thresh is unused there); 60 points.
# An early fine-tune (runs/unet-sep, epoch 4) preferred 0.1 on val: the grid reaches down to it.
SEPARATION_GRID = {
    "fg_thresh": (0.4, 0.5, 0.6),
    "marker_dist": (0.1, 0.2, 0.3, 0.4, 0.5),
    "min_marker_area": (20, 80),
    "min_area": (300, 600),
}
# The distance regression's weight in the loss: its squared error (in [0, 1], on gland pixels) is small.
DISTANCE_WEIGHT = 5.0

# Memory (benchmarks/bench_dashboard_memory.py, CPU, fp32, the shipped glandseg-unet: base 32, scale 0.5):
# 915 MiB at 1 MP, 1317 at 4, 1925 at 12; with a margin, 1024 MiB + 80 bytes per pixel at the model's pixel
# size. The fixed part holds one window's activations (windows of 768 px at the U-Net's scale, or a whole image
# up to 1024 px a side): it grows with the width and with the U-Net's scale; the slope (probabilities, the
# watershed) with the pixels the U-Net sees.
RUNTIME_BYTES = 512 * 2**20  # interpreter, torch, weights
ACTIVATION_BYTES = 512 * 2**20  # one window of base 32 at 768 x 768 network pixels
TRAIN_BYTES_PER_PIXEL_CHANNEL = (
    100  # kept activations per crop pixel and first-layer channel (fp32, generous)
)
GLAS_PIXELS = 775 * 522  # a whole GlaS image (train_crop_size=0)

FIELD_WORDS = {
    "unet_base": ("U-Net first-layer channels", "channels",
                  "Width of the first block; each level down doubles it. Wider learns more, trains slower."),
    "unet_depth": ("U-Net depth", "levels", "Down-sampling levels; deeper sees larger glands at once."),
    "unet_instance": ("Separate touching glands", "",
                      "Also predict gland contours and split glands along them (off: a plain mask)."),
    "unet_scale": ("U-Net image scale", "× size",
                   "Images are resized by this factor before the U-Net (0.5 = half resolution)."),
    "unet_contour_width": ("Contour band width", "px",
                           "Width of the gland-border band the contour head learns, at the U-Net's scale."),
    "unet_encoder": ("U-Net encoder", "",
                     "none: our own blocks; resnet18/34/50: a torchvision ResNet encoder (can start from ImageNet)."),
    "unet_separation": ("Separation head", "",
                        "Also predict each gland's distance to its border and split touching glands at its cores."),
}  # fmt: skip


def grid_points(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    """Every combination of a grid's values, as override dicts (first value first)."""
    return [dict(zip(grid, vals, strict=True)) for vals in itertools.product(*grid.values())]


def unet_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Binary cross-entropy on gland and contour (contours weighted 3x), and soft Dice on the gland channel;
    with the separation head, the gland cross-entropy weighted by the gap weights and the distance's squared
    error on gland pixels (``loss_distance``, weighted ``DISTANCE_WEIGHT``).

    Args:
        logits: float[B, 2, H, W]; or float[B, 3, H, W] with the separation head (gland, contour, distance).
        target: float32[B, 2, H, W] in {0, 1} (gland, contour); or float32[B, 4, H, W] with the separation head:
            gland, contour, distance in [0, 1], gap weight >= 1 (``transforms.unet_separation_targets``).

    Raises:
        ValueError: logits and targets of different heads.
    """
    separation = logits.shape[1] == 3
    if target.shape[1] != (4 if separation else 2):
        raise ValueError(f"U-Net logits {tuple(logits.shape)} do not fit targets {tuple(target.shape)}")
    logits = logits.float()
    gland = target[:, 0]
    weight = target[:, 3] if separation else None
    bce_fg = F.binary_cross_entropy_with_logits(logits[:, 0], gland, weight=weight)
    bce_ct = F.binary_cross_entropy_with_logits(logits[:, 1], target[:, 1], pos_weight=torch.tensor(3.0))
    p = torch.sigmoid(logits[:, 0])
    inter = (p * gland).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + gland.sum() + 1)
    losses = {"loss_gland": bce_fg, "loss_contour": bce_ct, "loss_dice": dice}
    if separation:
        err = (torch.sigmoid(logits[:, 2]) - target[:, 2]) ** 2
        losses["loss_distance"] = DISTANCE_WEIGHT * (err * gland).sum() / gland.sum().clamp(min=1)
    return losses


@functools.cache
def _presets() -> dict[str, RunConfig]:
    return {
        "poster-unet": RunConfig(
            name="poster-unet",
            model="unet",
            params=UNetParams(instance=False),  # plain semantic mask, as on the poster
            train_epochs=15,  # poster: "U-Net (15 epochs)"
            train_steps_per_epoch=0,
            train_augment="flip",
        ),
        # Our tuned recipe.
        "glandseg-unet": RunConfig(
            name="glandseg-unet",
            model="unet",
            params=UNetParams(base=32, depth=4, scale=0.5),
            train_epochs=60,
            train_batch_size=8,
            train_steps_per_epoch=50,
            train_crop_size=256,
            train_lr=2e-3,
            train_weight_decay=1e-4,
            train_warmup_steps=100,
        ),
        # One GPU, from scratch, full resolution: what a few minutes of an H100 allow (scripts/gpu_train.sh).
        "glandseg-unet-gpu": RunConfig(
            name="glandseg-unet-gpu",
            model="unet",
            # the half-resolution models' 2-pixel contour band, at full resolution
            params=UNetParams(base=16, depth=5, scale=1.0, contour_width=4),
            train_epochs=50,
            train_batch_size=8,
            train_steps_per_epoch=100,
            train_crop_size=512,
            train_lr=2e-3,
            train_weight_decay=1e-4,
            train_warmup_steps=100,
            train_val_every=2,
        ),
        # Fine-tune a trained U-Net on a few dozen glands of a new set (--init trained_models/unet): the shipped
        # model's section (its config.json), a low rate, 5 epochs of 20 steps (about 5 minutes on 2 CPU cores,
        # benchmarks/bench_finetune.py), every epoch validated; fit re-tunes post-processing on the set's val.
        "finetune-unet": RunConfig(
            name="finetune-unet",
            model="unet",
            params=UNetParams(base=16, depth=5, scale=0.5, contour_width=2),
            train_epochs=5,
            train_batch_size=4,
            train_steps_per_epoch=20,
            train_crop_size=256,
            train_lr=2e-4,  # the shipped run's peak was 1e-3
            train_weight_decay=1e-4,
            train_warmup_steps=10,
            train_augment="strong",
            train_val_every=1,
        ),
    }


class UNetKind(ModelKind):
    """The U-Net: semantic gland and contour maps, instances by marker-controlled watershed."""

    name = "unet"
    title = "U-Net"
    params_type = UNetParams
    post_type = UNetPost
    segmenter_class = UNetSegmenter

    def presets(self) -> dict[str, RunConfig]:
        return dict(_presets())

    def field_words(self) -> dict[str, tuple[str, str, str]]:
        return FIELD_WORDS

    def poster_values(self) -> dict[str, tuple[Any, str]]:
        return {"train_epochs": (15, "U-Net (15 epochs)")}

    def build(self, cfg: RunConfig) -> nn.Module:
        return build_unet(cfg)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last)

    def input_scale(self, cfg: RunConfig) -> float:
        return float(cfg.params.scale)

    def check_start(self, cfg: RunConfig, start: str) -> None:
        if start == "imagenet":
            if cfg.params.encoder == "none":
                raise ConfigError(
                    "pretrained=imagenet needs a ResNet encoder in the U-Net: set unet_encoder=resnet18, resnet34 "
                    "or resnet50 (our own encoder has no ImageNet weights), or use pretrained=none"
                )
            return
        raise ConfigError(
            f"pretrained={start} holds a ResNet-50-FPN Mask R-CNN; it needs model=maskrcnn and "
            f"maskrcnn_backbone=resnet50, got model=unet"
        )

    def imagenet_arch(self, cfg: RunConfig) -> str:
        return str(cfg.params.encoder)

    def imagenet_module(self, model: nn.Module) -> tuple[nn.Module, str]:
        return cast(nn.Module, model.encoder), "encoder"

    def targets(self, cfg: RunConfig, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if cfg.params.separation:
            return unet_separation_targets(labels, cfg.params.contour_width)
        return unet_targets(labels, cfg.params.contour_width).astype(np.uint8)

    def collate(self, batch: list[tuple[np.ndarray, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32[B, 3, H, W] in [0, 1], float32[B, 2, H, W] gland and contour targets; [B, 4, H, W] with
        the separation head: and the distance and gap weights)."""
        x = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in batch]).float() / 255
        return x, torch.stack([torch.from_numpy(t) for _, t in batch]).float()

    def loss(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> dict[str, torch.Tensor]:
        x, y = batch
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = net(x)
        return unet_loss(logits, y.to(device))

    def default_post(self, cfg: RunConfig) -> UNetPost:
        return UNetPost(instance=cfg.params.instance)

    def tuning(self, cfg: RunConfig) -> tuple[UNetPost, list[dict[str, Any]]]:
        grid = GRID if cfg.params.instance else SEMANTIC_GRID
        if cfg.params.separation:
            grid = SEPARATION_GRID
        return UNetPost(instance=cfg.params.instance), grid_points(grid)

    def memory_cost(self, cfg: RunConfig) -> MemoryCost:
        p: UNetParams = cfg.params
        window = max(768**2, (1024 * p.scale) ** 2) / 768**2  # largest pass, relative to a 768-px window
        width = p.base / 32 * (1 if p.encoder == "none" else 2)
        return MemoryCost(
            base_bytes=int(RUNTIME_BYTES + ACTIVATION_BYTES * width * window),
            # the separation head's third probability channel: 4 bytes, twice (raw output, upsampled)
            work_bytes_per_pixel=int(72 + 32 * p.scale**2 + (8 if p.separation else 0)),
            tta_bytes_per_pixel=16,
        )

    def train_bytes(self, cfg: RunConfig) -> int:
        """Activations of one batch kept for the backward pass: about ``TRAIN_BYTES_PER_PIXEL_CHANNEL`` bytes
        per crop pixel (at the U-Net's scale) and first-layer channel (each level down has twice the channels
        on a quarter of the pixels), twice that with a ResNet encoder; plus the runtime."""
        p: UNetParams = cfg.params
        crop = cfg.train_crop_size**2 if cfg.train_crop_size else GLAS_PIXELS * p.scale**2
        per_image = crop * p.base * TRAIN_BYTES_PER_PIXEL_CHANNEL * (1 if p.encoder == "none" else 2)
        return int(RUNTIME_BYTES + cfg.train_batch_size * per_image)


UNET = UNetKind()
