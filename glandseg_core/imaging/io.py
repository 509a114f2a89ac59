"""Read images and label maps from any upload or file; write PNGs and text atomically.

Every image comes back as uint8 (H, W, 3) RGB and every annotation as an int32 (H, W) label map
(0=NO masks; 1,2... are mask labels). Anything unreadable becomes an :class:`ImageError` whose one-line
message names the file and the problem, so the CLI and the dashboard can show it as is.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..files import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)
from .pixels import brief, to_labels, to_rgb

MAX_PIXELS = 100_000_000  # larger images are refused before they are decoded
MIN_SIDE = 8  # smaller images cannot hold a gland
_MAX_LABEL_PNG = 65_535  # a 16-bit PNG holds ids up to this

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


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
    return _decode(src, name, max_pixels=max_pixels, min_side=MIN_SIDE, shape=None, convert=to_rgb)


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
    return _decode(src, name, max_pixels=MAX_PIXELS, min_side=1, shape=shape, convert=to_labels)


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
                f"{label}: the image is too large to decode safely ({brief(exc)})"
            ) from None
        except UnidentifiedImageError:
            raise ImageError(f"{label}: not an image file (unknown or unsupported format)") from None
        except Exception as exc:  # noqa: BLE001  Pillow plugins raise many types on corrupt headers
            raise ImageError(f"{label}: not a readable image file ({brief(exc)})") from None
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
                    f"{label}: the image file is truncated or corrupt ({brief(exc)})"
                ) from None
            try:
                return convert(im, label)
            except ImageError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ImageError(f"{label}: cannot convert {im.mode} image ({brief(exc)})") from None
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
        return _open_path(src, label)
    else:
        try:
            if src.seekable():
                src.seek(0)
            data = src.read()
        except Exception as exc:  # noqa: BLE001  arbitrary file-like objects
            raise ImageError(f"{label}: cannot read the upload ({brief(exc)})") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{label}: the upload is not a binary file")
    if not data:
        raise ImageError(f"{label}: empty file (0 bytes)")
    return io.BytesIO(data)


_NOT_REGULAR = (
    (stat.S_ISDIR, "is a folder"),
    (stat.S_ISFIFO, "is a named pipe (FIFO)"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a device"),
    (stat.S_ISBLK, "is a device"),
)


def _open_path(path: str | os.PathLike[str], label: str) -> BinaryIO:
    """Open a regular, non-empty file for reading; anything else is refused at once as an ImageError.

    How it works: ``os.stat`` (which never blocks) refuses folders, FIFOs, sockets and devices before any
    ``open``; the file is then opened with ``O_NONBLOCK``, so a path swapped for a FIFO in between cannot
    block either, and ``fstat`` checks the opened file again.
    """
    try:
        _check_regular(os.stat(path).st_mode, label)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found ({os.fspath(path)})") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot open the file ({brief(exc)})") from None
    fh = os.fdopen(fd, "rb")  # closed by _decode
    try:
        info = os.fstat(fd)
        _check_regular(info.st_mode, label)
        if info.st_size == 0:
            raise ImageError(f"{label}: empty file (0 bytes)")
    except BaseException:
        fh.close()
        raise
    return fh


def _check_regular(mode: int, label: str) -> None:
    """Refuse a folder, FIFO, socket or device (reading one could block or never end)."""
    for test, what in _NOT_REGULAR:
        if test(mode):
            raise ImageError(f"{label}: {what}, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{label}: not a regular file")


def _limit(max_pixels: int) -> str:
    """'100-megapixel' style wording of a pixel limit."""
    if max_pixels >= 1_000_000:
        return f"{max_pixels / 1_000_000:g}-megapixel"
    return f"{max_pixels:,}-pixel"


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
