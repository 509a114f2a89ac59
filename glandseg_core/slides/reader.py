"""Open whole-slide images: levels, pixel size, regions as RGB, and the level nearest a model's pixel size.

Why OpenSlide (``openslide-python`` with the ``openslide-bin`` wheel) rather than tiffslide: it reads every
format a pathologist brings (Aperio SVS, Hamamatsu NDPI/VMS/VMU, MIRAX MRXS, Leica SCN, Ventana BIF, Philips
TIFF, DICOM and generic tiled TIFF), while tiffslide reads TIFF-based files only (no MRXS or VMS, which are not
TIFF); its C decoders and tile cache keep memory bounded; and ``openslide-bin`` ships the library as a wheel,
so ``pip install`` is enough (two packages, no Python dependencies; tiffslide pulls in zarr, numcodecs,
imagecodecs, fsspec and more). Limitation: an OME-TIFF whose pyramid sits in SubIFDs is read through its
full-resolution level only (correct, slower when the model's pixel size is much coarser than the scan's).

Coordinates: ``(x, y)`` = (column, row) in level-0 pixels, as OpenSlide uses them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self, cast

import numpy as np
import openslide
from PIL import Image

from ..errors import ImageError
from ..imaging.io import MAX_PIXELS
from ..segmenters.scale import SAME_MPP  # a level within 2% of the target pixel size is used as it is

# A slide file holds its own pixels (except these formats, whose data lie in other files): even a tile of plain
# glass takes some bytes, so a file that declares far more pixels than its size allows is refused when opened.
MAX_PIXELS_PER_BYTE = 1000  # white JPEG tiles: ~40 pixels a byte, deflated white tiles: a few hundred
DATA_ELSEWHERE = (".mrxs", ".vms", ".vmu", ".dcm")
THUMBNAIL_READ_PIXELS = 4_000_000  # level pixels read at once for a thumbnail (one region)
# Extensions that are slides whatever their content; .tif/.tiff are slides when pyramidal, tiled or OME.
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm")
TIFF_EXTENSIONS = (".tif", ".tiff")


def is_slide(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a whole-slide image (to be read by :func:`open_slide`, not as a plain image).

    By extension: .svs .ndpi .vms .vmu .mrxs .scn .bif .svslide .dcm always; .tif/.tiff when the file is an
    Aperio SVS, or tiled and pyramidal, OME-TIFF or above ``io.MAX_PIXELS``. Other TIFFs are plain images.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in SLIDE_EXTENSIONS:
        return True
    if suffix not in TIFF_EXTENSIONS or not p.is_file():
        return False
    import tifffile  # only TIFFs pay for this import

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages.first
            pyramid = (
                len(tif.series[0].levels) > 1
                or len(tif.pages) > 1
                and cast("tifffile.TiffPage", tif.pages[1]).is_reduced
            )
            big = page.imagewidth * page.imagelength > MAX_PIXELS
            return bool(tif.is_svs or page.is_tiled and (tif.is_ome or pyramid or big))
    except Exception:  # noqa: BLE001  anything tifffile cannot parse is not a slide (read_image will say why)
        return False


@dataclass(frozen=True)
class LevelChoice:
    """Where to read from to reach a target pixel size.

    Attributes:
        level: the pyramid level to read. downsample: its level-0 pixels per level pixel.
        factor: level pixels per output pixel (1.0: read as is; 2.0: shrink by 2).
        scale: level-0 pixels per output pixel (``downsample * factor``).
    """

    level: int
    downsample: float
    factor: float

    @property
    def scale(self) -> float:
        return self.downsample * self.factor


def choose_level(mpp: float, downsamples: tuple[float, ...], target_mpp: float) -> LevelChoice:
    """The coarsest level that is not coarser than ``target_mpp`` (so the rest is a shrink, never an
    enlargement), and the resampling factor left; level 0 when even it is coarser than the target.

    Args:
        mpp: level-0 micrometres per pixel. downsamples: each level's downsample (level 0 first).
        target_mpp: the pixel size wanted (a model's ``cfg.data_mpp``).
    """
    best = 0
    for i, d in enumerate(downsamples):
        if mpp * d <= target_mpp * (1 + SAME_MPP) and d >= downsamples[best]:
            best = i
    factor = target_mpp / (mpp * downsamples[best])
    if abs(factor - 1.0) <= SAME_MPP:
        factor = 1.0
    return LevelChoice(best, float(downsamples[best]), float(factor))


class Slide:
    """An open whole-slide image (use :func:`open_slide`; close it, or use it as a context manager).

    Attributes:
        path: the file. dimensions: level-0 (width, height). mpp: level-0 micrometres per pixel (x, y), or
        None when the file does not say. levels: (width, height) per level. downsamples: per level.
    """

    def __init__(self, path: Path, osr: openslide.OpenSlide) -> None:
        self.path = path
        self._osr = osr
        self.dimensions: tuple[int, int] = cast(tuple[int, int], tuple(osr.dimensions))
        self.levels: tuple[tuple[int, int], ...] = tuple(
            cast(tuple[int, int], tuple(d)) for d in osr.level_dimensions
        )
        self.downsamples: tuple[float, ...] = tuple(float(d) for d in osr.level_downsamples)
        self.mpp = _mpp(osr.properties)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._osr.close()

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """uint8[h, w, 3] RGB of ``level`` at level-0 location (x, y), size (w, h) in level pixels; pixels
        outside the slide or transparent come back white.

        Raises:
            ImageError: one line, when the slide's data cannot be decoded (truncated, unsupported compression).
        """
        return np.asarray(self.read_image(level, x, y, w, h))

    def read_image(self, level: int, x: int, y: int, w: int, h: int) -> Image.Image:
        """:meth:`read` as a Pillow RGB image (no copy through numpy when the region is opaque, as tissue
        regions are: a 20-megapixel level-0 region converts in 0.1 s instead of 0.5 s)."""
        try:
            rgba = self._osr.read_region((int(x), int(y)), level, (int(w), int(h)))
        except openslide.OpenSlideError as e:
            raise ImageError(f"{self.path.name}: cannot read slide data ({_brief(e)})") from None
        extrema = cast(tuple[tuple[int, int], ...], rgba.getextrema())  # RGBA: (min, max) per band
        if extrema[3][0] == 255:
            return rgba.convert("RGB")
        return Image.fromarray(_rgba_to_rgb(np.asarray(rgba)))

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """A whole-slide RGB thumbnail at most ``max_side`` pixels on its longer side, and its level-0 pixels
        per thumbnail pixel, read from the smallest level that is still at least that large.

        The level is read in bounded regions (about :data:`THUMBNAIL_READ_PIXELS` level pixels each): strips of
        the full level width when one thumbnail row of the level fits that, else blocks, never a wider strip.
        """
        w0, h0 = self.dimensions
        scale = max(1.0, max(w0, h0) / max_side)
        level = max(i for i, d in enumerate(self.downsamples) if d <= scale or i == 0)
        d = self.downsamples[level]
        lw, lh = self.levels[level]
        tw, th = max(1, round(w0 / scale)), max(1, round(h0 / scale))
        r = scale / d  # level pixels per thumbnail pixel
        out = np.empty((th, tw, 3), np.uint8)
        if lw * r <= THUMBNAIL_READ_PIXELS:  # strips of the full width, about 4 MP of the level each
            rows, cols = max(1, int(THUMBNAIL_READ_PIXELS / (lw * r))), tw
        else:  # square blocks of about 4 MP of the level (one thumbnail pixel at least)
            rows = cols = max(1, int(math.sqrt(THUMBNAIL_READ_PIXELS) / r))
        for t0 in range(0, th, rows):
            for u0 in range(0, tw, cols):
                self._thumbnail_block(out, level, r, (t0, min(th, t0 + rows)), (u0, min(tw, u0 + cols)))
        return out, scale

    def _thumbnail_block(
        self, out: np.ndarray, level: int, r: float, rows: tuple[int, int], cols: tuple[int, int]
    ) -> None:
        """Fill ``out[t0:t1, u0:u1]`` from the region of ``level`` it covers (``r`` level pixels a pixel)."""
        (t0, t1), (u0, u1) = rows, cols
        d, (lw, lh) = self.downsamples[level], self.levels[level]
        y0 = min(lh - 1, math.floor(t0 * r))
        y1 = min(lh, max(y0 + 1, math.ceil(t1 * r)))
        x0 = min(lw - 1, math.floor(u0 * r))
        x1 = min(lw, max(x0 + 1, math.ceil(u1 * r)))
        if u0 == 0 and u1 == out.shape[1]:
            x0, x1 = 0, lw  # a full-width strip, read as before
        region = Image.fromarray(self.read(level, round(x0 * d), round(y0 * d), x1 - x0, y1 - y0))
        box = (u0 * r - x0, t0 * r - y0, min(x1, u1 * r) - x0, min(y1, t1 * r) - y0)
        resized = region.resize((u1 - u0, t1 - t0), Image.Resampling.BILINEAR, box=box)
        out[t0:t1, u0:u1] = np.asarray(resized)


def open_slide(path: str | os.PathLike[str]) -> Slide:
    """Open a whole-slide image and check that every level can be read.

    Raises:
        ImageError: one line naming the file: missing, not a slide (format OpenSlide does not know),
            truncated, unsupported compression, or a level that cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: file not found")
    _check_declared_size(p)
    try:
        osr = openslide.OpenSlide(os.fspath(p))
    except openslide.OpenSlideUnsupportedFormatError:
        raise ImageError(f"{p.name}: {_why_unreadable(p)}") from None
    except openslide.OpenSlideError as e:
        raise ImageError(f"{p.name}: broken slide ({_brief(e).replace(os.fspath(p), p.name)})") from None
    slide = Slide(p, osr)
    try:
        for level, (w, h) in enumerate(slide.levels):  # probe a corner and the far corner of every level
            d = slide.downsamples[level]
            slide.read(level, 0, 0, min(w, 16), min(h, 16))
            slide.read(level, round((w - 16) * d), round((h - 16) * d), min(w, 16), min(h, 16))
    except ImageError as e:
        slide.close()
        raise ImageError(f"{e} (level {level} of {len(slide.levels)})") from None
    return slide


def _check_declared_size(path: Path) -> None:
    """Refuse a TIFF-based slide whose first page declares far more pixels than the file could hold (a sparse
    or forged file: reading it would allocate for pixels that are not there), before OpenSlide opens it.

    Raises:
        ImageError: one line naming the file, its declared size and its bytes.
    """
    if path.suffix.lower() in DATA_ELSEWHERE:
        return
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
    except Exception:  # noqa: BLE001  not a TIFF (or unreadable): OpenSlide says why
        return
    size = path.stat().st_size
    if width * height > MAX_PIXELS_PER_BYTE * max(size, 1):
        raise ImageError(
            f"{path.name}: refused: it declares {width}×{height} pixels in {size:,} bytes, far more than "
            "the file can hold (a sparse or damaged slide)"
        )


def _why_unreadable(path: Path) -> str:
    """Why OpenSlide refused a file: a truncated TIFF, or a format it does not read."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] not in (b"II", b"MM"):
        return "not a whole-slide image (a format OpenSlide does not read)"
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            end = max(
                (
                    int(o) + int(n)
                    for p in tif.pages
                    for o, n in zip(p.dataoffsets, p.databytecounts, strict=True)
                ),
                default=0,
            )
    except Exception:  # noqa: BLE001  tifffile fails on the same truncation OpenSlide refused
        return f"truncated or corrupt TIFF ({size} bytes)"
    if end > size:
        return f"truncated: the file has {size} bytes but its image data run to {end}"
    return "a TIFF that is not a whole-slide image OpenSlide can read"


def _mpp(props: Mapping[str, str]) -> tuple[float, float] | None:
    """Level-0 (x, y) micrometres per pixel from OpenSlide's properties, else None."""
    try:
        x = float(props[openslide.PROPERTY_NAME_MPP_X])
        y = float(props[openslide.PROPERTY_NAME_MPP_Y])
    except (KeyError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y) else None


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA (OpenSlide's output) composited on white."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    out = rgb.astype(np.uint16) + (255 - alpha[..., None]).astype(np.uint16)
    return np.minimum(out, 255).astype(np.uint8)


def _brief(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
