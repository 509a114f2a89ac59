"""Checkpoints and model folders: read a checkpoint safely, load its weights, export a run as a model folder.

A model folder (``trained_models/<name>/``) holds ``weights.pt`` (``{"model": state_dict, "config": dict,
"epoch": int}``, fp16 allowed), ``config.json`` and ``postprocess.json``; a training run folder holds ``best.pt``
instead of ``weights.pt``. Checkpoints are always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path

import torch

from .config import RunConfig, config_to_dict, load_config
from .errors import ModelError, WriteError
from .files import describe_os_error
from .models import build_model
from .thresholds import default_post

WEIGHTS = "weights.pt"
POSTPROCESS = "postprocess.json"
FP16_ABOVE_BYTES = 90 * 2**20


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


def model_from_state(
    cfg: RunConfig, state: dict, device: torch.device, source: str = "checkpoint"
) -> torch.nn.Module:
    """Build ``cfg``'s network, load ``state`` (fp16 tensors are cast back to fp32); eval mode on ``device``."""
    model = build_model(cfg)
    load_weights(model, state, f"{source}: weights do not fit a {cfg.model} model")
    model.to(device).eval()
    return cfg.kind.prepare(model)


def weights_file(model_dir: Path) -> Path:
    """``weights.pt`` of a model folder, else ``best.pt`` of a training run folder (may not exist)."""
    weights = model_dir / WEIGHTS
    if not weights.is_file() and (model_dir / "best.pt").is_file():
        return model_dir / "best.pt"
    return weights


def list_model_dirs(root: str | Path = "trained_models") -> list[Path]:
    """Model folders under ``root`` (those with a ``weights.pt``), sorted by name."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if (p / WEIGHTS).is_file()) if root.is_dir() else []


def export_model(
    run_dir: str | Path, model_dir: str | Path, *, overwrite: bool = False, fp16: bool | None = None
) -> Path:
    """Copy a run's best checkpoint into a model folder (weights, config, post-processing).

    ``fp16=None`` stores weights in fp16 only when fp32 would exceed ``FP16_ABOVE_BYTES``. BatchNorm statistics
    always stay fp32: in fp16 tiny running variances round to zero and the U-Net's val F1 fell from 0.916 to 0.864.

    Raises:
        ModelError: when ``model_dir`` holds a model already and ``overwrite`` is False.
        WriteError: a file could not be written (a full disk): one line naming it; the folder keeps the model
            it held (the files are replaced together or not at all) and no temporary file is left.
    """
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    if (model_dir / WEIGHTS).exists() and not overwrite:
        raise ModelError(f"{model_dir} already holds a model; confirm overwriting it")
    ckpt = read_checkpoint(run_dir / "best.pt")
    cfg = load_config(run_dir / "config.json")
    state = ckpt["model"]
    if fp16 is None:
        fp16 = sum(v.numel() * v.element_size() for v in state.values()) > FP16_ABOVE_BYTES
    state = {
        k: v.half() if fp16 and v.is_floating_point() and "running_" not in k else v
        for k, v in state.items()
    }
    post = run_dir / POSTPROCESS
    post_bytes = post.read_bytes() if post.is_file() else _post_text(cfg).encode()
    files = {"config.json": (run_dir / "config.json").read_bytes(), POSTPROCESS: post_bytes}
    weights = {"model": state, "config": config_to_dict(cfg), "epoch": ckpt.get("epoch", -1)}
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(describe_os_error(model_dir, e, "create")) from e
    _write_model_files(model_dir, weights, files)
    return model_dir


def _post_text(cfg: RunConfig) -> str:
    """``postprocess.json`` of untuned settings, as :func:`glandseg_core.thresholds.save_post` writes it."""
    return json.dumps(asdict(default_post(cfg)), indent=2) + "\n"


def _write_model_files(model_dir: Path, weights: dict, files: dict[str, bytes]) -> None:
    """Write ``weights.pt`` and the small ``files`` all together or not at all (temporary files, then renames).

    Raises:
        WriteError: one line naming the file that failed (a full disk); no temporary file is left.
    """
    tmps: dict[Path, Path] = {}
    target = model_dir / WEIGHTS
    try:
        tmps[target] = model_dir / (WEIGHTS + ".tmp")
        with open(tmps[target], "wb") as fh:
            torch.save(weights, fh)
            fh.flush()
            os.fsync(fh.fileno())
        for name, data in files.items():
            target = model_dir / name
            tmps[target] = model_dir / f".{name}.tmp"
            tmps[target].write_bytes(data)
        for target, tmp in tmps.items():
            os.replace(tmp, target)
        tmps = {}
    except OSError as e:
        raise WriteError(describe_os_error(target, e) + "; nothing was exported") from e
    except RuntimeError as e:  # torch's own writer on a full disk ("enforce fail at inline_container")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        msg = f"cannot write {target}: disk full or I/O error (torch: {first}); nothing was exported"
        raise WriteError(msg) from e
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
