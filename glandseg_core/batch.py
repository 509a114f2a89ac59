"""Segment many image files and slides into a folder, one process or many (``torchrun``), with a summary CSV.

Outputs of one image are written all together or not at all (a full disk or Ctrl-C leaves no image
half-done), never over an input file, and a bad input is reported in one line while the batch goes on with the
next. An input whose outputs all exist already is skipped (``overwrite=True`` redoes it).

Per image ``<stem>.<ext>``: ``<stem>.png`` (16-bit label map, 0=background, 1..N glands, at the input's size),
``<stem>_overlay.png``, ``<stem>_glands.csv``, ``<stem>.geojson`` and ``<stem>.ome.tif`` (the label map as
OME-TIFF, for napari and Fiji); inputs sharing a stem get ``<stem>-2``, ... With a known pixel size (``--mpp``,
else the file's TIFF/OME metadata) the image is segmented at the model's pixel size (results at the input's
size) and the outputs carry µm and µm². Whole-slide images go to :func:`glandseg_core.slides.predict_slide`.
The batch's ``summary.csv`` has one row per input (:data:`SUMMARY_COLUMNS`).

Many processes: under ``torchrun --nproc_per_node N [--nnodes M]`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
set), every process lists the inputs the same way and process ``r`` takes inputs ``r, r + N, ...``; sharding
needs no communication. Each writes its outputs and ``summary_rank<r>.csv``; rank 0 then gathers the rows of
all ranks over a gloo process group (CPU, works with or without GPUs; the gather is also the barrier that
tells rank 0 every rank is done, which polling files cannot tell from a crash, and needs no shared disk) and
writes ``summary.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .distributed import World, gather_to_main
from .errors import GlandsegError, ImageError
from .files import atomic_write_bytes
from .imaging.formats import label_tiff_bytes
from .imaging.inputs import check_input, find_inputs, identity, output_stems
from .imaging.io import label_png_bytes, png_bytes, read_image
from .outputs.export import gland_table, overlay, to_geojson
from .segment import Segmenter
from .slides import Progress, image_mpp, is_slide, predict_slide, segment_at_mpp
from .slides.outputs import output_paths as slide_outputs

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


def _os_message(e: OSError) -> str:
    cause = "disk full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    return f"{e.filename or '?'}: cannot write ({cause}); outputs of this image not written"


def _encode(image: np.ndarray, labels: np.ndarray, mpp: float | None) -> list[bytes]:
    """The files of :data:`SUFFIXES`; with ``mpp``, the table, GeoJSON and OME-TIFF carry µm measurements."""
    return [
        label_png_bytes(labels),
        png_bytes(overlay(image, labels, ids=True)),
        gland_table(labels, mpp=mpp).to_csv(index=False, float_format="%.4g").encode(),
        json.dumps(to_geojson(labels, mpp=mpp)).encode(),
        label_tiff_bytes(labels, mpp=mpp),
    ]


# ------------------------------------------------------------------------------------------ one input


def _outputs(out_dir: Path, name: str) -> list[Path]:
    return [out_dir / f"{name}{s}" for s in SUFFIXES]


def _existing(targets: list[Path]) -> tuple[int | None, float | None]:
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


def _segment_image(segmenter: Segmenter, path: Path, targets: list[Path], mpp: float | None) -> Result:
    image = read_image(path)
    mpp = image_mpp(path) if mpp is None else mpp
    labels = segmenter(image) if mpp is None else segment_at_mpp(segmenter, image, mpp)
    write_together(dict(zip(targets, _encode(image, labels, mpp), strict=True)))
    glands = int(np.count_nonzero(np.unique(labels)))
    area = None if mpp is None else float(np.count_nonzero(labels)) * mpp * mpp
    return Result(path, glands=glands, output=targets[0], mpp=mpp, area_um2=area)


def _segment_slide(
    segmenter: Segmenter, path: Path, name: str, out_dir: Path, *, mpp: float | None, show_bar: bool
) -> Result:
    bar = tqdm(desc=path.name, unit="window", leave=False, disable=None if show_bar else True)

    def progress(p: Progress) -> None:
        bar.total, bar.n = p.total, p.done
        bar.refresh()

    with bar:
        s = predict_slide(segmenter, path, out_dir, name=name, mpp=mpp, progress=progress)
    area = float(s.summary["gland_area_mm2"]) * 1e6
    return Result(
        path, glands=s.glands, output=s.outputs["geojson"], mpp=s.summary["slide_mpp"], area_um2=area
    )


def predict_one(
    segmenter: Segmenter,
    path: Path,
    name: str,
    out_dir: Path,
    inputs: set,
    *,
    overwrite: bool = False,
    mpp: float | None = None,
    show_bar: bool = False,
) -> Result:
    """Segment one file and write its outputs (see the module docstring); errors become ``Result.error``.

    Args:
        inputs: ``(st_dev, st_ino)`` of every input of the batch: no output may replace one of them.
        mpp: micrometres per pixel of the input; None: read from its metadata, else the model's own scale.
        show_bar: a slide shows a progress bar of its windows (on a terminal).
    """
    start = time.perf_counter()
    try:
        check_input(path)
        slide = is_slide(path)
        targets = list(slide_outputs(out_dir, name).values()) if slide else _outputs(out_dir, name)
        clash = [t for t in targets if identity(t) is not None and identity(t) in inputs]
        if clash:
            raise ImageError(
                f"{clash[0]}: is an input of this run; refusing to overwrite it (choose another --out)"
            )
        if not overwrite and all(t.is_file() for t in targets):
            glands, area = _existing(targets)
            result = Result(path, glands=glands, output=targets[0], skipped=True, area_um2=area)
        elif slide:
            result = _segment_slide(segmenter, path, name, out_dir, mpp=mpp, show_bar=show_bar)
        else:
            result = _segment_image(segmenter, path, targets, mpp)
    except GlandsegError as e:
        result = Result(path, error=str(e))
    except OSError as e:
        result = Result(path, error=_os_message(e))
    except (MemoryError, RuntimeError) as e:  # e.g. an image too large for this machine: say so, go on
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        oom = isinstance(e, MemoryError) or "allocate memory" in first or "out of memory" in first
        result = Result(path, error=f"{path}: cannot segment it ({'out of memory' if oom else first})")
    return replace(result, name=name, seconds=time.perf_counter() - start)


def predict_files(
    segmenter: Segmenter,
    paths: Sequence[Path],
    out_dir: Path,
    report: Callable[[Result], None] | None = None,
    *,
    overwrite: bool = False,
    mpp: float | None = None,
) -> list[Result]:
    """Segment ``paths`` into ``out_dir`` (created), going on after a bad input; no summary file.

    Returns:
        One :class:`Result` per input, in order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {i for i in map(identity, paths) if i is not None}
    results = []
    for path, name in zip(paths, output_stems(paths), strict=True):
        results.append(predict_one(segmenter, path, name, out_dir, inputs, overwrite=overwrite, mpp=mpp))
        if report is not None:
            report(results[-1])
    return results


