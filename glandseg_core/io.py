"""Read images and label maps from any upload or file; write PNGs and text atomically.

Every image comes back as uint8 (H, W, 3) RGB and every annotation as an int32 (H, W) label map
(0=NO masks; 1,2... are mask labels). Anything unreadable becomes an :class:`ImageError` whose one-line
message names the file and the problem, so the CLI and the dashboard can show it as is.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 100_000_000  # larger images are refused before they are decoded
MIN_SIDE = 8  # smaller images cannot hold a gland
_MAX_LABEL_PNG = 65_535  # a 16-bit PNG holds ids up to this
_INT32_MAX = int(np.iinfo(np.int32).max)

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


class ImageError(ValueError):
    """One-line, user-facing message naming the file and the problem."""


def read_image(src: Source, *, name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file or upload as RGB.

    Grayscale (8/16/32-bit integer or float) is scaled to 0..255 and repeated on three channels,
    transparency is composited on white, palette, CMYK, YCbCr and 1-bit images are converted, and
    multi-frame files give their first frame.

    Args:
        src: A path, the encoded bytes, or a binary file object (read from its start if seekable).
        name: Name used in error messages; defaults to the file name, else ``"upload"``.
        max_pixels: Images with more pixels are refused before decoding.

    Returns:
        image (uint8[H, W, 3]): RGB pixels.

    Raises:
        ImageError: The file is missing, empty, not an image, truncated or corrupt, larger than
            ``max_pixels``, smaller than 8×8, or in a colour mode that cannot be converted to RGB.
    """
    return _decode(src, name, max_pixels=max_pixels, min_side=MIN_SIDE, shape=None, convert=_to_rgb)


