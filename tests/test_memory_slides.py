"""Slides under the memory estimate (issue #23 item 2): a slide whose declared size the file cannot hold is
refused when opened, and the thumbnail reads bounded regions, never strips of the full level width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from glandseg_core.errors import ImageError
from glandseg_core.slides import open_slide, reader
from tests.helpers import make_glands
from tests.helpers_slides import Mosaic, write_slide


def _claims(path: Path, width: int, height: int) -> Path:
    """Rewrite the first page's ImageWidth / ImageLength of a small tiled TIFF in place (a forged header)."""
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages.first.tags
        tags["ImageWidth"].overwrite(width)
        tags["ImageLength"].overwrite(height)
    return path


@pytest.mark.parametrize("width, height", [(10**6, 10**6), (10**6, 4096)])
def test_a_slide_declaring_more_pixels_than_its_file_holds_is_refused(
    tmp_path: Path, width: int, height: int
) -> None:
    image = make_glands(256, 256)[0]
    path = write_slide(
        tmp_path / "s.tif", Mosaic([image], (1, 1), margin=0), mpp=0.5, levels=1, kind="tiff"
    )
    path = _claims(path, width, height)
    with pytest.raises(ImageError) as e:
        open_slide(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"s.tif: refused: it declares {width}×{height} pixels in ")


def test_the_thumbnail_reads_bounded_regions_and_matches_the_strips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiles = [make_glands(256, 384, seed=s)[0] for s in range(4)]
    path = write_slide(tmp_path / "m.svs", Mosaic(tiles, (2, 2), margin=32), mpp=0.5, levels=2)
    with open_slide(path) as slide:
        strips, scale = slide.thumbnail(100)
        reads: list[tuple[int, int]] = []
        original = slide.read

        def read(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
            reads.append((w, h))
            return original(level, x, y, w, h)

        monkeypatch.setattr(slide, "read", read)
        monkeypatch.setattr(reader, "THUMBNAIL_READ_PIXELS", 400)  # far below one row of the level
        blocks, scale2 = slide.thumbnail(100)
    assert scale2 == scale and blocks.shape == strips.shape
    lw = max(w for w, _ in reads)
    assert len(reads) > 4 and all(w * h <= 4 * 400 + 64 for w, h in reads), reads[:5]
    assert lw < slide.levels[1][0]  # never a strip of the full level width
    assert np.abs(blocks.astype(int) - strips.astype(int)).mean() < 3
