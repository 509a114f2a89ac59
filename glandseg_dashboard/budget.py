"""The pixel budget for interactive work (issue #15, item 4): how large an image the dashboard segments.

How it works: a segmentation runs in its own process (:mod:`glandseg_dashboard.worker`), whose peak memory grows linearly with
the image's pixels: ``peak = BASE_BYTES[kind] + BYTES_PER_PIXEL[kind] * pixels`` (measured with
``benchmarks/bench_dashboard_memory.py``; test-time augmentation adds ``TTA_BYTES_PER_PIXEL``). The budget
is a share of the memory the machine has available now (``psutil``): ``GLANDSEG_MEMORY_FRACTION`` (default
0.25, leaving the rest to the server, its other sessions and the machine), or a fixed
``GLANDSEG_MEMORY_BUDGET_MB``. Segmentations run one at a time (:mod:`glandseg_dashboard.inference`), so one job's budget is
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
import psutil
from PIL import Image

# Measured on the shipped models (CPU, fp32; benchmarks/README.md): U-Net 915 MiB at 1 MP, 1317 at 4, 1925 at 12;
# Mask R-CNN 1011 MiB at 1 MP, 1090 at 4, up to 1572 at 5.6 MP with 106 glands (kept instance crops). With a margin.
BASE_BYTES = {"unet": 1024 * 2**20, "maskrcnn": 1152 * 2**20}  # interpreter, torch, weights
BYTES_PER_PIXEL = {"unet": 80, "maskrcnn": 80}  # slope of the peak over the image's pixels
TTA_BYTES_PER_PIXEL = 16  # running sum of the flipped views' outputs
MIN_PIXELS = 256 * 256  # below this a downsampled image is useless


@dataclass(frozen=True)
class Budget:
    """What one interactive segmentation may use: ``bytes`` of memory, of which ``source`` says where from."""

    bytes: int
    source: str

    def max_pixels(self, kind: str, tta: bool = False) -> int:
        """The largest image (in pixels) that a model of ``kind`` may segment within this budget."""
        per_px = BYTES_PER_PIXEL.get(kind, max(BYTES_PER_PIXEL.values())) + (
            TTA_BYTES_PER_PIXEL if tta else 0
        )
        base = BASE_BYTES.get(kind, max(BASE_BYTES.values()))
        return max(0, (self.bytes - base) // per_px)


def current_budget() -> Budget:
    """The budget of one interactive segmentation on this machine now (see the module docstring)."""
    fixed = os.environ.get("GLANDSEG_MEMORY_BUDGET_MB", "").strip()
    if fixed:
        return Budget(int(float(fixed) * 2**20), "GLANDSEG_MEMORY_BUDGET_MB")
    fraction = float(os.environ.get("GLANDSEG_MEMORY_FRACTION", "") or 0.25)
    available = psutil.virtual_memory().available
    return Budget(
        int(fraction * available), f"{fraction:.0%} of the {available / 2**30:.1f} GiB available"
    )


def estimate_bytes(kind: str, pixels: int, tta: bool = False) -> int:
    """Expected peak memory of segmenting ``pixels`` with a model of ``kind``."""
    per_px = BYTES_PER_PIXEL.get(kind, max(BYTES_PER_PIXEL.values())) + (
        TTA_BYTES_PER_PIXEL if tta else 0
    )
    return BASE_BYTES.get(kind, max(BASE_BYTES.values())) + per_px * pixels


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
