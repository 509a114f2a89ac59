"""A toy third model kind, written the way a plugin would be: one module, no edits anywhere else.

Loaded with ``GLANDSEG_PLUGINS=tests.toykind`` (or imported). It has its own config section (``toy_width``), its
own post-processing settings and tuning grid, a tiny two-layer network, binary targets and a BCE loss; its
segmenter thresholds the probability map and labels connected components.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from glandseg_core.config import RunConfig
from glandseg_core.progress import ProgressFn
from glandseg_core.registry import ModelKind, register_kind
from glandseg_core.rules import Rule, Section, float_rule, int_rule
from glandseg_core.segmenters.base import Plan, check_image, to_tensor
from glandseg_core.segmenters.scale import at_model_scale, working_shape
from glandseg_core.segmenters.tiling import Tiling


@dataclass(frozen=True)
class ToyParams(Section):
    KIND: ClassVar[str] = "toy"
    RULES: ClassVar[dict[str, Rule]] = {"width": int_rule(1, 64), "scale": float_rule(0.1, 1.0)}

    width: int = 4
    scale: float = 1.0


@dataclass(frozen=True)
class ToyPost:
    thresh: float = 0.5
    min_area: int = 10


class ToyNet(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.5) / 0.25)


@dataclass(frozen=True)
class ToySegmenter:
    model: nn.Module
    cfg: RunConfig
    post: ToyPost
    device: torch.device
    path: Path | None = None
    tta: bool = False
    tiling: Tiling = dataclasses.field(default_factory=Tiling)
    kind: str = "toy"

    def plan(self, shape: tuple[int, ...], mpp: float | None = None) -> Plan:
        return Plan(working_shape(shape, mpp, self.cfg.data_mpp), 1, 1)

    def raw(self, image: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
        check_image(image)
        counter = self.plan(image.shape).counter(progress)
        counter.start()
        with torch.no_grad():
            prob = torch.sigmoid(self.model(to_tensor(image).to(self.device)))[0, 0].cpu().numpy()
        counter.tick()
        return prob

    def labels(self, raw: np.ndarray, post: ToyPost | None = None) -> np.ndarray:
        post = post or self.post
        labels, n = ndimage.label(raw > post.thresh)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        labels[areas[labels] < post.min_area] = 0
        return labels.astype(np.int32)

    def __call__(
        self, image: np.ndarray, mpp: float | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        return at_model_scale(
            lambda im: self.labels(self.raw(im, progress)), image, mpp, self.cfg.data_mpp
        )


class ToyKind(ModelKind):
    name = "toy"
    title = "Toy"
    params_type = ToyParams
    post_type = ToyPost
    segmenter_class = ToySegmenter

    def presets(self) -> dict[str, RunConfig]:
        tiny = RunConfig(
            name="toy-tiny",
            model="toy",
            params=ToyParams(width=4),
            train_epochs=1,
            train_steps_per_epoch=1,
            train_batch_size=1,
            train_crop_size=64,
            train_max_images=2,
            train_warmup_steps=0,
            train_augment="flip",
            train_amp=False,
        )
        return {"toy-tiny": tiny}

    def field_words(self) -> dict[str, tuple[str, str, str]]:
        return {
            "toy_width": ("Toy width", "channels", "Channels of the hidden layer."),
            "toy_scale": ("Toy scale", "× size", "Images are resized by this before the network."),
        }

    def build(self, cfg: RunConfig) -> nn.Module:
        return ToyNet(cfg.params.width)

    def input_scale(self, cfg: RunConfig) -> float:
        return float(cfg.params.scale)

    def targets(self, cfg: RunConfig, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return (labels > 0).astype(np.uint8)[None]

    def collate(self, batch: list[tuple[np.ndarray, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im, _ in batch]).float() / 255
        return x, torch.stack([torch.from_numpy(t) for _, t in batch]).float()

    def loss(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss_bce": F.binary_cross_entropy_with_logits(net(x.to(device)), y.to(device))}

    def tuning(self, cfg: RunConfig) -> tuple[ToyPost, list[dict[str, Any]]]:
        return ToyPost(), [{"thresh": 0.4}, {"thresh": 0.6}]


TOY = register_kind(ToyKind())
