"""Run configuration: one frozen dataclass per run, named presets, JSON load/save.

Every field is checked for type and range whenever a :class:`RunConfig` is made (from Python, ``config.json``
or ``--set KEY=VALUE``), so a hand-edited or damaged value gives one line naming the field, the value and what
is allowed, and no size reaches a network or a batch unchecked (``unet_base=100000`` once tried to allocate
360 GB). Whole-number fields accept integral floats (JSON ``16.0`` is 16); strings and ``null`` are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import atomic_write_text

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
    data_mpp: float = 0.62  # micrometres per pixel of the training images (GlaS: 20x, 0.62 um/px)
    # --- U-Net
    unet_base: int = 32
    unet_depth: int = 4
    unet_instance: bool = (
        True  # predict gland + contour and separate touching glands; False = plain semantic mask
    )
    unet_scale: float = 0.5  # images are resized by this factor before the U-Net (GlaS glands are large)
    unet_contour_width: int = 2  # contour band width in pixels, at the U-Net's scale
    unet_encoder: str = "none"  # or resnet18/34/50: a torchvision ResNet encoder (models/unet.py)
    # --- Mask R-CNN
    maskrcnn_backbone: str = "resnet50"
    maskrcnn_min_size: int = 522
    maskrcnn_max_size: int = 775
    maskrcnn_anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    maskrcnn_detections_per_img: int = 100
    maskrcnn_rpn_post_nms_top_n_train: int = 2000
    maskrcnn_box_batch_size_per_image: int = 512
    maskrcnn_box_head_dim: int = (
        1024  # width of the box head's two fully connected layers (torchvision: 1024)
    )
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
    train_init: str = (
        ""  # start from these weights (a run's best.pt/last.pt or a model's weights.pt); "" = scratch
    )
    pretrained: str = "none"  # or coco, coco-v2, imagenet, a file: models/pretrained.py

    def __post_init__(self) -> None:
        for f in fields(
            self
        ):  # frozen: checked values (16.0 -> 16, a JSON list -> tuple) are set directly
            object.__setattr__(self, f.name, check_field(f.name, getattr(self, f.name)))
        widest = self.unet_base * 2**self.unet_depth
        if widest > UNET_MAX_WIDTH:
            raise ConfigError(
                f"unet_base={self.unet_base} with unet_depth={self.unet_depth} gives a {widest}-channel "
                f"bottleneck; unet_base * 2**unet_depth must be at most {UNET_MAX_WIDTH}"
            )


@dataclass(frozen=True)
class _Rule:
    """What one field allows: its type, an inclusive range for numbers (``lo_open``: lo excluded), choices."""

    kind: type
    lo: float = 0
    hi: float = 0
    lo_open: bool = False
    choices: tuple[str, ...] = ()

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return f"one of {self.choices}"
        if self.kind is str:
            return "a string"
        what = "a whole number" if self.kind in (int, tuple) else "a number"
        return f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


def _int(lo: int, hi: int) -> _Rule:
    return _Rule(int, lo, hi)


def _float(lo: float, hi: float, lo_open: bool = False) -> _Rule:
    return _Rule(float, lo, hi, lo_open)


UNET_MAX_WIDTH = 2048  # channels at the U-Net's bottleneck (unet_base * 2**unet_depth): ~75 M parameters
ANCHOR_LEVELS = 5  # one anchor size per FPN level
_RULES: dict[str, _Rule] = {
    "name": _Rule(str),
    "model": _Rule(str, choices=MODEL_KINDS),
    "data_mpp": _float(0.01, 100.0, lo_open=True),
    "unet_base": _int(1, 256),
    "unet_depth": _int(1, 6),
    "unet_instance": _Rule(bool),
    "unet_scale": _float(0.05, 2.0),
    "unet_contour_width": _int(1, 32),
    "unet_encoder": _Rule(str, choices=("none", "resnet18", "resnet34", "resnet50")),
    "maskrcnn_backbone": _Rule(str, choices=MASKRCNN_BACKBONES),
    "maskrcnn_min_size": _int(16, 2048),
    "maskrcnn_max_size": _int(16, 4096),
    "maskrcnn_anchor_sizes": _Rule(tuple, 1, 2048),
    "maskrcnn_detections_per_img": _int(1, 500),
    "maskrcnn_rpn_post_nms_top_n_train": _int(1, 10000),
    "maskrcnn_box_batch_size_per_image": _int(1, 4096),
    "maskrcnn_box_head_dim": _int(16, 4096),
    "train_epochs": _int(1, 100_000),
    "train_batch_size": _int(1, 64),
    "train_steps_per_epoch": _int(0, 100_000),
    "train_crop_size": _int(0, 2048),
    "train_optimizer": _Rule(str, choices=OPTIMIZERS),
    "train_lr": _float(0.0, 10.0),  # 0 is allowed: a frozen run checks that train_init loads the weights
    "train_momentum": _float(0.0, 1.0),
    "train_weight_decay": _float(0.0, 1.0),
    "train_lr_schedule": _Rule(str, choices=SCHEDULES),
    "train_lr_step_epochs": _int(1, 100_000),
    "train_lr_gamma": _float(0.0, 1.0),
    "train_warmup_steps": _int(0, 10_000_000),
    "train_grad_clip": _float(0.0, 1e6),
    "train_augment": _Rule(str, choices=AUGMENT_POLICIES),
    "train_amp": _Rule(bool),
    "train_seed": _int(0, 2**31 - 1),
    "train_val_every": _int(1, 100_000),
    "train_max_images": _int(0, 100_000),
    "train_init": _Rule(str),
    "pretrained": _Rule(str),  # checked against the model in models/pretrained.py (paths are allowed)
}


def _number(name: str, value: Any, rule: _Rule) -> int | float:
    """A number within ``rule``'s range; whole-number fields accept integral floats."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
    if rule.kind in (int, tuple) and value != int(value):
        raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
    too_low = value <= rule.lo if rule.lo_open else value < rule.lo
    if too_low or value > rule.hi:
        raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
    return float(value) if rule.kind is float else int(value)


