"""The batch loop: one input (image or slide) at a time, files, folders and globs, ``torchrun`` shards."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..distributed import World, gather_to_main
from ..errors import GlandsegError, ImageError, ModelError
from ..files import atomic_write_bytes
from ..imaging.inputs import check_input, find_inputs, identity, output_stems
from ..imaging.io import read_image
from ..imaging.scale_estimate import check_mpp
from ..memory import Budget, check, current_budget, estimate_segmenter
from ..progress import Step
from ..segmenters import Segmenter
from ..segmenters.base import WindowSegmenter
from ..slides import image_mpp, is_slide, predict_slide, segment_at_mpp
from ..slides.outputs import output_paths as slide_outputs
from .lock import folder_lock
from .provenance import check_names, config_identity, input_identity, is_done, record_bytes, record_path
from .writing import (
    SUMMARY,
    Result,
    encode_outputs,
    existing_outputs,
    image_outputs,
    merge_summary,
    os_message,
    write_summary,
    write_together,
)

# ------------------------------------------------------------------------------------------ one input


def _header_shape(path: Path) -> tuple[int, int] | None:
    """(H, W) from an image file's header, without decoding it (None: unreadable; read_image will say why)."""
    try:
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception:  # noqa: BLE001  any header Pillow cannot read is read_image's to explain
        return None


def _check_memory(
    segmenter: Segmenter, path: Path, shape: tuple[int, ...], mpp: float | None, budget: Budget
) -> None:
    """Refuse (ImageError, one line naming the file) an image whose segmentation at ``mpp`` (after
    resampling to the model's pixel size) would exceed ``budget``."""
    est = estimate_segmenter(segmenter, shape, mpp)
    if est is not None:
        check(est, budget, str(path), mpp, float(segmenter.cfg.data_mpp))


def _segment_image(
    segmenter: Segmenter,
    path: Path,
    targets: list[Path],
    mpp: float | None,
    budget: Budget,
    record: tuple[Path, bytes],
) -> Result:
    mpp = image_mpp(path) if mpp is None else mpp
    shape = _header_shape(path)
    if shape is not None:  # before decoding: the size the network will see, after resampling
        _check_memory(segmenter, path, shape, mpp, budget)
    image = read_image(path)
    if shape != image.shape[:2]:
        _check_memory(segmenter, path, image.shape, mpp, budget)
    given = mpp if mpp is not None else getattr(getattr(segmenter, "cfg", None), "data_mpp", None)
    if given is not None and (warning := check_mpp(image, float(given))):  # the CLI: one line on stderr
        logging.getLogger("glandseg").warning("%s: %s", path.name, warning)
    labels = segmenter(image) if mpp is None else segment_at_mpp(segmenter, image, mpp)
    files = dict(zip(targets, encode_outputs(image, labels, mpp), strict=True))
    write_together({**files, record[0]: record[1]})  # the outputs and the record of their input: one set
    glands = int(np.count_nonzero(np.unique(labels)))
    area = None if mpp is None else float(np.count_nonzero(labels)) * mpp * mpp
    return Result(path, glands=glands, output=targets[0], mpp=mpp, area_um2=area)


def _segment_slide(
    segmenter: Segmenter, path: Path, name: str, out_dir: Path, *, mpp: float | None, show_bar: bool
) -> Result:
    if not isinstance(segmenter, WindowSegmenter):
        raise ModelError(f"{path}: a {segmenter.kind} model cannot segment slide windows")
    bar = tqdm(desc=path.name, unit="window", leave=False, disable=None if show_bar else True)

    def progress(p: Step) -> None:
        bar.total, bar.n = p.total, p.done
        bar.refresh()

    with bar:
        s = predict_slide(segmenter, path, out_dir, name=name, mpp=mpp, progress=progress)
    area = float(s.summary["gland_area_mm2"]) * 1e6
    return Result(
        path, glands=s.glands, output=s.outputs["geojson"], mpp=s.summary["slide_mpp"], area_um2=area
    )


def _identity(path: Path) -> dict:
    """:func:`input_identity`, a read failure named in one line."""
    try:
        return input_identity(path)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


