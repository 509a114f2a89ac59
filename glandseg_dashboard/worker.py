"""The child process that segments one image for the dashboard: ``python -m glandseg_dashboard.worker [JOB_DIR]``.

Without ``JOB_DIR`` the worker imports torch and the segmenters first, then reads the job folder's path from
its stdin: the dashboard keeps one such spare ready so that a job does not wait for the imports (seconds).

``JOB_DIR`` holds ``job.json`` (``{"model_dir", "tta", "mpp"}``; ``mpp``, the image's µm per pixel, is optional:
the image is then segmented at the model's pixel size) and ``image.npy`` (uint8[H, W, 3]). The worker loads the
segmenter, segments the image and writes ``labels.npy`` (int32[H, W], 0=background, 1..N glands) and
``result.json`` (``{"seconds", "peak_rss_mb"}``), or ``error.json`` (``{"error": one line}``) and exits with 1.

Progress: ``progress.json`` (``{"phase", "done", "total", "views", "windows", "started"}``) is rewritten after
every forward pass of the network (a forward hook counts them; ``total`` = TTA views x windows, from the
segmenter's own tiling geometry), so the dashboard can draw the step and the time left. ``phase`` is
``loading``, ``segmenting`` or ``post-processing``; ``started`` is the wall time of the first forward pass.
It exits by itself when its parent (the Streamlit server) goes away, so an orphan never keeps the CPU busy.
Running the model in its own process lets the dashboard cancel it (kill) and gives its memory back to the
operating system when it ends. No streamlit here.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from glandseg_core.files import atomic_write_text


def _exit_with_parent(parent: int) -> None:
    """Background check: end this process (exit code 3) once its parent has gone."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent or not psutil.pid_exists(parent):
            os._exit(3)


def working_shape(segmenter: object, shape: tuple[int, int], mpp: float | None) -> tuple[int, int]:
    """(H, W) the network sees for an image of ``shape`` at ``mpp`` (as ``slides.segment_at_mpp`` resizes)."""
    from glandseg_core.slides.reader import SAME_MPP

    f = 1.0 if not mpp else mpp / float(segmenter.cfg.data_mpp)
    if abs(f - 1.0) <= SAME_MPP:
        return shape
    return max(8, round(shape[0] * f)), max(8, round(shape[1] * f))


def planned_passes(segmenter: object, shape: tuple[int, int]) -> tuple[int, int]:
    """(windows, views): forward passes of segmenting an image of ``shape`` (H, W) = windows x views, from
    the segmenter's tiling geometry (``segment/tiling.py``) and its TTA setting."""
    from glandseg_core.segment import tiling as t
    from glandseg_core.segment.tta import VIEWS_8

    views = len(VIEWS_8) if getattr(segmenter, "tta", False) else 1
    geo = getattr(segmenter, "tiling", None)
    if geo is None or not geo.needed(shape):
        return 1, views
    if segmenter.kind == "unet":
        scale, align = segmenter.cfg.unet_scale, int(segmenter.model.multiple)
        h, w = (
            shape
            if scale == 1.0
            else (max(16, round(shape[0] * scale)), max(16, round(shape[1] * scale)))
        )
        spans = [t.aligned_spans(n, geo.unet_tile, geo.unet_overlap, align) for n in (h, w)]
        return len(spans[0]) * len(spans[1]), views
    if getattr(segmenter, "native_windows", False):  # large windows at the training scale
        return len(t.even_tiles(shape, geo.maskrcnn_window, geo.maskrcnn_overlap)), views
    return len(t.tiles(shape, geo.maskrcnn_tile, geo.maskrcnn_overlap)), views


class Progress:
    """Writes ``progress.json`` of a job; :meth:`hook` is a forward hook counting the network's passes."""

    def __init__(self, job_dir: Path) -> None:
        self.path, self.done, self.total, self.windows, self.views = (
            job_dir / "progress.json",
            0,
            0,
            1,
            1,
        )
        self.started: float | None = None

    def write(self, phase: str) -> None:
        info = {
            "phase": phase,
            "done": self.done,
            "total": self.total,
            "windows": self.windows,
            "views": self.views,
            "started": self.started,
        }
        atomic_write_text(self.path, json.dumps(info))

    def plan(self, windows: int, views: int) -> None:
        self.windows, self.views, self.total = windows, views, windows * views
        self.write("segmenting")

    def pre_hook(self, *_: object) -> None:
        if self.started is None:
            self.started = time.time()

    def hook(self, *_: object) -> None:
        self.done += 1
        self.write("segmenting" if self.done < self.total else "post-processing")


def run(job_dir: Path) -> dict[str, float]:
    """Segment ``job_dir/image.npy`` with ``job.json``'s model; writes ``labels.npy``; returns the timings."""
    from glandseg_core.segment import load_segmenter

    (job_dir / "worker.pid").write_text(
        f"{os.getpid()}\n"
    )  # who works on this job (for tests and admins)
    progress = Progress(job_dir)
    progress.write("loading")
    job = json.loads((job_dir / "job.json").read_text())
    image = np.load(job_dir / "image.npy")
    segmenter = load_segmenter(job["model_dir"], tta=bool(job.get("tta")), device=job.get("device"))
    mpp = job.get("mpp")
    model = getattr(segmenter, "model", None)
    if model is not None:  # a fusion folder has two networks: no step count, the phase only
        progress.plan(*planned_passes(segmenter, working_shape(segmenter, image.shape[:2], mpp)))
        # the Mask R-CNN's large windows call the backbone, not the model (segment/native.py): count those
        counted = getattr(model, "backbone", model)
        counted.register_forward_pre_hook(progress.pre_hook)
        counted.register_forward_hook(progress.hook)
    t0 = time.perf_counter()
    if mpp:
        from glandseg_core.slides.resample import segment_at_mpp

        out = segment_at_mpp(segmenter, image, float(mpp))
    else:
        out = segmenter(image)
    labels = np.asarray(out, dtype=np.int32)
    seconds = time.perf_counter() - t0
    np.save(job_dir / "labels.tmp.npy", labels)
    (job_dir / "labels.tmp.npy").replace(job_dir / "labels.npy")
    peak = psutil.Process().memory_info().rss
    if hasattr(os, "wait4"):  # ru_maxrss: the true peak (KiB on Linux)
        import resource

        peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20}


def main(argv: list[str] | None = None) -> int:
    """Entry point: one job folder, from the command line or (a spare worker) from stdin."""
    args = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if args:
        job_dir = Path(args[0])
    else:
        import glandseg_core.segment  # noqa: F401  the slow imports, done before the job arrives

        line = sys.stdin.readline().strip()
        if not line:
            return 0  # the dashboard closed our stdin: no job
        job_dir = Path(line)
    try:
        result = run(job_dir)
    except Exception as e:  # noqa: BLE001  every failure is reported to the dashboard as one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        atomic_write_text(job_dir / "error.json", json.dumps({"error": first[:400]}))
        return 1
    atomic_write_text(job_dir / "result.json", json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
