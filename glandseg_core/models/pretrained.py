"""Pretrained starts (``cfg.pretrained``): COCO Mask R-CNN weights, ImageNet backbones, or a local file.

``none`` trains from scratch. ``coco`` and ``coco-v2`` start a ResNet-50-FPN Mask R-CNN from torchvision's COCO
weights (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` / ``MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1``) and replace
the box and mask predictors for two classes, as the torchvision fine-tuning tutorial that the poster follows
does. ``imagenet`` starts the Mask R-CNN's backbone (ResNet-18/34/50, MobileNetV3), or the U-Net's ResNet
encoder (``unet_encoder``), from torchvision's ImageNet weights. Any other value is a local file: a state dict, or a checkpoint holding one under ``"model"``, whose
tensors are loaded where name and shape fit this network (the rest, e.g. heads for other classes, stay new).

Weights come through torchvision's weights API, so the standard torch cache is used:
``$TORCH_HOME/hub/checkpoints/<file>`` (``~/.cache/torch/hub/checkpoints`` by default). A file missing there is
downloaded when the machine is online; offline, loading raises a one-line :class:`ModelError` naming the file,
the folder to put it in, and how to train from scratch instead. Files are always read with
``weights_only=True``.

The network's shape follows the start (:func:`uses_frozen_norm`, ``coco-v2``'s heads), so a model folder trained
from COCO weights rebuilds the same network for inference without reading any pretrained file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
)
from torchvision.models._api import WeightsEnum
from torchvision.models.detection import (
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
)

from ..config import RunConfig
from ..errors import ConfigError, ModelError

log = logging.getLogger(__name__)

NAMED_STARTS = ("none", "coco", "coco-v2", "imagenet")
# The tutorial replaces both predictors; their COCO tensors (91 classes) are never loaded.
PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")
_IMAGENET: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,  # what torchvision's Mask R-CNN builders start from
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}
_COCO: dict[str, WeightsEnum] = {
    "coco": MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
    "coco-v2": MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
}
FROM_SCRATCH = "train from scratch instead with --set pretrained=none (or 'none' on the Train page)"


def start_kind(cfg: RunConfig) -> str:
    """``none``, ``coco``, ``coco-v2``, ``imagenet``, or ``file`` (a path)."""
    return cfg.pretrained if cfg.pretrained in NAMED_STARTS else "file"


def check_start(cfg: RunConfig) -> None:
    """Check that ``cfg.pretrained`` fits ``cfg``'s network.

    Raises:
        ConfigError: one line naming the setting and what would fit.
    """
    kind = start_kind(cfg)
    if not cfg.pretrained.strip():
        raise ConfigError(f"pretrained must be one of {', '.join(NAMED_STARTS)} or a file path, got ''")
    if kind in NAMED_STARTS and kind != "none":
        cfg.kind.check_start(cfg, kind)


def uses_frozen_norm(cfg: RunConfig) -> bool:
    """Whether the Mask R-CNN backbone uses FrozenBatchNorm and trains only its last 3 stages, as torchvision's
    builders do when they start from COCO (v1) or ImageNet weights."""
    return start_kind(cfg) in ("coco", "imagenet")


def weights_for(cfg: RunConfig) -> WeightsEnum | None:
    """torchvision's weights entry of a named start (None for ``none`` and files)."""
    check_start(cfg)
    kind = start_kind(cfg)
    if kind in _COCO:
        return _COCO[kind]
    if kind == "imagenet":
        return _IMAGENET[cfg.kind.imagenet_arch(cfg)]
    return None


