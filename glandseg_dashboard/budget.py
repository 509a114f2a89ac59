"""The pixel budget for interactive work (issue #15, item 4): how large an image the dashboard segments.

How it works: a segmentation runs in its own process (:mod:`glandseg_dashboard.worker`), whose peak memory grows linearly with
the pixels the network sees, after the image is resampled to the model's pixel size (:mod:`glandseg_core.memory`:
each model kind declares its coefficients, ``ModelKind.memory_cost``, measured with
``benchmarks/bench_dashboard_memory.py``). The budget is a share of the memory the machine has available now
(``psutil``): ``GLANDSEG_MEMORY_FRACTION`` (default 0.25, leaving the rest to the server, its other sessions and
the machine), or a fixed ``GLANDSEG_MEMORY_BUDGET_MB``. :func:`check_job` checks a job with the pixel size the
user typed before a worker starts, and the worker checks it again with the segmenter's own plan. Segmentations run one at a time (:mod:`glandseg_dashboard.inference`), so one job's budget is
not shared. An image above the budget is refused, or, with the user's consent, downsampled to fit: its
measurements are then converted back to the original image's pixels (:func:`to_original`). No streamlit here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from glandseg_core import memory
from glandseg_core.config import load_config
from glandseg_core.errors import GlandsegError
from glandseg_core.registry import MemoryCost, all_kinds, get_kind

MIN_PIXELS = 256 * 256  # below this a downsampled image is useless


def kind_cost(kind: str) -> MemoryCost:
    """The memory coefficients of a model ``kind`` (the largest over its presets; generous for an unknown)."""
    try:
        k = get_kind(kind)
    except KeyError:
        return max(
            (kind_cost(k.name) for k in all_kinds()), key=lambda c: c.base_bytes, default=MemoryCost()
        )
    costs = [k.memory_cost(cfg) for cfg in k.presets().values()] or [MemoryCost()]
    return MemoryCost(*(max(getattr(c, f) for c in costs) for f in MemoryCost.__dataclass_fields__))


def folder_cost(folder: str | os.PathLike) -> MemoryCost:
    """The memory coefficients of the model in ``folder`` (from its config.json), else of the kind its name
    suggests (the largest over that kind's presets)."""
    try:
        cfg = load_config(Path(folder) / "config.json")
    except (GlandsegError, OSError):
        return kind_cost(Path(folder).name)
    return cfg.kind.memory_cost(cfg)


@dataclass(frozen=True)
class Budget(memory.Budget):
    """What one interactive segmentation may use: ``bytes`` of memory, of which ``source`` says where from."""

    def max_pixels(self, kind: str, tta: bool = False, cost: MemoryCost | None = None) -> int:
        """The largest image (in pixels, at the model's pixel size) a model of ``kind`` (or of memory ``cost``:
        see :func:`folder_cost`) may segment."""
        cost = cost or kind_cost(kind)
        per_px = cost.work_bytes_per_pixel + (cost.tta_bytes_per_pixel if tta else 0)
        return max(0, (self.bytes - cost.base_bytes) // per_px)


def current_budget() -> Budget:
    """The budget of one interactive segmentation on this machine now (see the module docstring)."""
    fraction = os.environ.get(memory.FRACTION_ENV, "").strip() or memory.INTERACTIVE_FRACTION
    now = memory.current_budget(fraction=float(fraction))
    return Budget(now.bytes, now.source)


def estimate_bytes(kind: str, pixels: int, tta: bool = False) -> int:
    """Expected peak memory of segmenting ``pixels`` (at the model's pixel size) with a model of ``kind``."""
    cost = kind_cost(kind)
    return (
        cost.base_bytes + (cost.work_bytes_per_pixel + (cost.tta_bytes_per_pixel if tta else 0)) * pixels
    )


def check_job(
    model_dir: str | os.PathLike, shape: tuple[int, ...], mpp: float | None, tta: bool, what: str
) -> int:
    """Check that segmenting an image of ``shape`` at ``mpp`` µm/px (the pixel size the user typed; None:
    the model's own) with ``model_dir`` fits the budget once resampled to the model's pixel size; returns the
    budget in bytes (the worker checks again with it).

    Raises:
        ImageError: one line naming ``what``: the size the network would see, the memory it needs, the budget
            and what would fit.
    """
    now = current_budget()
    try:
        cfg = load_config(Path(model_dir) / "config.json")
    except (GlandsegError, OSError):
        return now.bytes  # the worker says why the model folder cannot be used
    est = memory.estimate_config(cfg, shape, mpp, tta)
    memory.check(est, now, what, mpp, float(cfg.data_mpp))
    return now.bytes


def model_kind(model_dir: str | os.PathLike) -> str:
    """``unet`` or ``maskrcnn`` from a model folder's config.json (``""`` when it does not say)."""
    try:
        kind = json.loads((Path(model_dir) / "config.json").read_text()).get("model", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return kind if isinstance(kind, str) else ""


def fit_size(shape: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """(height, width) of ``shape`` scaled down (aspect kept) to at most ``max_pixels`` pixels."""
    h, w = shape
    if h * w <= max_pixels:
        return h, w
    f = math.sqrt(max_pixels / (h * w))
    return max(1, int(h * f)), max(1, int(w * f))


def downsample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8[h, w, 3] of ``image`` resized to ``size`` = (h, w) (area-averaging, Pillow's box filter)."""
    h, w = size
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))


def downsample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """int32[h, w] of a label map resized to ``size`` = (h, w) by nearest neighbour (ids kept)."""
    h, w = size
    rows = (np.arange(h) * labels.shape[0] / h).astype(np.intp)
    cols = (np.arange(w) * labels.shape[1] / w).astype(np.intp)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]], dtype=np.int32)


_LENGTH_COLUMNS = ("perimeter", "centroid_row", "centroid_col")
_INT_LENGTH_COLUMNS = ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")


def to_original(table: pd.DataFrame, scale: float) -> pd.DataFrame:
    """A gland table (:func:`glandseg_core.outputs.export.gland_table`) measured on an image downsampled by ``scale``
    (original / working size), in the original image's pixels: lengths times ``scale``, areas times
    ``scale**2``; shape ratios unchanged."""
    if scale == 1.0:
        return table
    out = table.copy()
    if "area" in out:
        out["area"] = np.rint(out["area"] * scale**2).astype("int64")
    for c in _LENGTH_COLUMNS:
        if c in out:
            out[c] = out[c] * scale
    for c in _INT_LENGTH_COLUMNS:
        if c in out:
            out[c] = np.rint(out[c] * scale).astype("int64")
    return out


def geojson_to_original(geo: dict, scale: float) -> dict:
    """A GeoJSON FeatureCollection of outlines on the downsampled image, in the original image's pixels."""
    if scale == 1.0:
        return geo

    def scaled(c: object) -> object:
        if isinstance(c, list) and c and isinstance(c[0], (int, float)):
            return [v * scale for v in c]
        return [scaled(x) for x in c] if isinstance(c, list) else c

    features = []
    for f in geo.get("features", []):
        props = dict(f.get("properties", {}))
        if "area" in props:
            props["area"] = round(props["area"] * scale**2)
        geometry = {**f["geometry"], "coordinates": scaled(f["geometry"]["coordinates"])}
        features.append({**f, "geometry": geometry, "properties": props})
    return {**geo, "features": features}