def _all_outputs(out_dir: Path, name: str) -> list[Path]:
    """Every file an input named ``name`` may write (as an image or as a slide), its record included."""
    slide = slide_outputs(out_dir, name).values()
    return [*image_outputs(out_dir, name), *slide, record_path(out_dir, name)]


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
    budget: Budget | None = None,
) -> Result:
    """Segment one file and write its outputs (see the module docstring); errors become ``Result.error``.

    Args:
        inputs: ``(st_dev, st_ino)`` of every input of the batch: no output may replace one of them.
        overwrite: redo the input even when its outputs are there (of this input, another one, or unknown);
            otherwise outputs of the same input and model are skipped and any others refused in one line.
        mpp: micrometres per pixel of the input; None: read from its metadata, else the model's own scale.
        show_bar: a slide shows a progress bar of its windows (on a terminal).
        budget: the memory an image may need once resampled to the model's pixel size (default:
            :func:`glandseg_core.memory.current_budget`); above it the image is refused before it is decoded.
    """
    start = time.perf_counter()
    try:
        check_input(path)
        slide = is_slide(path)
        targets = list(slide_outputs(out_dir, name).values()) if slide else image_outputs(out_dir, name)
        clash = [t for t in targets if identity(t) is not None and identity(t) in inputs]
        if clash:
            raise ImageError(
                f"{clash[0]}: is an input of this run; refusing to overwrite it (choose another --out)"
            )
        source, config, record = (
            _identity(path),
            config_identity(segmenter, mpp),
            record_path(out_dir, name),
        )
        if not overwrite and is_done(path, targets, record, source, config):
            glands, area = existing_outputs(targets)
            result = Result(path, glands=glands, output=targets[0], skipped=True, area_um2=area)
        elif slide:
            result = _segment_slide(segmenter, path, name, out_dir, mpp=mpp, show_bar=show_bar)
            atomic_write_bytes(record, record_bytes(source, config, targets))  # last: the set is done
        else:
            budget = current_budget() if budget is None else budget
            rec = (record, record_bytes(source, config, targets))
            result = _segment_image(segmenter, path, targets, mpp, budget, rec)
    except GlandsegError as e:
        result = Result(path, error=str(e))
    except OSError as e:
        result = Result(path, error=os_message(e))
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
    budget: Budget | None = None,
) -> list[Result]:
    """Segment ``paths`` into ``out_dir`` (created), going on after a bad input; no summary file.

    Returns:
        One :class:`Result` per input, in order.

    Raises:
        ImageError: two inputs would write files of the same name (refused before any work).
        FolderBusy: another batch writes into ``out_dir`` now.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {i for i in map(identity, paths) if i is not None}
    names = output_stems(paths)
    check_names(paths, [_all_outputs(out_dir, n) for n in names])
    results = []
    with folder_lock(out_dir):
        for path, name in zip(paths, names, strict=True):
            kw = {"overwrite": overwrite, "mpp": mpp, "budget": budget}
            results.append(predict_one(segmenter, path, name, out_dir, inputs, **kw))  # type: ignore[arg-type]
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
    budget: Budget | None = None,
) -> Outcome:
    """Segment every input that files, folders and globs name into ``out_dir`` and write the summary CSV.

    Args:
        specs: files, folders and glob patterns (:func:`find_inputs`). mpp: micrometres per pixel of every
            input (default: each file's metadata, else the model's own scale). world: this process's share
            (:func:`glandseg_core.distributed.world_from_env`); under torchrun every rank must call this.
        report: called with each result as it comes. show_bar: a progress bar (rank 0, on a terminal).
        budget: the memory one image may need after resampling (default: :func:`memory.current_budget`,
            taken once); an image above it is refused in one line that says what would fit.

    Returns:
        An :class:`Outcome`. Ctrl-C stops after the input in hand is written or dropped whole; the summary
        (``summary.csv``, merged with the rows of earlier batches into ``out_dir``) then lists what was done,
        and the same command finishes the batch (finished inputs are skipped).

    Raises:
        ImageError: two inputs would write files of the same name (refused before any work).
        FolderBusy: another batch writes into ``out_dir`` now (rank 0 holds the folder for the batch).
    """
    world = World() if world is None else world
    budget = current_budget() if budget is None else budget
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs, problems = find_inputs(specs, out_dir)
    names = output_stems(inputs)
    check_names(inputs, [_all_outputs(out_dir, n) for n in names])
    done = [(-1, Result(p, error=msg)) for p, msg in problems] if world.main else []
    for _, r in done:
        if report is not None:
            report(r)
    kw = {"overwrite": overwrite, "mpp": mpp, "budget": budget}
    with folder_lock(out_dir, hold=world.main):
        interrupted = _loop(segmenter, inputs, names, out_dir, world, done, report, show_bar, kw)
        summary, part, counts = _summarise(world, out_dir, done, interrupted)
    return Outcome([r for _, r in done], len(inputs) + len(problems), summary, part, interrupted, counts)


def _loop(
    segmenter: Segmenter,
    inputs: list[Path],
    names: list[str],
    out_dir: Path,
    world: World,
    done: list[tuple[int, Result]],
    report: Callable[[Result], None] | None,
    show_bar: bool,
    kw: dict,
) -> bool:
    """This process's share of the inputs, each result appended to ``done``; True when interrupted."""
    protect = {i for i in map(identity, inputs) if i is not None}
    mine = world.shard(range(len(inputs)))
    bar = tqdm(
        total=len(mine), desc="predict", unit="image", disable=None if show_bar and world.main else True
    )
    try:
        with bar, _sigterm_interrupts():
            for i in mine:
                bar_on = show_bar and world.main
                r = predict_one(segmenter, inputs[i], names[i], out_dir, protect, show_bar=bar_on, **kw)
                done.append((i, r))
                bar.update()
                if report is not None:
                    with tqdm.external_write_mode():
                        report(r)
    except KeyboardInterrupt:
        return True
    return False


def _summarise(
    world: World, out_dir: Path, done: list[tuple[int, Result]], interrupted: bool
) -> tuple[Path | None, Path, Counter[str]]:
    """Write this process's summary; under torchrun rank 0 then merges all ranks' rows in input order."""
    part = out_dir / (f"summary_rank{world.rank}.csv" if world.distributed else SUMMARY)
    rows = [r.row() for _, r in done]
    (write_summary if world.distributed else merge_summary)(part, rows)  # summary.csv keeps earlier rows
    summary = None if world.distributed else part
    if world.distributed and not interrupted:
        gathered = gather_to_main(world, [(i, row) for (i, _), row in zip(done, rows, strict=True)])
        if gathered is not None:
            rows, summary = [row for _, row in sorted(gathered, key=lambda x: x[0])], out_dir / SUMMARY
            merge_summary(summary, rows)
    counts = Counter({"ok": 0, "skipped": 0, "error": 0})
    counts.update(str(row["status"]) for row in rows)
    return summary, part, counts