def read_label_map(
    src: Source, *, name: str | None = None, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Read an annotation (instance label map).

    Accepts 1/8/16-bit grayscale PNG/BMP/TIFF, 32-bit integer or integer-valued float TIFF, palette
    images (the palette indices are the ids) and RGB(A) images whose three colour channels are equal.

    Args:
        src: A path, the encoded bytes, or a binary file object (read from its start if seekable).
        name: Name used in error messages; defaults to the file name, else ``"upload"``.
        shape: ``(H, W)`` of the image the annotation belongs to; a different size is an error.

    Returns:
        labels (int32[H, W]): 0=NO masks; 1,2... are mask labels.

    Raises:
        ImageError: What :func:`read_image` refuses (except small sizes), plus a size other than
            ``shape``, a colour annotation whose channels differ, non-integer or non-finite values,
            negative values or values above the int32 range.
    """
    return _decode(src, name, max_pixels=MAX_PIXELS, min_side=1, shape=shape, convert=_to_labels)


def label_png_bytes(labels: np.ndarray) -> bytes:
    """Encode a label map as a 16-bit grayscale PNG (mode ``I;16``).

    Args:
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels; ids must be in 0..65535.

    Returns:
        The PNG file content.

    Raises:
        ImageError: An id is above 65535 (or negative).
        ValueError: ``labels`` is not a 2-D integer or boolean array.
    """
    return _label_png(labels, "labels")


def write_label_png(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write a label map as a 16-bit grayscale PNG, atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file; its folder must exist.
        labels (int[H, W]): 0=NO masks; 1,2... are mask labels; ids must be in 0..65535.

    Raises:
        ImageError: An id is above 65535 (or negative); nothing is written.
        ValueError: ``labels`` is not a 2-D integer or boolean array.
    """
    atomic_write_bytes(path, _label_png(labels, Path(path).name))


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB (or RGBA) image as PNG.

    Args:
        rgb (uint8[H, W, 3] or uint8[H, W, 4]): The pixels.

    Returns:
        The PNG file content.

    Raises:
        ValueError: ``rgb`` is not uint8 with 3 or 4 channels.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"png_bytes expects uint8 (H, W, 3) or (H, W, 4), got {rgb.dtype} {rgb.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an RGB (or RGBA) image as PNG, atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file; its folder must exist.
        rgb (uint8[H, W, 3] or uint8[H, W, 4]): The pixels.

    Raises:
        ValueError: ``rgb`` is not uint8 with 3 or 4 channels.
    """
    atomic_write_bytes(path, png_bytes(rgb))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a partial one.

    How it works: the data go to a hidden temporary file in the same folder, which is flushed, fsynced
    and renamed over the target with ``os.replace`` (atomic on POSIX and Windows). On any error the
    temporary file is removed and the old file is left untouched. An existing file keeps its permission
    bits; a new one gets 0o644.

    Args:
        path: Destination file; its folder must exist.
        data: The new content.

    Raises:
        OSError: The folder is missing or not writable, the disk is full, ...
    """
    target = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        with contextlib.suppress(OSError):
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file; its folder must exist.
        text: The new content, written as is (no newline translation).

    Raises:
        OSError: The folder is missing or not writable, the disk is full, ...
    """
    atomic_write_bytes(path, text.encode("utf-8"))


# -------------------------------------------------------------------------------------------- decoding


def _decode(
    src: Source,
    name: str | None,
    *,
    max_pixels: int,
    min_side: int,
    shape: tuple[int, int] | None,
    convert: Callable[[Image.Image, str], np.ndarray],
) -> np.ndarray:
    """Open, check the size, fully decode and convert one image; every failure becomes an ImageError."""
    label = name or _source_name(src)
    fp = _open_source(src, label)
    try:
        try:
            with warnings.catch_warnings():
                # max_pixels below is the limit; Pillow's DecompressionBombError (2x its own) applies
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(fp)
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"{label}: the image is too large to decode safely ({_brief(exc)})"
            ) from None
        except UnidentifiedImageError:
            raise ImageError(f"{label}: not an image file (unknown or unsupported format)") from None
        except Exception as exc:  # noqa: BLE001  Pillow plugins raise many types on corrupt headers
            raise ImageError(f"{label}: not a readable image file ({_brief(exc)})") from None
        with im:
            width, height = im.size
            if width * height > max_pixels:
                limit = _limit(max_pixels)
                raise ImageError(
                    f"{label}: the image is {width}×{height} pixels, above the {limit} limit"
                )
            if width < min_side or height < min_side:
                raise ImageError(
                    f"{label}: the image is {width}×{height} pixels; glandseg needs at least "
                    f"{min_side}×{min_side}"
                )
            if shape is not None and (height, width) != tuple(shape):
                raise ImageError(
                    f"{label}: annotation is {width}×{height} but the image is {shape[1]}×{shape[0]}"
                )
            try:
                im.load()
            except Exception as exc:  # noqa: BLE001  truncated data surfaces as OSError, SyntaxError, ...
                raise ImageError(
                    f"{label}: the image file is truncated or corrupt ({_brief(exc)})"
                ) from None
            try:
                return convert(im, label)
            except ImageError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ImageError(f"{label}: cannot convert {im.mode} image ({_brief(exc)})") from None
    finally:
        if isinstance(fp, io.BufferedReader):
            fp.close()


def _source_name(src: Source) -> str:
    """File name of a path or named file object, else "upload"."""
    if isinstance(src, (str, os.PathLike)):
        return Path(src).name or os.fspath(src) or "upload"
    fname = getattr(src, "name", None)
    if isinstance(fname, str) and fname:
        return Path(fname).name or fname
    return "upload"


def _open_source(src: Source, label: str) -> BinaryIO:
    """A readable binary stream for src; a missing, empty or unreadable source is an ImageError."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        try:
            fh = open(src, "rb")  # noqa: SIM115  closed by _decode
        except FileNotFoundError:
            raise ImageError(f"{label}: file not found ({os.fspath(src)})") from None
        except IsADirectoryError:
            raise ImageError(f"{label}: is a folder, not an image file") from None
        except OSError as exc:
            raise ImageError(f"{label}: cannot open the file ({_brief(exc)})") from None
        if os.fstat(fh.fileno()).st_size == 0:
            fh.close()
            raise ImageError(f"{label}: empty file (0 bytes)")
        if stat.S_ISDIR(
            os.fstat(fh.fileno()).st_mode
        ):  # Windows opens folders without IsADirectoryError
            fh.close()
            raise ImageError(f"{label}: is a folder, not an image file")
        return fh
    else:
        try:
            if src.seekable():
                src.seek(0)
            data = src.read()
        except Exception as exc:  # noqa: BLE001  arbitrary file-like objects
            raise ImageError(f"{label}: cannot read the upload ({_brief(exc)})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{label}: the upload is not a binary file")
    if not data:
        raise ImageError(f"{label}: empty file (0 bytes)")
    return io.BytesIO(data)


def _brief(exc: BaseException) -> str:
    """Exception text on one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _limit(max_pixels: int) -> str:
    """'100-megapixel' style wording of a pixel limit."""
    if max_pixels >= 1_000_000:
        return f"{max_pixels / 1_000_000:g}-megapixel"
    return f"{max_pixels:,}-pixel"


# ------------------------------------------------------------------------------------------ conversion

_TRANSPARENT_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _to_rgb(im: Image.Image, label: str) -> np.ndarray:
    """Any decoded Pillow image -> uint8 (H, W, 3), transparency composited on white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return np.array(im, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":  # high bit depth: any transparency key is ignored
        gray = _gray_to_uint8(np.asarray(im))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in _TRANSPARENT_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    try:
        return np.array(im.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise ImageError(f"{label}: unsupported colour mode {mode} ({_brief(exc)})") from None


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


def _to_labels(im: Image.Image, label: str) -> np.ndarray:
    """Decoded Pillow image -> int32 (H, W) label map, refusing colour, fractional or negative data."""
    mode = im.mode
    if mode in ("1", "L", "P", "I", "F") or mode.startswith("I;16"):
        arr = np.asarray(im)  # P: the palette indices are the ids
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
            raise ImageError(f"{label}: annotation has ids up to {hi:g}, above the int32 range")
    return arr.astype(np.int32)


def _label_png(labels: np.ndarray, label: str) -> bytes:
    """Validate a label map and encode it as a 16-bit PNG."""
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.dtype.kind not in "biu":
        raise ValueError(f"expected a 2-D integer label map, got {arr.dtype} {arr.shape}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise ImageError(f"{label}: label map has negative ids (min {lo}); ids must be >= 0")
        if hi > _MAX_LABEL_PNG:
            raise ImageError(
                f"{label}: label ids go up to {hi}, above the 16-bit PNG limit of {_MAX_LABEL_PNG}"
            )
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16)).save(buf, format="PNG")
    return buf.getvalue()
