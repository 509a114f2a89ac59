"""Segment a whole-slide image window by window: bounded memory whatever its size, glands whole across windows.

Steps: open the slide and read its pixel size; pick the level nearest the model's (``cfg.data_mpp``) and the
resampling left (:func:`reader.choose_level`); find tissue on a thumbnail (``tissue.py``); cut the slide, at the
model's pixel size ("model space"), into square windows overlapping by at least the largest gland; segment each
window with tissue in it (``windows.py``; read ahead, and two at once when memory allows: ``lanes.py``); stitch
the glands row by row (``stitch.py``) and stream them to the outputs (``outputs.py``) in level-0 coordinates.
Memory: one or two windows' pixels and network, one row of pending glands, and nothing proportional to the
slide.
"""

from __future__ import annotations

import math
import time
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self

import numpy as np
from PIL import Image

from ..errors import ImageError
from ..progress import ProgressFn, Step
from ..segmenters.base import Plan, WindowSegmenter
from ..segmenters.instances import shift
from ..segmenters.tiling import even_spans
from .lanes import segment_windows
from .outputs import SlideWriter
from .reader import LevelChoice, Slide, choose_level, open_slide
from .stitch import Stitcher
from .tissue import has_tissue, tissue_mask

WINDOW = (
    2048  # window side in model pixels: large, so the overlap costs little (2048^2 / 1792^2 = 1.31x)
)
OVERLAP = 256  # model pixels: at least the largest GlaS gland, so every gland is whole in some window
THUMBNAIL = 2048  # longest side of the thumbnail tissue is found on


@dataclass(frozen=True)
class SlideResult:
    """One segmented slide: its gland count, the files written (keys ``geojson``, ``glands``,
    ``summary_json``, ``summary_csv``) and the summary (``outputs.SUMMARY_COLUMNS``)."""

    path: Path
    name: str
    glands: int
    outputs: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)


def predict_slide(
    segmenter: WindowSegmenter,
    path: str | Path,
    out_dir: str | Path,
    *,
    name: str,
    mpp: float | None = None,
    progress: ProgressFn | None = None,
    window: int = WINDOW,
    overlap: int = OVERLAP,
) -> SlideResult:
    """Segment the glands of a whole-slide image and write GeoJSON, a gland table and a summary.

    Args:
        segmenter: a loaded U-Net or Mask R-CNN (``segmenters.load_segmenter``).
        path: the slide (any format OpenSlide reads; see ``reader.py``).
        out_dir: output folder (created). name: output file stem (``<name>.geojson`` ...).
        mpp: level-0 micrometres per pixel, overriding (or standing in for) the slide's own.
        progress: called with a :class:`~glandseg_core.progress.Step` (phase ``slide``, unit ``windows``)
            before the first window and after each; its ``detail`` holds ``passes`` and ``views`` (each window's
            forward passes and TTA views, from ``segmenter.window_plan``) and the seconds ``elapsed`` and
            ``left`` (estimated from the windows done; None before the first).
        window, overlap: window side and overlap in model pixels (the overlap at least the largest gland).

    Returns:
        A :class:`SlideResult`. Outputs are all written, or none (an error or Ctrl-C deletes the partial ones).

    Raises:
        ImageError: one line, when the slide cannot be read or has no pixel size (and ``mpp`` is None).
    """
    start = time.perf_counter()
    path = Path(path)
    with open_slide(path) as slide:
        slide_mpp = _pixel_size(slide, mpp)
        choice = choose_level(slide_mpp[0], slide.downsamples, float(segmenter.cfg.data_mpp))
        thumb, thumb_scale = slide.thumbnail(THUMBNAIL)
        plan = _Plan(choice, tissue_mask(thumb), thumb_scale, window, overlap)
        model_mpp = (slide_mpp[0] * choice.scale, slide_mpp[1] * choice.scale)  # square model pixels
        writer = SlideWriter(Path(out_dir), name, (choice.scale, choice.scale), model_mpp)
        try:
            done, skipped, timing = _segment(slide, segmenter, plan, writer, progress, start)
            tissue_mm2 = float(plan.tissue.sum()) * thumb_scale**2 * slide_mpp[0] * slide_mpp[1] / 1e6
            summary = _summary(slide, segmenter, writer, choice, slide_mpp, model_mpp, tissue_mm2)
            summary |= {"windows": done, "windows_skipped": skipped} | timing
            summary["seconds"] = round(time.perf_counter() - start, 1)
            writer.commit(summary)
        except BaseException:
            writer.discard()
            raise
    return SlideResult(path, name, summary["glands"], dict(writer.paths), summary)


@dataclass(frozen=True)
class _Plan:
    """How a slide is cut: the level read, tissue on the thumbnail (and its level-0 pixels per pixel), windows."""

    choice: LevelChoice
    tissue: np.ndarray
    thumb_scale: float
    window: int
    overlap: int


def _summary(
    slide: Slide,
    segmenter: WindowSegmenter,
    writer: SlideWriter,
    choice: LevelChoice,
    slide_mpp: tuple[float, float],
    model_mpp: tuple[float, float],
    tissue_mm2: float,
) -> dict[str, Any]:
    """The slide's summary row (``outputs.SUMMARY_COLUMNS`` but the window counts and time)."""
    return {
        "slide": slide.path.name,
        "model": segmenter.cfg.name,
        "glands": writer.count,
        "gland_area_mm2": round(writer.area_um2 / 1e6, 6),
        "tissue_area_mm2": round(tissue_mm2, 6),
        "glands_per_mm2": round(writer.count / tissue_mm2, 4) if tissue_mm2 > 0 else 0.0,
        "slide_mpp": round(slide_mpp[0], 6),
        "model_mpp": round(model_mpp[0], 6),
        "level": choice.level,
        "resample": round(choice.factor, 6),
        "width": slide.dimensions[0],
        "height": slide.dimensions[1],
    }


