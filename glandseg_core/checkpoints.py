"""Checkpoints and model folders: read a checkpoint safely, load its weights, export a run as a model folder.

A model folder (``trained_models/<name>/``) holds ``weights.pt`` (``{"model": state_dict, "config": dict,
"epoch": int}``, fp16 allowed), ``config.json`` and ``postprocess.json``; a training run folder holds ``best.pt``
instead of ``weights.pt``. Checkpoints are always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
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
# torch.save stores tensors uncompressed, and trained weights hardly compress: a checkpoint whose tensors declare
# far more bytes than the file holds is a decompression bomb (or not torch's), refused before it is loaded.
MAX_EXPANSION = 2.0  # declared tensor bytes per byte of the file, at most
EXPANSION_SLACK = 16 * 2**20  # plus this much (tiny files with a few zero tensors)
MAX_TENSOR_BYTES = 16 * 2**30  # far above any glandseg model (Mask R-CNN ResNet-50 with Adam: ~0.6 GiB)
LEGACY_MAGIC = (
    b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save(_use_new_zipfile_serialization=False)
)


def _check_declared_sizes(path: Path) -> None:
    """Refuse, before ``torch.load`` allocates anything, a checkpoint whose tensors declare an absurd size.

    A torch zip checkpoint lists each tensor storage (``<archive>/data/<key>``) with its uncompressed size in
    the zip directory; those sizes are what loading allocates. The old non-zip format reads each storage's
    size from the pickle and allocates it before reading the data, so it cannot be checked: it is refused.

    Raises:
        ModelError: one line naming the file and the declared size.
    """
    with open(path, "rb") as fh:
        head = fh.read(len(LEGACY_MAGIC))
    if head == LEGACY_MAGIC:
        raise ModelError(
            f"{path.name}: refused: an old (non-zip) torch checkpoint, whose tensor sizes cannot be checked "
            "before loading; load and save it again with a current torch.save"
        )
    if not zipfile.is_zipfile(path):
        return  # not a torch checkpoint: torch.load says why
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    declared = sum(i.file_size for i in infos if "/data/" in i.filename)
    size = path.stat().st_size
    if declared > MAX_TENSOR_BYTES or declared > MAX_EXPANSION * size + EXPANSION_SLACK:
        raise ModelError(
            f"{path.name}: refused: its tensors declare {declared / 2**20:,.0f} MiB in a "
            f"{size / 2**20:,.1f} MiB file (compressed or forged; glandseg checkpoints are neither)"
        )


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        ModelError: for a missing, truncated, foreign or malicious file, or one whose tensors declare far more
            bytes than the file holds (a compressed bomb) or than any glandseg model has, before it is loaded.
    """
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    _check_declared_sizes(path)
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


def grow_outputs(model: torch.nn.Module, state: dict) -> tuple[dict, list[str]]:
    """``state`` with the model's output layer widened where the model has more output channels: the one
    shape mismatch a fine-tuning start accepts (a 2-channel U-Net fine-tuned with the separation head).

    The tensors that may grow are those the network names in ``growable_outputs`` (the U-Net's final 1x1
    ``head``), all of them or none: each must have fewer output channels (first dimension) in the checkpoint
    and the same other dimensions. The checkpoint's channels fill the model's first outputs and the others keep
    the model's fresh initialisation. Anything else (a model of fewer outputs, other input widths, other tensors) is
    left as it is, so loading it still fails.

    Returns:
        (the state to load, ``"name old->new"`` for each tensor grown; empty when nothing grew).
    """
    own = model.state_dict()
    names = tuple(getattr(model, "growable_outputs", ()))
    fits = [
        n in state
        and n in own
        and state[n].shape[1:] == own[n].shape[1:]
        and 0 < state[n].shape[0] < own[n].shape[0]
        for n in names
    ]
    if not names or not all(fits):
        return state, []
    grown = [f"{n} {state[n].shape[0]}->{own[n].shape[0]}" for n in names]
    state = dict(state)
    for name in names:
        merged = own[name].detach().clone()
        merged[: state[name].shape[0]] = state[name].to(merged.dtype)
        state[name] = merged
    return state, grown


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
