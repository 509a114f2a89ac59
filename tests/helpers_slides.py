"""Build whole-slide test images: a mosaic of GlaS images on a white background, written with tifffile as a
pyramidal tiled TIFF (SVS-like, generic, or OME-TIFF) at a known pixel size, tile by tile (bounded memory).

``Mosaic`` knows where each source image sits, so a test can map slide coordinates back onto source pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

TILE = 256


@dataclass
class Mosaic:
    """A grid of source images (uint8[h, w, 3]) on white, each enlarged by ``scale`` (level-0 pixels per source
    pixel), ``margin`` level-0 pixels of background around the grid and ``gap`` between cells.

    Cell ``k`` (row-major) shows ``images[k % len(images)]``; cells are ``cell`` = the largest image's size.
    """

    images: Sequence[np.ndarray]
    grid: tuple[int, int]
    scale: float = 1.0
    margin: int = 256
    gap: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def cell(self) -> tuple[int, int]:
        h = max(im.shape[0] for im in self.images)
        w = max(im.shape[1] for im in self.images)
        return math.ceil(h * self.scale), math.ceil(w * self.scale)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) at level 0."""
        (ch, cw), (r, c) = self.cell, self.grid
        return 2 * self.margin + r * ch + (r - 1) * self.gap, 2 * self.margin + c * cw + (
            c - 1
        ) * self.gap

    def origin(self, k: int) -> tuple[int, int]:
        """Level-0 (row, col) of cell ``k``'s top-left corner."""
        (ch, cw), cols = self.cell, self.grid[1]
        i, j = divmod(k, cols)
        return self.margin + i * (ch + self.gap), self.margin + j * (cw + self.gap)

    def source(self, k: int) -> np.ndarray:
        return self.images[k % len(self.images)]

    def _resized(self, k: int, downsample: int) -> np.ndarray:
        key = (k % len(self.images), downsample)
        if key not in self._cache:
            src = self.source(k)
            f = self.scale / downsample
            size = (max(1, round(src.shape[1] * f)), max(1, round(src.shape[0] * f)))
            im = Image.fromarray(src)
            self._cache[key] = src if f == 1 else np.asarray(im.resize(size, Image.BILINEAR))
        return self._cache[key]

    def render(self, downsample: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """uint8[h, w, 3] of the level with this ``downsample``, from level pixel (y, x)."""
        out = np.full((h, w, 3), 255, np.uint8)
        n = self.grid[0] * self.grid[1]
        for k in range(n):
            oy, ox = (v // downsample for v in self.origin(k))
            im = self._resized(k, downsample)
            y0, x0 = max(y, oy), max(x, ox)
            y1, x1 = min(y + h, oy + im.shape[0]), min(x + w, ox + im.shape[1])
            if y0 < y1 and x0 < x1:
                out[y0 - y : y1 - y, x0 - x : x1 - x] = im[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return out

    def image(self) -> np.ndarray:
        """The whole level-0 mosaic (small mosaics only)."""
        h, w = self.shape
        return self.render(1, 0, 0, h, w)


def _tiles(mosaic: Mosaic, downsample: int, shape: tuple[int, int]) -> Iterator[np.ndarray]:
    h, w = shape
    for y in range(0, h, TILE):
        for x in range(0, w, TILE):
            yield mosaic.render(downsample, y, x, TILE, TILE)


def write_slide(
    path: Path,
    mosaic: Mosaic,
    *,
    mpp: float,
    levels: int = 3,
    kind: str = "svs",
    compression: str | None = "zlib",
) -> Path:
    """Write ``mosaic`` as a pyramidal tiled TIFF with levels downsampled by 1, 4, 16, ... (``kind="svs"``:
    Aperio-style description with ``MPP``; ``"tiff"``: generic TIFF with resolution tags, levels as reduced
    pages; ``"ome"``: OME-TIFF with the pyramid in SubIFDs and PhysicalSizeX/Y).

    Returns:
        ``path``.
    """
    h, w = mosaic.shape
    args = {"tile": (TILE, TILE), "photometric": "rgb", "compression": compression}
    if compression == "zlib":
        args["compressionargs"] = {"level": 1}
    res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    downs = [4**i for i in range(levels)]
    shapes = [(math.ceil(h / d), math.ceil(w / d)) for d in downs]
    with tifffile.TiffWriter(path, bigtiff=h * w * 3 > 2**31, ome=kind == "ome") as tw:
        for i, (d, shp) in enumerate(zip(downs, shapes, strict=True)):
            data = _tiles(mosaic, d, shp)
            kw = dict(args, shape=(*shp, 3), dtype=np.uint8)
            if kind == "svs":
                desc = f"Aperio Image Library v12.0.0\n{w}x{h} [0,0 {w}x{h}] ({TILE}x{TILE}) |AppMag = 20|MPP = {mpp}"
                tw.write(data, description=desc if i == 0 else "", metadata=None, **kw)
            elif kind == "tiff":
                r = {"resolution": (1e4 / (mpp * d), 1e4 / (mpp * d)), "resolutionunit": "CENTIMETER"}
                tw.write(data, subfiletype=1 if i else 0, metadata=None, **r, **kw)
            elif i == 0:
                meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
                tw.write(data, subifds=levels - 1, metadata=meta, **res, **kw)
            else:
                tw.write(data, subfiletype=1, **kw)
    return path


def corrupt_compression(path: Path, value: int = 60000, pages: Sequence[int] | None = None) -> None:
    """Set the Compression tag of the TIFF's ``pages`` (all when None) to an unknown scheme, in place."""
    with tifffile.TiffFile(path) as tif:
        chosen = range(len(tif.pages)) if pages is None else pages
        offsets = [tif.pages[i].tags["Compression"].valueoffset for i in chosen]
        order = tif.byteorder
    with open(path, "r+b") as fh:
        for off in offsets:
            fh.seek(off)
            fh.write(int(value).to_bytes(2, "little" if order == "<" else "big"))


def break_level(path: Path, page: int) -> None:
    """Point every tile of page ``page`` past the end of the file, in place (a level whose data is missing)."""
    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[page].tags["TileOffsets"]
        offset, count, order = tag.valueoffset, tag.count, tif.byteorder
        width = 8 if tif.is_bigtiff else 4
    values = np.full(count, size + 4096, np.dtype(f"{order}u{width}"))
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(values.tobytes())
