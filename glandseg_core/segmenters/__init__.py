"""Segmenters: one per model kind, loaded from a model folder; image -> raw output -> label map.

``load_segmenter("trained_models/unet")(image)`` gives an int32[H, W] label map (0=background, 1..N glands) of
a uint8[H, W, 3] RGB image. Test-time augmentation (``tta.py``) and tiling of large images (``tiling.py``) wrap
the segmenter's forward pass; instance painting and merging live in ``instances.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoints import POSTPROCESS, model_from_state, read_checkpoint, weights_file
from ..config import RunConfig, config_from_dict, load_config
from ..device import apply_thread_limit, pick_device
from ..engines import accelerate
from ..errors import ConfigError, ModelError
from ..thresholds import Post, default_post, load_post
from .base import Segmenter
from .instances import Instances
from .maskrcnn import MaskRCNNSegmenter
from .tiling import Tiling
from .unet import UNetSegmenter

__all__ = [
    "Instances",
    "MaskRCNNSegmenter",
    "Segmenter",
    "Tiling",
    "UNetSegmenter",
    "load_segmenter",
    "make_segmenter",
]


def make_segmenter(
    model: torch.nn.Module,
    cfg: RunConfig,
    post: Post,
    device: torch.device | None = None,
    *,
    tta: bool = False,
    tiling: Tiling | None = None,
    path: Path | None = None,
    engine: str = "torch",
    weights: Path | None = None,
) -> Segmenter:
    """A segmenter around a network in memory (eval mode is the caller's business).

    ``engine`` (``engines.ENGINES``) is ``torch`` by default here: a network in memory is often one being trained
    (tuning and validation during ``fit``), whose forward an engine would freeze. ``auto``, ``openvino`` or
    ``onnx`` export it (keyed by ``weights``' SHA-256, else a hash of its tensors) and replace its modules' ``forward`` in place.

    Raises:
        ModelError: when ``post`` does not belong to ``cfg.model``'s kind, or ``engine`` cannot run.
    """
    device = torch.device("cpu") if device is None else device
    tiling = Tiling() if tiling is None else tiling
    kind = cfg.kind
    if not isinstance(post, kind.post_type):
        raise ModelError(f"{type(post).__name__} settings do not fit a {cfg.model} model")
    accelerate(model, cfg, device, engine, weights=weights)
    return kind.segmenter(model, cfg, post, device, tta=tta, tiling=tiling, path=path)


def _read_config(model_dir: Path, ckpt: dict) -> RunConfig:
    try:
        if (model_dir / "config.json").is_file():
            return load_config(model_dir / "config.json")
        return config_from_dict(ckpt.get("config", {}))
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{model_dir}: bad config ({e})") from None


def load_segmenter(
    model_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    tta: bool = False,
    tiling: Tiling | None = None,
    engine: str = "auto",
) -> Segmenter:
    """Load a model folder (``weights.pt``, ``config.json``, ``postprocess.json``) or a training run folder.

    The kind may adapt the loaded network to its settings (``ModelKind.loaded``: a Mask R-CNN drops detections
    scoring below ``post.score_thresh``, faster with the same label maps): use :func:`make_segmenter` with a
    network of your own to see lower-scoring detections.

    Args:
        model_dir: the folder. device: ``cpu``, ``cuda`` or None (CUDA when present).
        tta: average 8 flipped/rotated views. tiling: window settings for large images (default :class:`Tiling`).
        engine: ``auto`` (the fastest installed engine on a CPU, PyTorch otherwise or when an export fails),
            ``torch``, ``openvino`` or ``onnx`` (``glandseg_core/engines``); ``engines.engine_of(seg.model)``
            says which runs.

    Raises:
        ModelError: naming what is missing or broken.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist")
    weights = weights_file(model_dir)
    ckpt = read_checkpoint(weights)
    cfg = _read_config(model_dir, ckpt)
    post_path = model_dir / POSTPROCESS
    try:
        post = load_post(post_path, cfg.model) if post_path.is_file() else default_post(cfg)
    except ConfigError as e:
        raise ModelError(f"bad post-processing settings: {e}") from None
    dev = pick_device(device)
    apply_thread_limit()
    model = model_from_state(cfg, ckpt["model"], dev, weights.name)
    cfg.kind.loaded(model, post)
    return make_segmenter(
        model, cfg, post, dev, tta=tta, tiling=tiling, path=model_dir, engine=engine, weights=weights
    )
