"""The bundled samples' results shipped in the repository, so that a first visit shows them at once (issue #22).

``samples/results/<model folder name>/<sample>_labels.png`` are 16-bit label maps (0=background, 1..N glands) of
each bundled sample by each shipped model (no TTA, the model's own pixel size), and ``samples/results/manifest.json``
records, per model folder name, the SHA-256 of its ``weights.pt``, ``config.json`` and ``postprocess.json``, and
per result the image's digest (:func:`glandseg_dashboard.diskcache.digest`) and the model's time. A result is used
only while the model folder's files hash the same: new weights or settings make it stale, and it is computed
again (``python -m glandseg_dashboard.precompute``, or the server's first page run). Written by
``python -m glandseg_dashboard.precompute --ship``. No streamlit here.

Engines: each result records the engine that computed it (``engine``: ``torch``, ``onnx`` or ``openvino``);
``--ship`` runs the dashboard's own ``auto``, so on an install with the engine extras (``scripts/setup.sh``) the
shipped maps are what its dashboard would compute. A result stays valid whatever engine the dashboard runs: the
engines compute in fp32, and their label maps of the bundled samples agree with PyTorch's within the documented
tolerance (at least 0.99 of the pixels labelled alike and the same gland count on every sample; benchmarks/README.md,
"Inference engines", and ``tests/test_engines.py``), so computing them again would cost a first visit tens of
seconds to move a few boundary pixels. New weights or settings, which do change the labels, still make it stale.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from glandseg_core.errors import ImageError
from glandseg_core.imaging.io import label_png_bytes, read_label_map

from . import diskcache
from .settings import SAMPLES_DIR

RESULTS_DIR = SAMPLES_DIR / "results"
MANIFEST = "manifest.json"
MODEL_FILES = ("weights.pt", "config.json", "postprocess.json")  # what the label maps depend on


def _stamp(model_dir: Path) -> tuple:
    out: list[tuple[str, int | None, int | None]] = []
    for name in MODEL_FILES:
        try:
            st = (model_dir / name).stat()
            out.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((name, None, None))
    return tuple(out)


def _sha256(model_dir: str) -> str:
    h = hashlib.sha256()
    for name in MODEL_FILES:
        path = Path(model_dir) / name
        h.update(name.encode())
        if path.is_file():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _hash(model_dir: str, stamp: tuple) -> str:
    """The folder's SHA-256, kept in the disk cache by path and file stamps (mtime, size): a first visit does
    not read the weights (tens of MB) again after ``precompute`` did."""
    kept_path = diskcache.cache_dir() / "model_hashes.json"
    key = hashlib.blake2b(repr((model_dir, stamp)).encode(), digest_size=16).hexdigest()
    try:
        kept = json.loads(kept_path.read_text())
    except (OSError, ValueError):
        kept = {}
    if isinstance(kept, dict) and isinstance(kept.get(key), str):
        return kept[key]
    digest = _sha256(model_dir)
    with contextlib.suppress(OSError):
        kept = {**(kept if isinstance(kept, dict) else {}), key: digest}
        kept_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept))
        tmp.replace(kept_path)
    return digest


def folder_hash(model_dir: str | os.PathLike) -> str:
    """SHA-256 of a model folder's weights, config and post-processing settings (kept while they are unchanged)."""
    folder = Path(model_dir).resolve()
    return _hash(str(folder), _stamp(folder))


def read_manifest(root: Path = RESULTS_DIR) -> dict:
    """The manifest (``{"models": {name: {"sha256"}}, "results": {"name/digest": {...}}}``), empty when absent."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return {"models": {}, "results": {}}
    return data if isinstance(data, dict) else {"models": {}, "results": {}}


def load(
    model_dir: str | os.PathLike, image_id: str, root: Path = RESULTS_DIR
) -> tuple[np.ndarray, float] | None:
    """(label map int32[H, W], model seconds) shipped for this model folder and image, or None (none shipped,
    or the folder's files changed since). The engine that computed it does not matter (module docstring)."""
    name = Path(model_dir).name
    manifest = read_manifest(root)
    entry = manifest.get("results", {}).get(f"{name}/{image_id}")
    model = manifest.get("models", {}).get(name)
    if not entry or not model or not (root / entry["file"]).is_file():
        return None
    if model.get("sha256") != folder_hash(model_dir):
        return None
    try:
        return read_label_map(root / entry["file"]), float(entry["seconds"])
    except (ImageError, OSError, ValueError):
        return None


def save(
    model_dir: str | os.PathLike,
    stem: str,
    image_id: str,
    labels: np.ndarray,
    seconds: float,
    root: Path = RESULTS_DIR,
    *,
    engine: str,
) -> Path:
    """Ship a sample's label map by the model in ``model_dir`` (PNG + manifest entry, with the ``engine`` that
    computed it); returns the PNG's path."""
    name = Path(model_dir).name
    path = root / name / f"{stem}_labels.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(label_png_bytes(labels))
    manifest = read_manifest(root)
    manifest.setdefault("models", {})[name] = {"sha256": folder_hash(model_dir)}
    results = manifest.setdefault("results", {})
    for k in [
        k
        for k, v in results.items()
        if k.startswith(f"{name}/") and v.get("file") == f"{name}/{path.name}"
    ]:
        del results[k]  # the sample's older entry
    results[f"{name}/{image_id}"] = {
        "file": f"{name}/{path.name}",
        "sample": stem,
        "seconds": round(float(seconds), 3),
        "engine": engine,
    }
    manifest["results"] = dict(sorted(results.items()))
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path
