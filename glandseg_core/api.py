"""The public Python API: ``import glandseg_core as gs``.

A small face over the package for scripts and notebooks::

    import glandseg_core as gs

    labels = gs.segment("scan.png", model="unet", mpp=0.5)          # int32 label map, 0 = background
    scores = gs.score_image(labels, gs.read_label_map("scan_anno.png"))
    table, summary = gs.evaluate("unet", gs.from_pairs([image], [truth], mpp=0.5))
    gs.fit(gs.get_preset("glandseg-unet"), "path/to/glas", "runs/mine")

Models are named by folder (``"trained_models/unet"``) or, for the folders under the models root
(``$GLANDSEG_MODELS``, else ``./trained_models``), by name (``"unet"``, ``"maskrcnn"``). Loaded models are kept
(one per folder, device and TTA setting), so repeated calls do not reload weights.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import PRESETS, RunConfig, get_preset
from .datasets import DataLike
from .errors import ModelError
from .evaluation import evaluate as _evaluate
from .imaging.formats import image_mpp
from .imaging.io import read_image
from .metrics import ImageScores
from .metrics import score_image as _score_image
from .progress import ProgressFn
from .registry import kind_names
from .segmenters import Segmenter
from .segmenters import load_segmenter as _load_segmenter
from .train import fit as _fit

ModelLike = str | os.PathLike[str] | Segmenter


def models_root() -> Path:
    """Where model names are looked up: ``$GLANDSEG_MODELS``, else ``./trained_models``."""
    return Path(os.environ.get("GLANDSEG_MODELS") or "trained_models").expanduser()


def model_path(model: str | os.PathLike[str]) -> Path:
    """The folder of ``model``: an existing path as is, else ``models_root() / model``.

    Raises:
        ModelError: neither exists (one line naming both places).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    named = models_root() / str(model)
    if named.is_dir():
        return named
    raise ModelError(
        f"no model folder {path} (nor {named}); give a model folder, e.g. trained_models/unet"
    )


@functools.lru_cache(maxsize=4)
def _cached(path: str, device: str | None, tta: bool, engine: str) -> Segmenter:
    return _load_segmenter(path, device=device, tta=tta, engine=engine)


def load_segmenter(
    model: ModelLike = "unet",
    *,
    device: str | None = None,
    tta: bool = False,
    engine: str = "auto",
) -> Segmenter:
    """A loaded model (kept for the next call with the same folder, device, TTA setting and engine).

    Args:
        model: a model folder, a name under :func:`models_root`, or a segmenter (returned as is).
        device: ``cpu``, ``cuda`` or None (CUDA when present). tta: average 8 flipped/rotated views.
        engine: ``auto`` (ONNX Runtime or OpenVINO when installed, on a CPU; else PyTorch), ``torch``,
            ``openvino`` or ``onnx`` (``glandseg_core.engines``).

    Raises:
        ModelError: a missing or broken model folder (one line).
    """
    if isinstance(model, (str, os.PathLike)):
        return _cached(str(model_path(model).resolve()), device, tta, engine)
    return model


def segment(
    image: np.ndarray | str | os.PathLike[str],
    model: ModelLike = "unet",
    *,
    mpp: float | None = None,
    tta: bool = False,
    device: str | None = None,
    progress: ProgressFn | None = None,
    engine: str = "auto",
) -> np.ndarray:
    """The glands of one image as an int32[H, W] label map at the image's size (0 = background, 1..N glands).

    Args:
        image: uint8[H, W, 3] RGB, or an image file (PNG, JPEG, TIFF, BMP, ...).
        model: as in :func:`load_segmenter`.
        mpp: the image's micrometres per pixel; the image is brought to the model's scale (GlaS: 0.62) and the
            labels back to its size. None: a TIFF's recorded pixel size, else the model's own scale.
        tta, device, engine: as in :func:`load_segmenter`. progress: hears a ``segment`` step per forward pass.
    """
    if not isinstance(image, np.ndarray):
        path = Path(image)
        mpp = image_mpp(path) if mpp is None else mpp
        image = read_image(path)
    seg = load_segmenter(model, device=device, tta=tta, engine=engine)
    return seg(image, mpp=mpp, progress=progress)


def evaluate(
    model: ModelLike,
    data: DataLike = None,
    splits: list[str] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    tta: bool = False,
    device: str | None = None,
    progress: ProgressFn | None = None,
    engine: str = "auto",
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Score ``model`` with the official GlaS metrics on ``data`` (writes files only with ``out_dir``; never
    records test-set scorings, which ``glandseg evaluate`` does).

    Args:
        model, engine: as in :func:`load_segmenter`.
        data: a data set (:func:`from_pairs`, :class:`GlasDataset`, ...), a GlaS folder, or None for
            ``$GLANDSEG_DATA``. splits: e.g. ``["val"]``; None: every split of ``data``.

    Returns:
        (per-image table, summary ``{split: {"pooled_f1", "pooled_object_dice", ...}}``).
    """
    segmenter = load_segmenter(model, device=device, tta=tta, engine=engine)
    return _evaluate(data, splits, out_dir, segmenter=segmenter, progress=progress)


def score_image(pred: np.ndarray, truth: np.ndarray) -> ImageScores:
    """Every GlaS metric of one predicted label map against its ground truth (F1, object Dice, object
    Hausdorff, ...); see ``docs/METRICS.md``."""
    return _score_image(pred, truth)


def fit(
    config: RunConfig | str,
    data: DataLike,
    run_dir: str | os.PathLike[str],
    **options: Any,
) -> dict[str, Any]:
    """Train a model: ``config`` (a :class:`RunConfig` or a preset's name) on ``data``'s ``train`` split,
    choosing the epoch and tuning post-processing on its ``val`` split; writes ``run_dir`` (``best.pt``,
    ``config.json``, ``postprocess.json``, ...), which :func:`segment` can use as a model folder.

    ``options`` are :func:`glandseg_core.train.fit`'s (``resume``, ``device``, ``val_data``, ``time_limit``,
    ``show_bar``, ...). Returns the best epoch's validation record.
    """
    cfg = get_preset(config) if isinstance(config, str) else config
    return _fit(cfg, data, run_dir, **options)


def list_presets() -> list[str]:
    """Names of every registered kind's presets."""
    return sorted(PRESETS)


def list_kinds() -> list[str]:
    """Names of the registered model kinds (plugins included)."""
    return list(kind_names())
