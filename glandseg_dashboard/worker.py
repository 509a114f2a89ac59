"""The child process that segments one image for the dashboard: ``python -m glandseg_dashboard.worker [JOB_DIR]``.

Without ``JOB_DIR`` the worker imports torch and the segmenters first, then reads the job folder's path from
its stdin: the dashboard keeps one such spare ready so that a job does not wait for the imports (seconds).

``JOB_DIR`` holds ``job.json`` (``{"model_dir", "tta", "mpp", "memory_bytes"}``; ``mpp``, the image's µm per pixel,
is optional: the image is then segmented at the model's pixel size; ``memory_bytes``, optional, is the budget the
segmenter's own plan is checked against before anything is allocated, :mod:`glandseg_core.memory`) and ``image.npy`` (uint8[H, W, 3]). The worker loads the
segmenter, segments the image and writes ``labels.npy`` (int32[H, W], 0=background, 1..N glands) and
``result.json`` (``{"seconds", "peak_rss_mb"}``), or ``error.json`` (``{"error": one line}``) and exits with 1.

Progress: ``progress.json`` (``{"phase", "done", "total", "views", "windows", "started"}``) is written from the
segmenter's plan (``segmenter.plan(shape, mpp)``: ``total`` = windows x TTA views) and rewritten after every
forward pass from the progress steps the segmenter reports (``segmenter(image, mpp=, progress=)``, the same steps
the CLI's bar draws), so the dashboard can draw the step and the time left. ``phase`` is ``loading``,
``segmenting`` or ``post-processing``; ``started`` is the wall time the first forward pass began.
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
from glandseg_core.progress import Step


def _exit_with_parent(parent: int) -> None:
    """Background check: end this process (exit code 3) once its parent has gone."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent or not psutil.pid_exists(parent):
            os._exit(3)


class JobProgress:
    """Writes a job's ``progress.json`` from the segmenter's progress :class:`~glandseg_core.progress.Step` s."""

    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / "progress.json"
        self.started: float | None = None

    def write(self, phase: str, done: int = 0, total: int = 0, windows: int = 1, views: int = 1) -> None:
        """Replace ``progress.json`` (``phase``: loading, segmenting or post-processing)."""
        info = {
            "phase": phase,
            "done": done,
            "total": total,
            "windows": windows,
            "views": views,
            "started": self.started,
        }
        atomic_write_text(self.path, json.dumps(info))

    def __call__(self, step: Step) -> None:
        """A segmenter's step: ``done`` of ``total`` forward passes (``detail``: windows, views)."""
        if step.phase != "segment":
            return
        if self.started is None:
            self.started = time.time()
        phase = "segmenting" if step.done < step.total else "post-processing"
        windows, views = int(step.detail.get("windows", 1)), int(step.detail.get("views", 1))
        self.write(phase, step.done, step.total, windows, views)


def run(job_dir: Path) -> dict[str, float]:
    """Segment ``job_dir/image.npy`` with ``job.json``'s model; writes ``labels.npy``; returns the timings."""
    from glandseg_core.segmenters import load_segmenter

    (job_dir / "worker.pid").write_text(
        f"{os.getpid()}\n"
    )  # who works on this job (for tests and admins)
    progress = JobProgress(job_dir)
    progress.write("loading")
    job = json.loads((job_dir / "job.json").read_text())
    image = np.load(job_dir / "image.npy")
    segmenter = load_segmenter(job["model_dir"], tta=bool(job.get("tta")), device=job.get("device"))
    mpp = float(job["mpp"]) if job.get("mpp") else None
    if job.get("memory_bytes"):
        from glandseg_core.memory import Budget, check, estimate_segmenter

        est = estimate_segmenter(segmenter, image.shape, mpp)
        if est is not None:
            budget = Budget(int(job["memory_bytes"]), "the dashboard's budget")
            check(est, budget, "the image", mpp, float(segmenter.cfg.data_mpp))
    plan = segmenter.plan(image.shape, mpp)
    progress.write("segmenting", 0, plan.passes, plan.windows, plan.views)
    t0 = time.perf_counter()
    labels = np.asarray(segmenter(image, mpp=mpp, progress=progress), dtype=np.int32)
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
        import glandseg_core.segmenters  # noqa: F401  the slow imports, done before the job arrives

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
