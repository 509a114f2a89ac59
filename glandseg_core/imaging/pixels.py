"""Decoded Pillow images -> numpy arrays: RGB images and int32 label maps (used by :mod:`glandseg_core.imaging.io`).

``to_rgb`` gives uint8 (H, W, 3); ``to_labels`` gives int32 (H, W) label maps (0=NO masks; 1,2... are mask
labels) and refuses colour, fractional, negative or out-of-range data with an :class:`ImageError` whose one-line
message starts with the file's name. No file access here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import ImageError

_INT32_MAX = int(np.iinfo(np.int32).max)


def brief(exc: BaseException) -> str:
    """Exception text on one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_TRANSPARENT_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def to_rgb(im: Image.Image, label: str) -> np.ndarray:
    """Any decoded Pillow image -> uint8 (H, W, 3), transparency composited on white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":  # high bit depth: any transparency key is ignored
        gray = _gray_to_uint8(_int_pixels(im))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in _TRANSPARENT_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    try:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise ImageError(f"{label}: unsupported colour mode {mode} ({brief(exc)})") from None


def _int_pixels(im: Image.Image) -> np.ndarray:
    """The pixels of a decoded image; an unsigned 32-bit TIFF comes back as uint32, not wrapped to int32.

    Pillow decodes every 32-bit integer TIFF to its signed mode ``I``, so ids above 2**31 - 1 would turn
    negative; the TIFF's SampleFormat tag (1 or absent: unsigned) says how to read the same bits.
    """
    arr = np.asarray(im)
    tags = getattr(im, "tag_v2", None)
    if im.mode != "I" or arr.dtype != np.int32 or tags is None:
        return arr
    bits, fmt = tags.get(258, (32,)), tags.get(339, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    fmt = fmt if isinstance(fmt, tuple) else (fmt,)
    return arr.view(np.uint32) if set(bits) == {32} and set(fmt) == {1} else arr


def _gray_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale one high-bit-depth or float channel to uint8.

    How it works: non-negative integers are divided by the full range of the smallest bit depth (at
    least 8) that holds the data maximum (12-bit data with max 3000 -> /4095), which keeps relative
    brightness; floats in 0..1 are multiplied by 255, floats in 0..255 kept, and anything else
    (negative values, larger floats) is min-max stretched. Non-finite values become 0.
    """
    data = arr.astype(np.float32)
    if arr.dtype.kind == "f" and not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if arr.dtype.kind in "ui" and lo >= 0:
        bits = max(8, int(hi).bit_length())
        data *= 255.0 / (2**bits - 1)
    elif arr.dtype.kind == "f" and lo >= 0 and hi <= 1.0:
        data *= 255.0
    elif arr.dtype.kind == "f" and lo >= 0 and hi <= 255.0:
        pass
    elif hi > lo:
        data = (data - lo) * (255.0 / (hi - lo))
    else:
        data = np.zeros_like(data)
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)


def to_labels(im: Image.Image, label: str) -> np.ndarray:
    """Decoded Pillow image -> int32 (H, W) label map, refusing colour, fractional or negative data."""
    mode = im.mode
    if mode in ("1", "L", "P", "I", "F") or mode.startswith("I;16"):
        arr = _int_pixels(im)  # P: the palette indices are the ids
    elif mode in ("LA", "La", "PA"):
        arr = np.asarray(im.getchannel(0))
    elif mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        rgb = np.asarray(im)[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ImageError(
                f"{label}: annotation is a colour image whose channels differ; "
                "save it as a grayscale label map (one integer id per gland, 0 = background)"
            )
        arr = rgb[..., 0]
    else:
        raise ImageError(f"{label}: annotation has colour mode {mode}; expected a grayscale label map")
    if arr.dtype == bool:
        return arr.astype(np.int32)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(f"{label}: annotation has NaN or infinite values; expected integer ids")
        fractional = arr != np.floor(arr)
        if fractional.any():
            example = float(arr[fractional][0])
            raise ImageError(
                f"{label}: annotation has non-integer values (e.g. {example:g}); expected integer ids"
            )
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ImageError(f"{label}: annotation has negative values (min {lo:g}); expected ids >= 0")
        if hi > _INT32_MAX:
            raise ImageError(
                f"{label}: annotation has ids up to {int(hi)}, above the int32 limit of {_INT32_MAX}; "
                "renumber the glands (ids need not be consecutive, but must fit in int32)"
            )
    return arr.astype(np.int32)
