"""Load a model folder and segment images: ``load_run(dir) -> Run``, ``predict(run, image) -> label map``.

Label maps are int32[H, W] of the input image's shape: 0=background, 1..N glands.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import tiling
from .config import RunConfig, config_from_dict, load_config
from .models import build_model
from .postprocess import (
    MaskRCNNPost,
    UNetPost,
    maskrcnn_to_labels,
    post_from_dict,
    save_post,
    unet_to_labels,
)
from .precision import autocast

WEIGHTS = "weights.pt"
POSTPROCESS = "postprocess.json"
FP16_ABOVE_BYTES = 90 * 2**20
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class ModelError(ValueError):
    """A model folder or checkpoint that cannot be used (one-line message)."""


@dataclass
class Run:
    """A loaded model: the network (in eval mode), its config and post-processing settings."""

    model: torch.nn.Module
    cfg: RunConfig
    post: UNetPost | MaskRCNNPost
    path: Path | None = None
    device: torch.device = torch.device("cpu")

    @property
    def kind(self) -> str:
        return self.cfg.model


def pick_device(name: str | None = None) -> torch.device:
    """``cuda`` when available (or asked), else ``cpu``.

    Raises:
        ModelError: when ``cuda`` is asked for but not available.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8[H, W, 3] -> float32[1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of a [B, 3, H, W] tensor in [0, 1]."""
    return (x - _MEAN.to(x.device)) / _STD.to(x.device)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, 3], got {image.dtype}{list(image.shape)}")


def _unet_forward(model: torch.nn.Module, x: torch.Tensor, multiple: int, amp: bool) -> torch.Tensor:
    """Pad to a multiple of the U-Net's stride (reflect), run, crop back; returns probabilities [B, 2, H, W]."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    xp = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    with autocast(x.device, amp):
        logits = model(xp.contiguous(memory_format=torch.channels_last))
    return torch.sigmoid(logits.float())[..., :h, :w]


_TTA = [(False, 0), (True, 0), (False, 1), (True, 1), (False, 2), (True, 2), (False, 3), (True, 3)]


def unet_input(run: Run, image: np.ndarray) -> torch.Tensor:
    """uint8[H, W, 3] -> normalised float32[1, 3, h, w] at the U-Net's scale (``cfg.unet_scale``).

    Resizes before normalising (both are linear), so a large image makes one full-size float copy, not two.
    """
    _check_image(image)
    h, w = image.shape[:2]
    x = to_tensor(image).to(run.device)
    scale = run.cfg.unet_scale
    if scale != 1.0:
        size = (max(16, round(h * scale)), max(16, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return normalize(x)


def unet_tensor_probs(run: Run, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """U-Net probabilities of a prepared input (:func:`unet_input`), optionally averaged over 8 flips/rotations.

    Returns:
        float32[1, 2, h, w] at the input's size.
    """
    multiple, amp = run.model.multiple, run.cfg.train_amp
    with torch.inference_mode():
        if not tta:
            return _unet_forward(run.model, x, multiple, amp)
        acc = torch.zeros((1, 2) + x.shape[-2:], device=x.device)
        for flip, k in _TTA:
            xt = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
            pt = torch.rot90(_unet_forward(run.model, xt, multiple, amp), -k, dims=(-2, -1))
            acc += pt.flip(-1) if flip else pt
        return acc.div_(len(_TTA))


def unet_probs(run: Run, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """Gland and contour probabilities at the image's size (images with a side above
    ``tiling.TILE_ABOVE`` pixels run window by window, blended without seams).

    Returns:
        float32[2, H, W].
    """
    with torch.inference_mode():
        x = unet_input(run, image)
        h, w = image.shape[:2]
        if tiling.needs_tiling(image.shape):
            p = tiling.unet_tiled(run, x, tta=tta)
        else:
            p = unet_tensor_probs(run, x, tta=tta)
        del x
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
    return p[0].cpu().numpy()


def maskrcnn_outputs(run: Run, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask R-CNN detections at the image's size (for a run from :func:`load_run`, only those scoring at least
    its ``post.score_thresh``).

    Returns:
        scores float32[N], masks float32[N, H, W] (probabilities).
    """
    _check_image(image)
    x = to_tensor(image).to(run.device)[0]
    with torch.inference_mode():  # the backbone runs in mixed precision by itself (models/maskrcnn.py)
        out = run.model([x])[0]
    return out["scores"].float().cpu().numpy(), out["masks"][:, 0].float().cpu().numpy()


def predict(run: Run, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """Segment the glands of one image.

    Args:
        run: a loaded model (:func:`load_run`).
        image: uint8[H, W, 3] RGB.
        tta: test-time augmentation (flips and 90-degree rotations, averaged); U-Net averages probabilities,
            Mask R-CNN merges the instances of every view.

    Images with a side above ``tiling.TILE_ABOVE`` pixels are segmented window by window (``tiling.py``).

    Returns:
        int32[H, W] label map, 0=background, 1..N glands.
    """
    if run.kind == "unet":
        return unet_to_labels(unet_probs(run, image, tta=tta), run.post)  # type: ignore[arg-type]
    _check_image(image)
    if tiling.needs_tiling(image.shape):  # window by window: memory stays bounded, glands are never cut
        return tiling.maskrcnn_tiled_labels(run, image, tta=tta)
    if tta:
        from .tta import maskrcnn_tta

        scores, masks = maskrcnn_tta(run, image)
    else:
        scores, masks = maskrcnn_outputs(run, image)
    return maskrcnn_to_labels(scores, masks, run.post, shape=image.shape[:2])  # type: ignore[arg-type]


def default_post(cfg: RunConfig) -> UNetPost | MaskRCNNPost:
    """Untuned post-processing for a config (used during training)."""
    return UNetPost(instance=cfg.unet_instance) if cfg.model == "unet" else MaskRCNNPost()


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        ModelError: for a missing, truncated, foreign or malicious file.
    """
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path.name}: refused: it holds Python objects other than tensors, so it is not a glandseg "
            "checkpoint and loading it could run code"
        ) from None
    except Exception as e:  # noqa: BLE001  torch raises many types for bad files (RuntimeError, EOFError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path.name}: not a usable glandseg checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise ModelError(f"{path.name}: not a glandseg checkpoint (no 'model' state dict)")
    return ckpt


def load_weights(model: torch.nn.Module, state: dict, mismatch: str) -> None:
    """Load ``state`` into ``model`` (fp16 tensors are cast back to fp32).

    Raises:
        ModelError: ``mismatch`` and torch's first line when the shapes or keys do not fit.
    """
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{mismatch} ({str(e).splitlines()[0][:160]})") from None


def model_from_state(cfg: RunConfig, state: dict, device: torch.device, source: str = "checkpoint") -> torch.nn.Module:
    """Build ``cfg``'s network and load ``state`` (fp16 tensors are cast back to fp32)."""
    model = build_model(cfg)
    load_weights(model, state, f"{source}: weights do not fit a {cfg.model} model")
    model.to(device).eval()
    if cfg.model == "unet":
        model.to(memory_format=torch.channels_last)
    return model


def load_run(model_dir: str | Path, device: str | None = None) -> Run:
    """Load a model folder (``weights.pt``, ``config.json``, ``postprocess.json``) or a training run folder.

    A Mask R-CNN is set to drop detections scoring below ``post.score_thresh`` (faster, same label maps): keep
    ``run.post``'s threshold, or build the :class:`Run` yourself to see lower-scoring detections.

    Raises:
        ModelError: naming what is missing or broken.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist")
    weights = model_dir / WEIGHTS
    if not weights.is_file() and (model_dir / "best.pt").is_file():
        weights = model_dir / "best.pt"  # a training run folder
    ckpt = read_checkpoint(weights)
    try:
        cfg = load_config(model_dir / "config.json") if (model_dir / "config.json").is_file() else config_from_dict(ckpt["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{model_dir}: bad config ({e})") from None
    post_path = model_dir / POSTPROCESS
    try:
        post = post_from_dict(cfg.model, json.loads(post_path.read_text())) if post_path.is_file() else default_post(cfg)
    except (ValueError, TypeError) as e:
        raise ModelError(f"{post_path}: bad post-processing settings ({e})") from None
    dev = pick_device(device)
    if os.environ.get("GLANDSEG_THREADS", "").isdigit() and int(os.environ["GLANDSEG_THREADS"]) > 0:
        torch.set_num_threads(int(os.environ["GLANDSEG_THREADS"]))  # e.g. 1 on a CPU shared with a training
    model = model_from_state(cfg, ckpt["model"], dev, weights.name)
    if isinstance(post, MaskRCNNPost):
        # Detections scoring below the painting threshold are never painted: dropping them in the model skips
        # their mask head and full-size paste. Exact: NMS only lets higher-scoring boxes suppress lower ones.
        floor = float(np.nextafter(np.float32(post.score_thresh), np.float32(0)))  # keep scores == thresh
        model.roi_heads.score_thresh = max(model.roi_heads.score_thresh, floor)
    return Run(model, cfg, post, model_dir, dev)


def list_model_dirs(root: str | Path = "trained_models") -> list[Path]:
    """Model folders under ``root`` (those with a ``weights.pt``), sorted by name."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if (p / WEIGHTS).is_file()) if root.is_dir() else []


def export_model(run_dir: str | Path, model_dir: str | Path, overwrite: bool = False, fp16: bool | None = None) -> Path:
    """Copy a run's best checkpoint into a model folder (weights, config, post-processing).

    ``fp16=None`` stores weights in fp16 only when fp32 would exceed ``FP16_ABOVE_BYTES``. BatchNorm statistics
    always stay fp32: in fp16 tiny running variances round to zero and the U-Net's val F1 fell from 0.916 to 0.864.

    Raises:
        ModelError: when ``model_dir`` holds a model already and ``overwrite`` is False.
    """
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    if (model_dir / WEIGHTS).exists() and not overwrite:
        raise ModelError(f"{model_dir} already holds a model; confirm overwriting it")
    ckpt = read_checkpoint(run_dir / "best.pt")
    cfg = load_config(run_dir / "config.json")
    state = ckpt["model"]
    if fp16 is None:
        fp16 = sum(v.numel() * v.element_size() for v in state.values()) > FP16_ABOVE_BYTES
    state = {k: v.half() if fp16 and v.is_floating_point() and "running_" not in k else v for k, v in state.items()}
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / (WEIGHTS + ".tmp")
    torch.save({"model": state, "config": asdict(cfg), "epoch": ckpt.get("epoch", -1)}, tmp)
    tmp.replace(model_dir / WEIGHTS)
    shutil.copyfile(run_dir / "config.json", model_dir / "config.json")
    post = run_dir / POSTPROCESS
    if post.is_file():
        shutil.copyfile(post, model_dir / POSTPROCESS)
    else:
        save_post(default_post(cfg), model_dir / POSTPROCESS)
    return model_dir
