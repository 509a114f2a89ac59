"""Whole-slide benchmark: `glandseg predict` on a generated slide of at least 20,000 x 20,000 pixels.

    .venv/bin/python benchmarks/bench_slides.py make /tmp/glandseg_bench/big.svs        # the slide (once)
    .venv/bin/python benchmarks/bench_slides.py run /tmp/glandseg_bench/big.svs         # both models

See benchmarks/README.md ("Whole slides") for what each figure means.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers_slides import Mosaic, write_slide

SLIDE_MPP = 0.25  # an Aperio 40x scan: the pipeline reads level 0 and shrinks it by 0.62 / 0.25 = 2.48
MARGIN = 4000  # level-0 pixels of glass around the tissue, as around a section on a slide


def glas_dir() -> Path:
    import os

    return Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))


def make(path: Path, side: int) -> None:
    """A mosaic of the 60 Test A images, each enlarged to 0.25 um/px, on white (MARGIN around), at least
    side x side."""
    images = [np.asarray(Image.open(glas_dir() / f"testA_{i}.bmp").convert("RGB")) for i in range(1, 61)]
    scale = 0.62 / SLIDE_MPP
    ch, cw = Mosaic(images, (1, 1), scale=scale).cell
    rows = -(-(side - 2 * MARGIN + 128) // (ch + 128))
    cols = -(-(side - 2 * MARGIN + 128) // (cw + 128))
    mosaic = Mosaic(images, (rows, cols), scale=scale, margin=MARGIN, gap=128)
    t = time.perf_counter()
    write_slide(path, mosaic, mpp=SLIDE_MPP, levels=3, kind="svs")
    h, w = mosaic.shape
    print(
        f"wrote {path}: {w} x {h} pixels ({w * h / 1e6:.0f} MP), {rows} x {cols} GlaS images, "
        f"{SLIDE_MPP} um/px, {path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_make = sub.add_parser("make")
    p_make.add_argument("slide", type=Path)
    p_make.add_argument("--side", type=int, default=20_000)
    args = parser.parse_args(argv)
    if args.cmd == "make":
        make(args.slide, args.side)


if __name__ == "__main__":
    main()
