"""What a batch writes: each image's output files (all together or none), their names, and the summary CSV.

Per image ``<stem>``: the files of :data:`SUFFIXES`, written by :func:`write_together` from
:func:`encode_outputs`; one :class:`Result` per input, one row each in the summary CSV (:data:`SUMMARY_COLUMNS`).
Renames and the summary are never cut in half by SIGINT or SIGTERM (held until the writes end).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write_bytes
from ..imaging.formats import label_tiff_bytes
from ..imaging.io import label_png_bytes, png_bytes
from ..outputs.export import gland_table, overlay, to_geojson

log = logging.getLogger(__name__)
SUFFIXES = (".png", "_overlay.png", "_glands.csv", ".geojson", ".ome.tif")
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ("image", "name", "status", "glands", "area_um2", "mpp", "seconds", "message")


@dataclass(frozen=True)
class Result:
    """What happened to one input.

    Attributes:
        path: the input. glands: glands found (None on error). output: its label map (or slide GeoJSON).
        error: one line, when it failed. skipped: its outputs existed already. seconds: time spent on it.
        mpp: the input's micrometres per pixel, when known. area_um2: total gland area, when mpp is known.
        name: its output stem.
    """

    path: Path
    glands: int | None = None
    output: Path | None = None
    error: str | None = None
    skipped: bool = False
    seconds: float = 0.0
    mpp: float | None = None
    area_um2: float | None = None
    name: str = ""

    @property
    def status(self) -> str:
        """``ok``, ``skipped`` or ``error``."""
        return "error" if self.error else "skipped" if self.skipped else "ok"

    def row(self) -> dict[str, object]:
        """The input's row of the summary CSV (:data:`SUMMARY_COLUMNS`)."""
        msg = self.error or ("outputs exist (--overwrite to redo)" if self.skipped else "")
        return {
            "image": str(self.path),
            "name": self.name,
            "status": self.status,
            "glands": "" if self.glands is None else self.glands,
            "area_um2": "" if self.area_um2 is None else f"{self.area_um2:.1f}",
            "mpp": "" if self.mpp is None else f"{self.mpp:.4g}",
            "seconds": f"{self.seconds:.2f}",
            "message": msg,
        }


# -------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, so a set of renames is never cut in half (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if caught:
            handler = old[signal.Signals(caught[0])]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])


def write_together(files: dict[Path, bytes]) -> None:
    """Write several files so that either all are replaced or none is (temporary files first, then renames).

    Raises:
        OSError: with ``filename`` set to the file that could not be written (e.g. a full disk).
    """
    tmps: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            try:  # creating the temporary file may fail too (no space for one more file)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                tmps.append((tmp, path))
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as e:
                e.filename = str(path)
                raise
            os.chmod(tmp, 0o644)
        with _signals_deferred():
            for tmp, path in tmps:
                os.replace(tmp, path)
            tmps = []
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def os_message(e: OSError) -> str:
    """One line naming the file that could not be written and why (a full disk said plainly)."""
    cause = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{e.filename or '?'}: cannot write ({cause}); outputs of this image not written"


def encode_outputs(image: np.ndarray, labels: np.ndarray, mpp: float | None) -> list[bytes]:
    """The files of :data:`SUFFIXES`; with ``mpp``, the table, GeoJSON and OME-TIFF carry µm measurements."""
    return [
        label_png_bytes(labels),
        png_bytes(overlay(image, labels, ids=True)),
        gland_table(labels, mpp=mpp).to_csv(index=False, float_format="%.4g").encode(),
        json.dumps(to_geojson(labels, mpp=mpp)).encode(),
        label_tiff_bytes(labels, mpp=mpp),
    ]


def image_outputs(out_dir: Path, name: str) -> list[Path]:
    """The output files of the image named ``name`` (:data:`SUFFIXES`), label map first."""
    return [out_dir / f"{name}{s}" for s in SUFFIXES]


def existing_outputs(targets: list[Path]) -> tuple[int | None, float | None]:
    """Glands and total µm² (when measured) of finished outputs, from their gland table (no image read)."""
    table = next((t for t in targets if t.name.endswith("_glands.csv")), None)
    try:
        with open(table, newline="", encoding="utf-8") as fh:  # type: ignore[arg-type]
            reader = csv.DictReader(fh)
            rows = list(reader)
            measured = "area_um2" in (reader.fieldnames or ())
        return len(rows), sum(float(r["area_um2"]) for r in rows) if measured else None
    except (OSError, TypeError, ValueError, csv.Error):
        return None, None


def write_summary(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Write summary rows (:meth:`Result.row`) as CSV, atomically, even if a signal comes meanwhile."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with _signals_deferred():
        atomic_write_bytes(path, buf.getvalue().encode())


def _read_summary(path: Path) -> list[dict[str, object]]:
    """The rows of an earlier ``summary.csv`` ([] when there is none).

    An unreadable one is kept under another name (``summary-<n>.csv``), never lost, with a warning.
    """
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: r.get(k) or "" for k in SUMMARY_COLUMNS} for r in csv.DictReader(fh)]
    except (UnicodeDecodeError, csv.Error) as e:
        n = 1
        while (aside := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
            n += 1
        os.replace(path, aside)
        log.warning("%s: unreadable (%s); kept as %s", path, e, aside)
        return []


def merge_rows(
    old: Sequence[dict[str, object]], new: Sequence[dict[str, object]]
) -> list[dict[str, object]]:
    """Earlier rows, then this batch's: a row of the same input is replaced, and so is another input's row
    whose outputs this batch replaced (same output name, now ``ok``); every other earlier row is kept."""
    inputs = {r["image"] for r in new}
    redone = {r["name"] for r in new if r["status"] == "ok" and r["name"]}
    kept = [
        r for r in old
        if r["image"] not in inputs and not (r["name"] in redone and r["status"] != "error")
    ]  # fmt: skip
    return [*kept, *new]


def merge_summary(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Write ``summary.csv`` with the rows of earlier batches into the same folder kept (:func:`merge_rows`);
    the caller holds the folder's lock (:func:`glandseg_core.batch.lock.folder_lock`)."""
    write_summary(path, merge_rows(_read_summary(path), rows))