def _pixel_size(slide: Slide, mpp: float | None) -> tuple[float, float]:
    if mpp is not None:
        if not (mpp > 0 and math.isfinite(mpp)):
            raise ImageError(f"{slide.path.name}: pixel size must be a positive number of µm, got {mpp}")
        return (float(mpp), float(mpp))
    if slide.mpp is None:
        raise ImageError(
            f"{slide.path.name}: the slide does not record its pixel size; give it (--mpp, µm/px)"
        )
    return slide.mpp


def _segment(
    slide: Slide,
    segmenter: WindowSegmenter,
    plan: _Plan,
    writer: SlideWriter,
    progress: ProgressFn | None,
    start: float,
) -> tuple[int, int, dict[str, float]]:
    """Segment every window with tissue, stitching row by row into ``writer``; returns (done, skipped) and
    the seconds (wall, CPU) spent segmenting, outputs apart."""
    choice, window, overlap = plan.choice, plan.window, plan.overlap
    scale = (choice.scale, choice.scale)
    w0, h0 = slide.dimensions
    shape = (max(1, round(h0 / scale[1])), max(1, round(w0 / scale[0])))  # model space (rows, cols)
    ys, th = even_spans(shape[0], window, overlap)
    xs, tw = even_spans(shape[1], window, overlap)
    todo = [
        [x for x in xs if has_tissue(plan.tissue, plan.thumb_scale, _level0_box(y, x, th, tw, scale))]
        for y in ys
    ]
    total = sum(map(len, todo))
    step = _Steps(progress, total, segmenter.window_plan((th, tw)), start)
    post = segmenter.post
    stitcher = Stitcher(int(post.min_area), float(getattr(post, "min_visible", 0.0)), shape)
    done, writing = 0, _Stopwatch()
    t0 = (time.perf_counter(), time.process_time())
    jobs = [(y, x) for y, row in zip(ys, todo, strict=True) for x in row]
    results = segment_windows(segmenter, partial(_read_window, slide, choice, h=th, w=tw), jobs)
    step(0)
    with closing(results):  # an error or Ctrl-C stops the windows in flight
        for r, (y, row) in enumerate(zip(ys, todo, strict=True)):
            parts = []
            for x in row:
                inst = next(results)
                box = np.array([y, x, y + th, x + tw], np.int64)
                parts.append((shift(inst, slice(y, y + th), slice(x, x + tw), shape), box))
                done += 1
                step(done)
            final = stitcher.add_row(parts, ys[r + 1] if r + 1 < len(ys) else None)
            with writing:
                writer.add(final)
    timing = {  # reading, segmenting and stitching the windows; writing the outputs apart
        "segment_seconds": round(time.perf_counter() - t0[0] - writing.wall, 2),
        "segment_cpu_seconds": round(time.process_time() - t0[1] - writing.cpu, 2),
    }
    return done, len(ys) * len(xs) - total, timing


class _Steps:
    """Reports the slide's windows to ``progress`` (see :func:`predict_slide`); ``plan`` is one window's."""

    def __init__(self, progress: ProgressFn | None, total: int, plan: Plan, start: float) -> None:
        self.progress, self.total, self.start = progress, total, start
        self.detail = {"passes": plan.passes, "views": plan.views}

    def __call__(self, done: int) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / done * (self.total - done) if done else None
        detail: dict[str, object] = {**self.detail, "elapsed": elapsed, "left": left}
        self.progress(Step("slide", done, self.total, "windows", detail))


class _Stopwatch:
    """Wall and process CPU seconds (all threads) spent inside ``with`` blocks, summed."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Self:
        self._t = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._t[0]
        self.cpu += time.process_time() - self._t[1]


def _level0_box(y: int, x: int, h: int, w: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    return (
        int(x * scale[0]),
        int(y * scale[1]),
        math.ceil((x + w) * scale[0]),
        math.ceil((y + h) * scale[1]),
    )


def _read_window(slide: Slide, choice: LevelChoice, y: int, x: int, h: int, w: int) -> np.ndarray:
    """uint8[h, w, 3] of model-space window (y, x, h, w): the chosen level's region, resampled by its factor.

    How it works: model pixel ``j`` covers level pixels ``[j f, (j + 1) f)`` (``f`` = ``choice.factor``); the
    integer level region around the window is read and Pillow resamples exactly the window's box (antialiased
    bilinear when shrinking, after a block average by the integer part of the factor).
    """
    f, d = choice.factor, choice.downsample
    if f == 1.0:
        return slide.read(choice.level, round(x * d), round(y * d), w, h)
    lx0, ly0, lx1, ly1 = x * f, y * f, (x + w) * f, (y + h) * f
    ix0, iy0 = math.floor(lx0), math.floor(ly0)
    ix1, iy1 = math.ceil(lx1), math.ceil(ly1)
    region = slide.read_image(choice.level, round(ix0 * d), round(iy0 * d), ix1 - ix0, iy1 - iy0)
    box = (lx0 - ix0, ly0 - iy0, lx1 - ix0, ly1 - iy0)
    # reducing_gap: a 2.48x shrink first averages 2x2 blocks (Image.reduce), then resamples the last 1.24x:
    # 3x faster than bilinear over the whole factor, within 0.5 grey levels on average
    return np.asarray(region.resize((w, h), Image.Resampling.BILINEAR, box=box, reducing_gap=1.0))
