"""A long-lived child process that keeps one model loaded and segments images for the dashboard (issue #22, item 1).

``python -m glandseg_dashboard.worker [--preload MODEL_DIR]``: the process reads job folders' paths from its
stdin, one a line, and runs them one after another with the model it keeps loaded (:class:`Loaded`: loaded once,
again only when the job asks for another folder, TTA or device, or when the folder's files changed). With
``--preload`` the model is loaded before the first job arrives, and the worker says ``ready`` on stdout then. :mod:`glandseg_dashboard.pool` starts one such
worker per model folder, once per server.

A job folder holds ``job.json`` (``{"model_dir", "tta", "mpp", "memory_bytes", "engine"}``; ``engine``, optional, is
``load_segmenter``'s (default ``auto``); ``mpp``, the image's µm per pixel,
is optional: the image is then segmented at the model's pixel size; ``memory_bytes``, optional, is the budget the
segmenter's own plan is checked against before anything is allocated, :mod:`glandseg_core.memory`) and ``image.npy``
(uint8[H, W, 3]). The worker writes ``labels.npy`` (int32[H, W], 0=background, 1..N glands), then ``result.json``
(``{"seconds", "load_seconds", "loads", "pid", "rss_mb", "engine"}``: the model's time, the time spent loading it
for this job (0 when it was loaded already), how many times this process has loaded a model, the engine that ran
the network: ``torch``, ``onnx`` or ``openvino``), or ``error.json``
(``{"error": one line}``), and waits for the next job.

Progress: ``progress.json`` (``{"phase", "done", "total", "views", "windows", "started", "last"}``) is written from the
segmenter's plan (``segmenter.plan(shape, mpp)``: ``total`` = windows x TTA views) and rewritten after every
forward pass from the progress steps the segmenter reports (the same steps the CLI's bar draws). ``phase`` is
``loading``, ``segmenting`` or ``post-processing``; ``started`` is the wall time the first forward pass began and
``last`` the wall time the latest one ended (:func:`glandseg_core.progress.time_left` estimates from them).

The worker ends when its stdin closes (the server closed it or went away) and, checked every second, when its
parent has gone, so an orphan never keeps the CPU or memory. Cancelling a job kills the worker (its memory goes
back to the operating system at once); the pool starts a new one for the next job. No streamlit here.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

if TYPE_CHECKING:
    from glandseg_core.progress import Step
    from glandseg_core.segmenters.base import Segmenter


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (the pool never reads half a file): :func:`glandseg_core.files.atomic_write_text`,
    imported here, not at the top: ``glandseg_core`` brings torch (seconds), and the worker's parent check must
    run from its first second."""
    from glandseg_core.files import atomic_write_text

    atomic_write_text(path, text)


def _exit_with_parent(parent: int) -> None:
    """Background check: end this process (exit code 3) once its parent has gone."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent or not psutil.pid_exists(parent):
            os._exit(3)


def _ready() -> None:
    """Say "ready" on stdout once the model is loaded, then send stdout to /dev/null: nothing else is written
    to a pipe nobody reads."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _give_back_memory() -> None:
    """Return freed heap pages to the operating system (glibc's ``malloc_trim``; nothing elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class JobProgress:
    """Writes a job's ``progress.json`` from the segmenter's progress :class:`~glandseg_core.progress.Step` s."""

    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / "progress.json"
        self.started: float | None = None
        self.last: float | None = None

    def write(self, phase: str, done: int = 0, total: int = 0, windows: int = 1, views: int = 1) -> None:
        """Replace ``progress.json`` (``phase``: loading, segmenting or post-processing)."""
        info = {
            "phase": phase,
            "done": done,
            "total": total,
            "windows": windows,
            "views": views,
            "started": self.started,
            "last": self.last,
        }
        _write(self.path, json.dumps(info))

    def __call__(self, step: Step) -> None:
        """A segmenter's step: ``done`` of ``total`` forward passes (``detail``: windows, views)."""
        if step.phase != "segment":
            return
        now = time.time()
        if self.started is None:
            self.started = now
        if step.done:
            self.last = now
        phase = "segmenting" if step.done < step.total else "post-processing"
        windows, views = step.detail.get("windows", 1), step.detail.get("views", 1)
        self.write(phase, step.done, step.total, _count(windows), _count(views))


