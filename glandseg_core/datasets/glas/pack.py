"""A compact copy of GlaS, small enough to travel to a GPU machine (``python -m glandseg_core pack``).

The release is 246 MB of BMPs. A pack keeps the same names and layout, so every command reads it like the
original: images of the ``lossless`` splits as lossless WebP (the pixels are unchanged; use it for ``val``, where
models and thresholds are chosen), the others as JPEG at ``quality`` with full-resolution chroma (4:4:4), and every
annotation as a lossless PNG. ``manifest.json`` records what was packed and how; packing more splits into the
same folder (at another quality, say) adds to it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...imaging.io import atomic_write_text
from .discovery import IMAGE_EXTS, SPLITS, GlasItem, data_root, find_items, load_item

MANIFEST = "manifest.json"


def pack_glas(
    src: str | os.PathLike | None,
    dst: str | os.PathLike,
    splits: tuple[str, ...] = ("train", "val"),
    lossless: tuple[str, ...] = ("val",),
    quality: int = 95,
) -> dict:
    """Write the images of ``splits`` from the GlaS folder ``src`` into ``dst``.

    Returns:
        The manifest: per split the image count, encoding and bytes written.

    Raises:
        DatasetError: when ``src`` lacks files of ``splits``. ValueError: for a bad quality or split name.
    """
    if not 50 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 50..100, got {quality}")
    bad = [s for s in (*splits, *lossless) if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    items = find_items(src, splits)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"source": str(src), "splits": {}}
    if (dst / MANIFEST).is_file():  # packing more splits into the same folder adds to its manifest
        manifest["splits"] = json.loads((dst / MANIFEST).read_text()).get("splits", {})
    for split in {it.split for it in items}:
        manifest["splits"].pop(split, None)
    for item in items:
        path, anno = _write_item(item, dst, lossless=item.split in lossless, quality=quality)
        encoding = path.suffix[1:] + (" lossless" if item.split in lossless else f" q{quality} 4:4:4")
        entry = manifest["splits"].setdefault(
            item.split, {"images": 0, "encoding": encoding, "bytes": 0}
        )
        entry["images"] += 1
        entry["bytes"] += path.stat().st_size + anno.stat().st_size
    grades = data_root(src) / "Grade.csv"
    if grades.is_file():
        shutil.copyfile(grades, dst / "Grade.csv")
    atomic_write_text(dst / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


_WEBP_LOSSLESS: dict[str, Any] = {"lossless": True, "quality": 100, "method": 4, "exact": True}


def _write_item(item: GlasItem, dst: Path, *, lossless: bool, quality: int) -> tuple[Path, Path]:
    """Write one image (lossless WebP, else JPEG 4:4:4 at ``quality``) and its PNG annotation into ``dst``."""
    image, labels = load_item(item)
    if lossless:
        path, kwargs = dst / f"{item.name}.webp", _WEBP_LOSSLESS
    else:
        path, kwargs = dst / f"{item.name}.jpg", {"quality": quality, "subsampling": 0}
    for stale in (dst / f"{item.name}{ext}" for ext in IMAGE_EXTS):
        if stale != path:
            stale.unlink(missing_ok=True)  # an earlier pack's other encoding would shadow this one
    Image.fromarray(image).save(path, **kwargs)
    anno = dst / f"{item.name}_anno.png"
    ids = labels.astype(np.uint16 if int(labels.max()) > 255 else np.uint8)
    Image.fromarray(ids).save(anno, optimize=True)
    return path, anno
