"""Segmentations kept on disk between server starts, and the bundled samples segmented ahead of the first visit.

The Compare page opens on a bundled sample with both models' results: so that this first paint does not wait
for the models, the samples' label maps are shipped in the repository (:mod:`glandseg_dashboard.shipped`) and,
where those are stale (other weights), computed at install time (``python -m glandseg_dashboard.precompute``,
run by scripts/setup.sh) or at the server's first page run by a background thread (:func:`warm`), and saved under
``$GLANDSEG_CACHE`` (default ``cache/`` beside app.py, git-ignored) as ``segmentations/<hash>.npz``. The key
(:func:`key`) holds the model folder, its weights' mtime, TTA, the pixel size and the image's digest, so a
replaced model is segmented again. Only images the server ships or reads from the GlaS folder are kept on disk,
never a user's upload. No streamlit here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glandseg_core.checkpoints import WEIGHTS

from .settings import APP_DIR, mtime

_started: set[str] = set()
_lock = threading.Lock()


def digest(image: np.ndarray) -> str:
    """A short content hash of an image (part of the result key)."""
    h = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=12)
    h.update(repr(image.shape).encode())
    return h.hexdigest()


def key(model_dir: str, tta: bool, mpp: float | None, image_id: str) -> tuple:
    """The key of a segmentation: model folder, its weights' mtime, TTA, pixel size, image digest."""
    return (model_dir, mtime(Path(model_dir) / WEIGHTS), bool(tta), mpp, image_id)


def cache_dir() -> Path:
    """``$GLANDSEG_CACHE/segmentations`` (default ``cache/segmentations`` beside app.py)."""
    raw = os.environ.get("GLANDSEG_CACHE")
    return (Path(raw).expanduser() if raw else APP_DIR / "cache") / "segmentations"


def _path(key: tuple) -> Path:
    return cache_dir() / f"{hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()}.npz"


def load(key: tuple) -> tuple[np.ndarray, float] | None:
    """(label map int32[H, W], model seconds) kept for ``key``, or None."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            return f["labels"].astype(np.int32, copy=False), float(f["seconds"])
    except (OSError, ValueError, KeyError):  # torn or foreign: computed again and replaced
        return None


def save(key: tuple, labels: np.ndarray, seconds: float) -> None:
    """Keep a label map for ``key`` (atomically; a full disk only loses the copy)."""
    path = _path(key)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, labels=labels, seconds=np.float64(seconds))
        tmp.replace(path)


def warm(name: str, jobs: list[Callable[[], object]]) -> bool:
    """Run ``jobs`` (each computes and keeps one segmentation) one after another in a daemon thread, once per
    process and ``name``. Returns whether this call started them."""
    with _lock:
        if name in _started:
            return False
        _started.add(name)

    def work() -> None:
        for job in jobs:
            with contextlib.suppress(Exception):  # a broken model shows its error on the page instead
                job()

    threading.Thread(target=work, name=f"glandseg-warm-{name}", daemon=True).start()
    return True