def _count(value: object) -> int:
    return value if isinstance(value, int) else 1


def folder_stamp(model_dir: str) -> tuple:
    """(name, mtime, size) of every file in a model folder: a change means the model must be loaded again."""
    folder = Path(model_dir)
    with contextlib.suppress(OSError):
        return tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.iterdir())
            if p.is_file()
        )
    return ()


class Loaded:
    """The one model this process keeps: loaded again only for another folder, TTA, device, engine or changed
    files."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.segmenter: Segmenter | None = None
        self.loads = 0

    def get(
        self, model_dir: str, tta: bool, device: str | None, engine: str = "auto"
    ) -> tuple[Segmenter, float]:
        """(the segmenter, seconds spent loading it now: 0 when it was loaded already)."""
        key = (model_dir, tta, device, engine, folder_stamp(model_dir))
        if self.segmenter is not None and key == self.key:
            return self.segmenter, 0.0
        from glandseg_core.segmenters import load_segmenter

        self.key, self.segmenter = None, None  # the old model's memory goes before the new one comes
        _give_back_memory()
        t0 = time.perf_counter()
        self.segmenter = load_segmenter(model_dir, tta=tta, device=device, engine=engine)
        self.key, self.loads = key, self.loads + 1
        return self.segmenter, time.perf_counter() - t0


def run(job_dir: Path, loaded: Loaded) -> dict[str, Any]:
    """Segment ``job_dir/image.npy`` with ``job.json``'s model; writes ``labels.npy``; returns the timings."""
    (job_dir / "worker.pid").write_text(f"{os.getpid()}\n")  # who works on this job (tests and admins)
    progress = JobProgress(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    model_dir, tta, engine = str(job["model_dir"]), bool(job.get("tta")), job.get("engine") or "auto"
    if loaded.key is None or loaded.key[:4] != (model_dir, tta, job.get("device"), engine):
        progress.write("loading")
    image = np.load(job_dir / "image.npy")
    segmenter, load_s = loaded.get(model_dir, tta, job.get("device"), engine)
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
    rss = psutil.Process().memory_info().rss
    return {
        "seconds": seconds,
        "load_seconds": load_s,
        "loads": loaded.loads,
        "pid": os.getpid(),
        "rss_mb": rss / 2**20,
        "engine": engine_ran(segmenter),
    }


def engine_ran(segmenter: Segmenter) -> str:
    """The engine running the segmenter's network (``torch`` for one without a network of its own)."""
    from glandseg_core.engines import engine_of

    model = getattr(segmenter, "model", None)
    return engine_of(model) if model is not None else "torch"


def serve(lines: Any, loaded: Loaded) -> int:
    """Run the job folders read from ``lines`` (one path a line) until they end; returns the exit code."""
    for line in lines:
        job_dir = Path(line.strip())
        if not line.strip():
            continue
        try:
            result = run(job_dir, loaded)
        except Exception as e:  # noqa: BLE001  every failure is reported to the dashboard as one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            with contextlib.suppress(OSError):  # the job's folder may be gone (cancelled)
                _write(job_dir / "error.json", json.dumps({"error": first[:400]}))
        else:
            with contextlib.suppress(OSError):
                _write(job_dir / "result.json", json.dumps(result))
        _give_back_memory()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``[--preload MODEL_DIR]``, then job folders from stdin."""
    args = sys.argv[1:] if argv is None else argv
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    loaded = Loaded()
    if args[:1] == ["--preload"] and len(args) == 2:
        with contextlib.suppress(Exception):  # a broken folder is reported by its first job
            loaded.get(args[1], False, None)
        _ready()
    elif args:
        print(
            f"usage: python -m glandseg_dashboard.worker [--preload MODEL_DIR]; got {args}",
            file=sys.stderr,
        )
        return 2
    return serve(sys.stdin, loaded)


if __name__ == "__main__":
    sys.exit(main())
