"""Run configuration: one frozen dataclass per run, named presets, JSON load/save."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MODEL_KINDS = ("unet", "maskrcnn")
AUGMENT_POLICIES = ("none", "flip", "strong")
SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("sgd", "adamw")
MASKRCNN_BACKBONES = ("resnet50", "resnet34", "resnet18", "mobilenet_v3_large")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; saved as ``config.json`` next to the weights."""

    name: str = "glandseg-unet"
    model: str = "unet"
    # --- U-Net
    unet_base: int = 32
    unet_depth: int = 4
    unet_instance: bool = True  # predict gland + contour and separate touching glands; False = plain semantic mask
    unet_scale: float = 0.5  # images are resized by this factor before the U-Net (GlaS glands are large)
    unet_contour_width: int = 2  # contour band width in pixels, at the U-Net's scale
    # --- Mask R-CNN
    maskrcnn_backbone: str = "resnet50"
    maskrcnn_min_size: int = 522
    maskrcnn_max_size: int = 775
    maskrcnn_anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    maskrcnn_detections_per_img: int = 100
    maskrcnn_rpn_post_nms_top_n_train: int = 2000
    maskrcnn_box_batch_size_per_image: int = 512
    maskrcnn_box_head_dim: int = 1024  # width of the box head's two fully connected layers (torchvision: 1024)
    # --- training
    train_epochs: int = 40
    train_batch_size: int = 8
    train_steps_per_epoch: int = 0  # 0 = one pass over the training images
    train_crop_size: int = 256  # U-Net crop side (at the U-Net's scale); 0 = whole images
    train_optimizer: str = "adamw"
    train_lr: float = 1e-3
    train_momentum: float = 0.9
    train_weight_decay: float = 1e-4
    train_lr_schedule: str = "cosine"
    train_lr_step_epochs: int = 3
    train_lr_gamma: float = 0.1
    train_warmup_steps: int = 100
    train_grad_clip: float = 10.0  # 0 = off
    train_augment: str = "strong"
    train_amp: bool = True  # bf16 autocast on CPUs with AMX, fp16/bf16 on CUDA
    train_seed: int = 0
    train_val_every: int = 1
    train_max_images: int = 0  # 0 = all; >0 keeps the first N training images (smoke tests)
    train_init: str = ""  # start from these weights (a run's best.pt/last.pt or a model's weights.pt); "" = scratch

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.train_augment not in AUGMENT_POLICIES:
            raise ValueError(f"train_augment must be one of {AUGMENT_POLICIES}, got {self.train_augment!r}")
        if self.train_lr_schedule not in SCHEDULES:
            raise ValueError(f"train_lr_schedule must be one of {SCHEDULES}, got {self.train_lr_schedule!r}")
        if self.train_optimizer not in OPTIMIZERS:
            raise ValueError(f"train_optimizer must be one of {OPTIMIZERS}, got {self.train_optimizer!r}")
        if self.maskrcnn_backbone not in MASKRCNN_BACKBONES:
            raise ValueError(
                f"maskrcnn_backbone must be one of {MASKRCNN_BACKBONES}, got {self.maskrcnn_backbone!r}"
            )
        if len(self.maskrcnn_anchor_sizes) != 5:
            raise ValueError(f"maskrcnn_anchor_sizes needs 5 sizes (one per FPN level), got {self.maskrcnn_anchor_sizes}")
        if self.maskrcnn_box_head_dim < 16:
            raise ValueError(f"maskrcnn_box_head_dim must be at least 16, got {self.maskrcnn_box_head_dim}")
        if self.train_epochs < 1 or self.train_batch_size < 1:
            raise ValueError("train_epochs and train_batch_size must be at least 1")
        if not 0.05 <= self.unet_scale <= 2.0:
            raise ValueError(f"unet_scale must be in [0.05, 2], got {self.unet_scale}")


_POSTER_MASKRCNN = RunConfig(
    name="poster-maskrcnn",
    model="maskrcnn",
    maskrcnn_backbone="resnet50",  # poster: "Mask R-CNN with a ResNet-50 backbone"
    maskrcnn_min_size=522,  # GlaS native size (the poster does not say; torchvision would upscale to 800)
    maskrcnn_max_size=775,
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
    train_grad_clip=10.0,  # not on the poster: from scratch Mask R-CNN diverges without clipping
)

# Our Mask R-CNN recipes: the poster's model with AdamW, a cosine schedule and strong augmentation.
_OURS_MASKRCNN = dataclasses.replace(
    _POSTER_MASKRCNN,
    train_optimizer="adamw",
    train_weight_decay=1e-4,
    train_lr_schedule="cosine",
    train_augment="strong",
)