# ------------------------------------------------------------------------------------------ the batch


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_batch` did in this process.

    Attributes:
        results: this process's results (on rank 0 also one error per empty folder or glob), in order.
        total: inputs of the whole batch (all ranks; an empty folder or glob counts as one). summary: ``summary.csv`` once written by this process.
        part: this process's own summary (``summary.csv``, or ``summary_rank<r>.csv`` under torchrun).
        interrupted: Ctrl-C (or SIGTERM) stopped it; ``results`` holds what was done.
        counts: inputs per status (``ok``, ``skipped``, ``error``) in ``summary``, else in ``results``.
    """

    results: list[Result]
    total: int
    summary: Path | None
    part: Path
    interrupted: bool
    counts: Counter[str]


def write_summary(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """Write summary rows (:meth:`Result.row`) as CSV, atomically, even if a signal comes meanwhile."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with _signals_deferred():
        atomic_write_bytes(path, buf.getvalue().encode())


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (torchrun stopping its workers) raises KeyboardInterrupt, as Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_batch(
    segmenter: Segmenter,
    specs: Sequence[str | os.PathLike[str]],
    out_dir: Path,
    *,
    overwrite: bool = False,
    mpp: float | None = None,
    world: World | None = None,
    report: Callable[[Result], None] | None = None,
    show_bar: bool = True,
) -> Outcome:
    """Segment every input that files, folders and globs name into ``out_dir`` and write the summary CSV.

    Args:
        specs: files, folders and glob patterns (:func:`find_inputs`). mpp: micrometres per pixel of every
            input (default: each file's metadata, else the model's own scale). world: this process's share
            (:func:`glandseg_core.distributed.world_from_env`); under torchrun every rank must call this.
        report: called with each result as it comes. show_bar: a progress bar (rank 0, on a terminal).

    Returns:
        An :class:`Outcome`. Ctrl-C stops after the input in hand is written or dropped whole; the summary
        then lists what was done, and the same command finishes the batch (finished inputs are skipped).
    """
    world = World() if world is None else world
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs, problems = find_inputs(specs, out_dir)
    names = output_stems(inputs)
    protect = {i for i in map(identity, inputs) if i is not None}
    done = [(-1, Result(p, error=msg)) for p, msg in problems] if world.main else []
    for _, r in done:
        if report is not None:
            report(r)
    mine = world.shard(range(len(inputs)))
    bar = tqdm(
        total=len(mine), desc="predict", unit="image", disable=None if show_bar and world.main else True
    )
    interrupted = False
    try:
        with bar, _sigterm_interrupts():
            for i in mine:
                r = predict_one(
                    segmenter,
                    inputs[i],
                    names[i],
                    out_dir,
                    protect,
                    overwrite=overwrite,
                    mpp=mpp,
                    show_bar=show_bar and world.main,
                )
                done.append((i, r))
                bar.update()
                if report is not None:
                    with tqdm.external_write_mode():
                        report(r)
    except KeyboardInterrupt:
        interrupted = True
    summary, part, counts = _summarise(world, out_dir, done, interrupted)
    return Outcome([r for _, r in done], len(inputs) + len(problems), summary, part, interrupted, counts)


def _summarise(
    world: World, out_dir: Path, done: list[tuple[int, Result]], interrupted: bool
) -> tuple[Path | None, Path, Counter[str]]:
    """Write this process's summary; under torchrun rank 0 then merges all ranks' rows in input order."""
    part = out_dir / (f"summary_rank{world.rank}.csv" if world.distributed else SUMMARY)
    rows = [r.row() for _, r in done]
    write_summary(part, rows)
    summary = None if world.distributed else part
    if world.distributed and not interrupted:
        gathered = gather_to_main(world, [(i, row) for (i, _), row in zip(done, rows, strict=True)])
        if gathered is not None:
            rows, summary = [row for _, row in sorted(gathered, key=lambda x: x[0])], out_dir / SUMMARY
            write_summary(summary, rows)
    counts = Counter({"ok": 0, "skipped": 0, "error": 0})
    counts.update(str(row["status"]) for row in rows)
    return summary, part, counts
