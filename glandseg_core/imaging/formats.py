"""TIFF in and out: the pixel size a TIFF/OME-TIFF records, and label maps as OME-TIFF that napari and Fiji open.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path

import numpy as np
import tifffile

from ..errors import ImageError
from ..files import atomic_write_bytes

MPP_RANGE = (0.01, 50.0)  # plausible micrometres per pixel of a microscope image (72 dpi is 352 um/px)
_UM_PER = {"inch": 25400.0, "centimeter": 10000.0, "millimeter": 1000.0, "micrometer": 1.0}
_OME_UNITS = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


def image_mpp(path: str | os.PathLike[str]) -> float | None:
    """Micrometres per pixel that an image file records, or None.

    Read from OME-XML ``PhysicalSizeX`` (with its unit), an Aperio description's ``MPP =``, or the TIFF
    ``XResolution`` with a ``ResolutionUnit`` of inch or centimetre. Values outside ``MPP_RANGE`` (e.g. the
    72 dpi that many programs write by default) and files other than TIFF give None.
    """
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff", ".svs", ".btf", ".tf8"):
        return None
    try:
        with tifffile.TiffFile(p) as tif:
            value = _ome_mpp(tif.ome_metadata) if tif.is_ome else None
            page = tif.pages.first
            if value is None:
                m = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", page.description or "")
                value = float(m.group(1)) if m else _tag_mpp(page)
    except Exception:  # noqa: BLE001  unreadable metadata: no pixel size (read_image reports bad files)
        return None
    if value is None or not math.isfinite(value) or not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
        return None
    return float(value)


def _ome_mpp(xml: str | None) -> float | None:
    m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml or "")
    if not m:
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml or "")
    return float(m.group(1)) * _OME_UNITS.get(unit.group(1) if unit else "µm", math.nan)


def _tag_mpp(page: tifffile.TiffPage) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    unit = tifffile.RESUNIT(tags["ResolutionUnit"].value).name.lower()
    num, den = tags["XResolution"].value
    if unit not in _UM_PER or num <= 0 or den <= 0:
        return None
    return _UM_PER[unit] * den / num


def label_tiff_bytes(labels: np.ndarray, *, mpp: float | None = None) -> bytes:
    """A label map as an OME-TIFF (one 2-D plane, uint16 when the ids fit, else uint32; zlib-compressed,
    tiled above 2048 pixels a side). napari (``Labels`` layer) and Fiji open it as it is; with ``mpp`` the
    file records its pixel size (OME ``PhysicalSizeX/Y`` in µm and the TIFF resolution tags).

    Args:
        labels: int[H, W], 0=background, 1..N glands (ids >= 0).

    Raises:
        ValueError: not a 2-D non-negative integer array.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.dtype.kind not in "biu":
        raise ValueError(f"expected a 2-D integer label map, got {arr.dtype} {arr.shape}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"label ids must be >= 0, got min {arr.min()}")
    dtype = np.uint16 if not arr.size or arr.max() <= 65535 else np.uint32
    meta: dict = {"axes": "YX"}
    kw: dict = {}
    if mpp is not None:
        meta |= {
            "PhysicalSizeX": mpp,
            "PhysicalSizeY": mpp,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
        }
        kw = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    if max(arr.shape) > 2048:
        kw["tile"] = (512, 512)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr.astype(dtype), ome=True, metadata=meta, compression="zlib", **kw)
    return buf.getvalue()


def write_label_tiff(
    path: str | os.PathLike[str], labels: np.ndarray, *, mpp: float | None = None
) -> None:
    """Write :func:`label_tiff_bytes` atomically (the old file or the new one, never a partial one).

    Raises:
        ImageError: the folder is missing or not writable, or the disk is full (one line naming the file).
        ValueError: not a 2-D non-negative integer label map.
    """
    try:
        atomic_write_bytes(path, label_tiff_bytes(labels, mpp=mpp))
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None