PRESETS: dict[str, RunConfig] = {
    "poster-maskrcnn": _POSTER_MASKRCNN,
    "poster-unet": RunConfig(
        name="poster-unet",
        model="unet",
        unet_instance=False,  # plain semantic mask, as on the poster
        train_epochs=15,  # poster: "U-Net (15 epochs)"
        train_steps_per_epoch=0,
        train_augment="flip",
    ),
    # Our tuned recipes.
    "glandseg-unet": RunConfig(
        name="glandseg-unet",
        model="unet",
        unet_base=32,
        unet_depth=4,
        unet_scale=0.5,
        train_epochs=60,
        train_batch_size=8,
        train_steps_per_epoch=50,
        train_crop_size=256,
        train_lr=2e-3,
        train_weight_decay=1e-4,
        train_warmup_steps=100,
    ),
    "glandseg-maskrcnn": dataclasses.replace(
        _OURS_MASKRCNN,
        name="glandseg-maskrcnn",
        train_lr=2e-4,
        train_warmup_steps=200,
        train_epochs=100,
        maskrcnn_rpn_post_nms_top_n_train=1000,
        maskrcnn_box_batch_size_per_image=256,
    ),
    # What two CPU cores allow: ResNet-18-FPN at half resolution, lighter ROI sampling.
    "glandseg-maskrcnn-cpu": dataclasses.replace(
        _OURS_MASKRCNN,
        name="glandseg-maskrcnn-cpu",
        maskrcnn_backbone="resnet18",
        maskrcnn_min_size=261,
        maskrcnn_max_size=388,
        maskrcnn_anchor_sizes=(16, 32, 64, 128, 256),
        maskrcnn_rpn_post_nms_top_n_train=500,
        maskrcnn_box_batch_size_per_image=128,
        train_lr=3e-4,
        train_warmup_steps=100,
        train_epochs=30,
        train_batch_size=2,
    ),
    # One GPU, from scratch, full resolution: what a few minutes of an H100 allow (scripts/gpu_train.sh).
    "glandseg-unet-gpu": RunConfig(
        name="glandseg-unet-gpu",
        model="unet",
        unet_base=16,
        unet_depth=5,
        unet_scale=1.0,
        unet_contour_width=4,  # the half-resolution models' 2 pixels, at full resolution
        train_epochs=50,
        train_batch_size=8,
        train_steps_per_epoch=100,
        train_crop_size=512,
        train_lr=2e-3,
        train_weight_decay=1e-4,
        train_warmup_steps=100,
        train_val_every=2,
    ),
    # ResNet-18 and a 512-wide box head keep the fp16 weights (45 MiB) small enough to come back from the GPU
    # machine beside the U-Net's (15 MiB) and to ship.
    "glandseg-maskrcnn-gpu": dataclasses.replace(
        _OURS_MASKRCNN,
        name="glandseg-maskrcnn-gpu",
        maskrcnn_backbone="resnet18",
        maskrcnn_box_head_dim=512,
        maskrcnn_rpn_post_nms_top_n_train=1000,
        maskrcnn_box_batch_size_per_image=256,
        train_lr=3e-4,
        train_warmup_steps=100,
        train_epochs=150,
        train_batch_size=4,
        train_val_every=3,
    ),
}


def get_preset(name: str) -> RunConfig:
    """Return the preset called ``name``.

    Raises:
        KeyError: with the list of valid names.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a JSON dict; unknown keys fail loudly."""
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    d = dict(d)
    if "maskrcnn_anchor_sizes" in d:
        d["maskrcnn_anchor_sizes"] = tuple(int(s) for s in d["maskrcnn_anchor_sizes"])
    return RunConfig(**d)


def coerce_overrides(overrides: dict[str, str]) -> dict[str, Any]:
    """Turn ``{"train_lr": "0.01"}`` strings (from the command line) into typed values."""
    types = {f.name: f.type for f in fields(RunConfig)}
    out: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in types:
            raise ValueError(f"unknown config key {key!r}")
        default = getattr(RunConfig(), key)
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} takes true or false, got {raw!r}")
            out[key] = raw.lower() in ("true", "1")
        elif isinstance(default, tuple):
            out[key] = tuple(int(v) for v in raw.split(","))
        else:
            out[key] = type(default)(raw)
    return out


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as JSON (atomically)."""
    from .io import atomic_write_text

    atomic_write_text(path, json.dumps(asdict(cfg), indent=2) + "\n")


def load_config(path: str | Path) -> RunConfig:
    """Read a ``config.json`` written by :func:`save_config`."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read config ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: config must be a JSON object")
    return config_from_dict(d)