def check_field(name: str, value: Any) -> Any:
    """Check one config value against its field's type and range; returns it in the field's own type.

    Raises:
        ConfigError: one line naming the field, the value and what is allowed; or an unknown field.
    """
    if name not in _RULES:
        raise ConfigError(f"unknown config key {name!r}")
    rule = _RULES[name]
    if rule.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} takes true or false, got {value!r}")
        return value
    if rule.kind is str:
        if not isinstance(value, str) or (rule.choices and value not in rule.choices):
            raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
        return value
    if rule.kind is tuple:
        try:
            if not isinstance(value, (list, tuple)) or len(value) != ANCHOR_LEVELS:
                raise ConfigError("wrong length")
            return tuple(_number(name, v, rule) for v in value)
        except ConfigError:
            each = f"each {rule.allowed()}"
            raise ConfigError(
                f"{name} needs {ANCHOR_LEVELS} sizes (one per FPN level), {each}, got {value!r}"
            ) from None
    return _number(name, value, rule)


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
    train_grad_clip=10.0,  # not on the poster: our trainer's default (no run without clipping was tried)
    pretrained="coco",  # the tutorial the poster follows fine-tunes COCO weights
)

# Our Mask R-CNN recipes: the poster's model with AdamW, a cosine schedule and strong augmentation.
_OURS_MASKRCNN = dataclasses.replace(
    _POSTER_MASKRCNN,
    train_optimizer="adamw",
    train_weight_decay=1e-4,
    train_lr_schedule="cosine",
    train_augment="strong",
    pretrained="none",  # ours train from scratch
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
    """Build a RunConfig from a JSON dict; unknown keys fail loudly, missing ones take the defaults.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type or out of range (one line naming it).
    """
    if not isinstance(d, dict):
        raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_RULES))
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
    return RunConfig(**d)


def _parse(raw: str) -> Any:
    """A command-line value as a number when it reads as one, else the string itself."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def coerce_overrides(overrides: dict[str, str]) -> dict[str, Any]:
    """Turn ``{"train_lr": "0.01"}`` strings (from the command line) into checked, typed values.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type or out of range: the same one-line
            message as in ``config.json`` (see :func:`check_field`).
    """
    out: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in _RULES:
            raise ConfigError(f"unknown config key {key!r}")
        kind = _RULES[key].kind
        if kind is bool:
            value: Any = {"true": True, "1": True, "false": False, "0": False}.get(
                raw.strip().lower(), raw
            )
        elif kind is tuple:
            value = [_parse(v) for v in raw.split(",")]
        else:
            value = raw if kind is str else _parse(raw)
        out[key] = check_field(key, value)
    return out


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as JSON (atomically)."""
    atomic_write_text(path, json.dumps(asdict(cfg), indent=2) + "\n")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a ``config.json`` written by :func:`save_config`.

    Raises:
        ConfigError: naming the file and the problem (unreadable, unknown key, bad field value) in one line.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