def cache_file(weights: WeightsEnum) -> Path:
    """Where torchvision's weights API looks for ``weights``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _size(weights: WeightsEnum) -> str:
    mb = weights.meta.get("_file_size")
    return f", {mb:.0f} MB" if mb else ""


def _missing_message(cfg: RunConfig, weights: WeightsEnum, why: str) -> str:
    path = cache_file(weights)
    return (
        f"pretrained={cfg.pretrained} needs {path.name}{_size(weights)} in {path.parent} ({why}); download it from "
        f"{weights.url} into that folder (or set TORCH_HOME to a cache holding it), or {FROM_SCRATCH}"
    )


def pretrained_status(cfg: RunConfig) -> tuple[bool, str]:
    """Whether the start that ``cfg.pretrained`` names can be loaded now, without a download (for the Train page).

    Returns:
        (available, one-line message). ``available`` is False for a setting that does not fit the network, a
        missing local file, or named weights not in the torch cache (a Start would then try to download them).
    """
    try:
        weights = weights_for(cfg)
    except ConfigError as e:
        return False, str(e)
    kind = start_kind(cfg)
    if kind == "none":
        return True, "from scratch (random weights)"
    if kind == "file":
        path = Path(cfg.pretrained).expanduser()
        if path.is_file():
            return True, f"weights from {path} (tensors whose names and shapes fit this network)"
        return False, f"pretrained file {path} does not exist; give an existing file, or {FROM_SCRATCH}"
    assert weights is not None
    path = cache_file(weights)
    if path.is_file():
        return True, f"{kind} weights found in the torch cache: {path}"
    return False, _missing_message(cfg, weights, "not in the torch cache: Start will try to download it")


def _fetch(cfg: RunConfig, weights: WeightsEnum, download: bool) -> dict[str, torch.Tensor]:
    """The state dict of a named start, from the torch cache (downloaded there first when allowed)."""
    path = cache_file(weights)
    if not path.is_file() and not download:
        raise ModelError(_missing_message(cfg, weights, "not in the torch cache, downloads off"))
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except OSError as e:  # URLError, timeouts, a read-only cache: the machine cannot fetch it
        raise ModelError(
            _missing_message(cfg, weights, f"not in the torch cache and the download failed: {e}")
        ) from None
    except Exception as e:  # noqa: BLE001  torch raises many types for a damaged file
        raise ModelError(
            f"{path}: not a readable state dict ({str(e).splitlines()[0][:120]}); delete it and retry"
        ) from None


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict (or a checkpoint's ``"model"``) from a local file, read with ``weights_only=True``."""
    if not path.is_file():
        raise ModelError(
            f"pretrained file {path} does not exist; give an existing file, or {FROM_SCRATCH}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  torch raises many types for bad files
        raise ModelError(
            f"pretrained file {path}: not a readable state dict ({str(e).splitlines()[0][:120]})"
        ) from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"pretrained file {path}: holds no state dict of tensors")
    return state


def _load_fitting(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> int:
    """Copy the tensors of ``state`` whose name and shape fit ``module``; returns how many were copied."""
    own = module.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise ModelError(f"{what}: no tensor fits this network (names or shapes differ everywhere)")
    module.load_state_dict(fit, strict=False)
    return len(fit)


def _load_strict(
    module: nn.Module, state: dict[str, torch.Tensor], what: str, drop: tuple[str, ...]
) -> int:
    """Load ``state`` without the keys starting with ``drop``; every other tensor of ``module`` must come from it."""
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    result = module.load_state_dict(state, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not k.startswith(drop) and not k.endswith("num_batches_tracked")
    ]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise ModelError(
            f"{what}: weights do not fit this network ({len(missing)} missing, {len(result.unexpected_keys)} "
            f"unexpected tensors, e.g. {first})"
        )
    return len(state)


def load_pretrained(model: nn.Module, cfg: RunConfig, *, download: bool = True) -> str:
    """Load the start that ``cfg.pretrained`` names into ``model`` (built by ``build_model(cfg)``).

    For ``coco``/``coco-v2`` every tensor but the two predictors' comes from the file, and the predictors
    (already built for two classes) stay freshly initialised, as in the torchvision tutorial. For ``imagenet``
    the backbone's body comes from the file (its classifier is not used). For a file, every tensor whose name
    and shape fit is loaded.

    Args:
        model: the freshly built network. cfg: its config. download: fetch named weights missing from the torch
            cache (False: raise instead).

    Returns:
        One line saying what was loaded (for the run's log).

    Raises:
        ConfigError: a start that does not fit the network. ModelError: the file is missing (offline), unreadable,
            or does not fit; one line naming the file, where to put it, and how to train from scratch.
    """
    weights = weights_for(cfg)
    kind = start_kind(cfg)
    if kind == "none":
        return "from scratch"
    if kind == "file":
        path = Path(cfg.pretrained).expanduser()
        n = _load_fitting(model, _read_file(path), f"pretrained file {path}")
        msg = f"{n} of {len(model.state_dict())} tensors from {path}"
    elif kind == "imagenet":
        assert weights is not None
        state = _fetch(cfg, weights, download)
        name = cfg.kind.imagenet_arch(cfg)
        target, what = cfg.kind.imagenet_module(model)
        if name == "mobilenet_v3_large":
            state = {
                k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
            }
        else:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        n = _load_strict(target, state, cache_file(weights).name, ())
        msg = f"{what} {name} from {cache_file(weights)} ({n} tensors)"
    else:
        assert weights is not None
        n = _load_strict(
            model, _fetch(cfg, weights, download), cache_file(weights).name, PREDICTOR_PREFIXES
        )
        msg = f"{n} tensors from {cache_file(weights)}; box and mask predictors new, for 2 classes"
    log.info("pretrained start (%s): %s", cfg.pretrained, msg)
    return msg
