"""Where the dashboard reads and writes, what the deployment allows, and the two model roles.

Folders (each overridable by an environment variable, for tests and deployments):

- models ``GLANDSEG_MODELS`` (default ``trained_models/`` beside app.py; the two roles are its folders
  ``unet/`` and ``maskrcnn/``); Promote writes only below it.
- runs ``GLANDSEG_RUNS`` (default ``runs/``); the Train page creates run folders only below it.
- saved annotations ``GLANDSEG_ANNOTATIONS`` (default ``annotations/``); Annotate saves only below it.
- GlaS ``GLANDSEG_DATA``; data folders typed on the Train page must lie in ``GLANDSEG_DATA_ROOT`` (default: the
  ``GLANDSEG_DATA`` folder itself, else ``data/`` beside app.py) unless ``GLANDSEG_ALLOW_ANY_PATH=1``.

Deployment switches: ``GLANDSEG_READONLY=1`` hides everything that writes on the server (the Train page with
Promote, and Annotate's Save). No streamlit here.
"""

from __future__ import annotations

import os
from pathlib import Path

from glandseg_core.registry import all_kinds

APP_DIR = Path(__file__).resolve().parents[1]
SAMPLES_DIR = APP_DIR / "samples"
ROLES = {
    k.name: k.title for k in all_kinds()
}  # model kind -> display name, in panel order (registry order)
SAMPLE_GRADES = {"testA_1": "benign", "testA_13": "malignant", "testB_2": "malignant"}
MISSING_MTIME = -1.0  # what :func:`mtime` gives for a missing file (part of cache keys)
_TRUE = ("1", "true", "yes", "on")


def _env_dir(var: str, default: str) -> Path:
    raw = os.environ.get(var)
    return Path(raw).expanduser() if raw else APP_DIR / default


def _flag(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in _TRUE


def models_root() -> Path:
    """``$GLANDSEG_MODELS`` or ``trained_models/`` beside app.py."""
    return _env_dir("GLANDSEG_MODELS", "trained_models")


def runs_root() -> Path:
    """``$GLANDSEG_RUNS`` or ``runs/`` beside app.py."""
    return _env_dir("GLANDSEG_RUNS", "runs")


def annotations_root() -> Path:
    """``$GLANDSEG_ANNOTATIONS`` or ``annotations/`` beside app.py."""
    return _env_dir("GLANDSEG_ANNOTATIONS", "annotations")


def glas_dir() -> Path | None:
    """``$GLANDSEG_DATA`` when it is set and is a folder, else None."""
    raw = os.environ.get("GLANDSEG_DATA")
    return Path(raw).expanduser() if raw and Path(raw).expanduser().is_dir() else None


def data_root() -> Path:
    """The folder that data folders typed in the dashboard must lie in (see the module docstring)."""
    raw = os.environ.get("GLANDSEG_DATA_ROOT") or os.environ.get("GLANDSEG_DATA")
    return Path(raw).expanduser() if raw else APP_DIR / "data"


def allow_any_data_path() -> bool:
    """``GLANDSEG_ALLOW_ANY_PATH=1``: data folders may lie anywhere (output folders never may)."""
    return _flag("GLANDSEG_ALLOW_ANY_PATH")


def read_only() -> bool:
    """``GLANDSEG_READONLY=1``: nothing in the dashboard writes on the server."""
    return _flag("GLANDSEG_READONLY")


def mtime(path: str | os.PathLike) -> float:
    """Modification time of ``path``, or ``MISSING_MTIME`` when it does not exist (part of every cache key)."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return MISSING_MTIME
