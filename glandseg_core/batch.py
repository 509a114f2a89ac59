"""Segment many image files into a folder: per image a label map, an overlay, a gland table and a GeoJSON.

Outputs of one image are written all together or not at all (a full disk leaves no image half-done), never
over an input file, and a bad input is reported in one line while the batch goes on with the next.

Per input ``<stem>.<ext>``: ``<stem>.png`` (16-bit label map, 0=background, 1..N glands),
``<stem>_overlay.png``, ``<stem>_glands.csv`` and ``<stem>.geojson``; inputs sharing a stem get ``<stem>-2``, ...
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GlandsegError, ImageError
from .export import gland_table, overlay, to_geojson
from .io import label_png_bytes, png_bytes, read_image
from .segment import Segmenter

SUFFIXES = (".png", "_overlay.png", "_glands.csv", ".geojson")


@dataclass(frozen=True)
class Result:
    """What happened to one input: ``glands`` found (None on error), the label map written, or the error."""

    path: Path
    glands: int | None = None
    output: Path | None = None
    error: str | None = None


def output_stems(paths: Sequence[Path]) -> list[str]:
    """One output name per input: the file's stem, made unique when two inputs share it (``a.bmp``, ``x/a.png``)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, n = path.stem, 1
        while name in used:
            n += 1
            name = f"{path.stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_input(path: Path) -> None:
    """Refuse at once what is not a regular file (a FIFO would block forever, a folder cannot be read).

    Raises:
        ImageError: naming the file.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ImageError(f"{path}: refused: {what}, not an image file")


def _outputs(out_dir: Path, name: str) -> list[Path]:
    return [out_dir / f"{name}{s}" for s in SUFFIXES]


def _encode(image: np.ndarray, labels: np.ndarray) -> list[bytes]:
    return [
        label_png_bytes(labels),
        png_bytes(overlay(image, labels, ids=True)),
        gland_table(labels).to_csv(index=False, float_format="%.4g").encode(),
        json.dumps(to_geojson(labels)).encode(),
    ]


def write_together(files: dict[Path, bytes]) -> None:
    """Write several files so that either all are replaced or none is (temporary files first, then renames).

    Raises:
        OSError: with ``filename`` set to the file that could not be written (e.g. a full disk).
    """
    tmps: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            tmps.append((tmp, path))
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as e:
                e.filename = str(path)
                raise
            os.chmod(tmp, 0o644)
        for tmp, path in tmps:
            os.replace(tmp, path)
        tmps = []
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _os_message(e: OSError) -> str:
    cause = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{e.filename or '?'}: cannot write ({cause}); outputs of this image not written"


def predict_one(segmenter: Segmenter, path: Path, name: str, out_dir: Path, inputs: set) -> Result:
    """Segment one file and write its outputs (see the module docstring); errors become ``Result.error``."""
    try:
        check_input(path)
        targets = _outputs(out_dir, name)
        clash = [t for t in targets if _identity(t) is not None and _identity(t) in inputs]
        if clash:
            raise ImageError(f"{clash[0]}: is an input of this run; refusing to overwrite it (choose another --out)")
        image = read_image(path)
        labels = segmenter(image)
        write_together(dict(zip(targets, _encode(image, labels), strict=True)))
    except GlandsegError as e:
        return Result(path, error=str(e))
    except OSError as e:
        return Result(path, error=_os_message(e))
    return Result(path, glands=int(np.count_nonzero(np.unique(labels))), output=targets[0])


def predict_files(
    segmenter: Segmenter,
    paths: Sequence[Path],
    out_dir: Path,
    report: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Segment ``paths`` into ``out_dir`` (created), going on after a bad input.

    Returns:
        One :class:`Result` per input, in order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {i for i in map(_identity, paths) if i is not None}
    results = []
    for path, name in zip(paths, output_stems(paths), strict=True):
        result = predict_one(segmenter, path, name, out_dir, inputs)
        results.append(result)
        if report is not None:
            report(result)
    return results
