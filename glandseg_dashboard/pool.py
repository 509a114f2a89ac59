"""Warm models for the dashboard: one long-lived worker process per model folder (issue #22, item 1).

A :class:`Pool` (one per server) starts a ``python -m glandseg_dashboard.worker`` process per model folder the first
time that folder is asked for (or ahead, :meth:`Pool.warm`), and gives it every later job: the process keeps the
model loaded, so a job pays only the network's time, not the imports and loading (seconds to tens of seconds on
two busy cores). At most ``MAX_WORKERS`` folders stay warm; asking for another ends the least recently used one.

Reliability, as before warm models (issue #15, item 4):

- **One job at a time** per server (:attr:`Pool.slot`): the memory budget (:mod:`glandseg_dashboard.budget`) is for
  one job, and the worker checks the job against it before it allocates anything.
- **Cancel frees memory at once**: a job that does not finish (the caller's poll raised: Cancel, a changed widget,
  a closed tab) kills its model's worker and reaps it; the next job for that model starts a new one and pays
  the start-up again (:data:`RESTART_NOTE`).
- **A crashed worker** (killed, out of memory) gives one line (:class:`InferenceFailed`), and the next job starts
  a new one.
- **No orphans**: :meth:`Pool.shutdown` runs at the server's exit (``atexit``); a worker also ends by itself when
  its stdin closes or its parent dies (:mod:`glandseg_dashboard.worker`).

No streamlit here.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glandseg_core.errors import ModelError

from .settings import APP_DIR

POLL_S = 0.25
MAX_WORKERS = 2  # model folders kept warm (the Compare page's two roles)
UNTAKEN_RETRIES = 2  # new workers given a job that a dying worker never took (Pool.run)
RESTART_NOTE = (
    "The cancelled model's process was stopped to free its memory; its next run loads it again first."
)


class InferenceFailed(RuntimeError):
    """The worker process died without a result (killed, out of memory); one-line message."""


@dataclass(frozen=True)
class Segmentation:
    """A label map (int32[H, W], 0=background, 1..N glands) and the model's time in seconds."""

    labels: np.ndarray
    seconds: float
    load_seconds: float = 0.0  # loading the model for this job (0: it was warm)
    loads: int = 0  # models the worker process has loaded so far (1 for a warm worker's every job)
    pid: int = 0  # the worker process
    engine: str = ""  # what ran the network (torch, onnx, openvino); "" when not known (a kept result)


class ModelWorker:
    """One worker process for one model folder; ``preload`` loads the model before any job arrives."""

    def __init__(self, model_dir: str, preload: bool = False) -> None:
        self.model_dir = model_dir
        args = ["--preload", model_dir] if preload else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glandseg_dashboard.worker", *args],
            cwd=APP_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if preload else subprocess.DEVNULL,  # "ready" once loaded
            stderr=subprocess.DEVNULL,  # the worker reports in each job's error.json
        )

    def wait_ready(self) -> None:
        """Until a preloading worker has loaded its model (or ended)."""
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdout.readline()
                self.proc.stdout.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, job_dir: Path) -> None:
        """Give the worker a job folder. Raises OSError when it has died."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{job_dir}\n".encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        """End the process now (it holds nothing worth saving) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class Pool:
    """Warm workers keyed by model folder, and the one-job-at-a-time slot (one pool per server process)."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self.slot = threading.Lock()
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._workers: OrderedDict[str, ModelWorker] = OrderedDict()
        atexit.register(self.shutdown)

    def worker(self, model_dir: str, preload: bool = False) -> ModelWorker:
        """The model's live worker, started (the least recently used other one ended) when it has none."""
        with self._lock:
            w = self._workers.pop(model_dir, None)
            if w is not None and not w.alive():
                w.kill()  # reap it
                w = None
            if w is None:
                w = ModelWorker(model_dir, preload=preload)
            self._workers[model_dir] = w
            while len(self._workers) > self.max_workers:
                self._workers.popitem(last=False)[1].kill()
            return w

    def warm(self, model_dirs: list[str]) -> None:
        """Start the workers of ``model_dirs`` and load their models ahead of their first job, one after the
        other (on two cores, loading both at once slows the page being drawn meanwhile the most)."""
        for d in model_dirs[-self.max_workers :]:
            self.worker(d, preload=True).wait_ready()

    def discard(self, model_dir: str, worker: ModelWorker | None = None) -> None:
        """Kill and forget the model's worker (only ``worker`` when given: a newer one is kept)."""
        with self._lock:
            w = self._workers.get(model_dir)
            if w is not None and (worker is None or w is worker):
                del self._workers[model_dir]
        if worker is not None:
            worker.kill()
        elif w is not None:
            w.kill()

    def pids(self) -> dict[str, int]:
        """{model folder: pid} of the live workers."""
        with self._lock:
            return {d: w.pid for d, w in self._workers.items() if w.alive()}

    def shutdown(self) -> None:
        """Kill every worker (at the server's exit)."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), OrderedDict()
        for w in workers:
            w.kill()

    def run(self, model_dir: str, job_dir: Path, poll: Callable[[], None]) -> Segmentation:
        """Run the job in ``job_dir`` on the model's worker, calling ``poll()`` every ``POLL_S`` until it ends.
        A job that does not end with a result or an error (``poll`` raised, the worker died) kills the worker.

        A worker that dies before it took the job (no ``worker.pid`` in ``job_dir``) is replaced and the job given
        to the new one, up to ``UNTAKEN_RETRIES`` times: a worker killed while idle (out of memory, an admin) is not
        reaped at once, and its process looks alive until its last thread has exited, so it can be picked for a job
        it will never run.

        Raises:
            ModelError: the worker's one-line message (bad model folder, image over the budget, ...).
            InferenceFailed: the worker died without a result.
        """
        for attempt in range(UNTAKEN_RETRIES + 1):
            w = self.worker(model_dir)
            if self._wait(model_dir, w, job_dir, poll) or _taken(job_dir) or attempt == UNTAKEN_RETRIES:
                break
        return _outcome(w, job_dir)

    def _wait(self, model_dir: str, w: ModelWorker, job_dir: Path, poll: Callable[[], None]) -> bool:
        """Send the job to ``w`` and poll until it ends (True) or ``w`` died (False: ``w`` killed and reaped)."""
        finished = False
        try:
            with contextlib.suppress(OSError):  # it died since it was picked: seen below
                w.send(job_dir)
            while not (finished := _ended(job_dir)) and w.alive():
                poll()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    w.proc.wait(timeout=POLL_S)
            finished = finished or _ended(job_dir)
            if finished:
                poll()  # the caller sees the job's last progress (all passes done) before its result
        finally:
            if not finished:
                self.discard(model_dir, w)
        return finished


def _taken(job_dir: Path) -> bool:
    """Whether a worker began the job (it writes ``worker.pid`` first)."""
    return (job_dir / "worker.pid").is_file()


def _ended(job_dir: Path) -> bool:
    return (job_dir / "result.json").is_file() or (job_dir / "error.json").is_file()


def _outcome(w: ModelWorker, job_dir: Path) -> Segmentation:
    if (job_dir / "result.json").is_file():
        r = json.loads((job_dir / "result.json").read_text())
        labels = np.load(job_dir / "labels.npy")
        return Segmentation(
            labels,
            float(r["seconds"]),
            float(r["load_seconds"]),
            int(r["loads"]),
            int(r["pid"]),
            str(r.get("engine", "")),
        )
    if (job_dir / "error.json").is_file():
        raise ModelError(json.loads((job_dir / "error.json").read_text())["error"])
    code = w.proc.returncode
    why = "killed: out of memory?" if code is not None and code < 0 else f"exit code {code}"
    raise InferenceFailed(
        f"the process segmenting with {Path(w.model_dir).name} ended without a result ({why}); "
        "the next run starts it again"
    )


Poll = Callable[[float, bool, "dict | None"], None]


def read_progress(job_dir: Path) -> dict | None:
    """The worker's ``progress.json`` (None before it wrote one, or while it is being replaced)."""
    try:
        return json.loads((job_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None


def run_job(
    pool: Pool,
    model_dir: str,
    image: np.ndarray,
    tta: bool,
    poll: Poll,
    *,
    mpp: float | None = None,
    done: Callable[[], Segmentation | None] | None = None,
    memory_bytes: int | None = None,
    engine: str = "auto",
) -> Segmentation:
    """Segment ``image`` with ``model_dir`` on its warm worker; ``poll(elapsed_s, waiting, progress)`` runs every
    ``POLL_S`` while the job waits for its turn (``waiting``) or runs (``progress``: the worker's
    ``progress.json``). Whatever ``poll`` raises stops the job: the worker is killed before the exception goes
    on. ``done()``, asked once the turn has come, may return the result computed meanwhile by another job.
    ``mpp``: the image's µm per pixel (None: the model's own). ``memory_bytes``: the budget the worker checks
    the segmenter's own plan against before it segments. ``engine``: ``load_segmenter``'s (``auto``: the
    fastest installed; the result's ``engine`` says which ran).

    Raises:
        ModelError: the model folder or the image cannot be used (the worker's one-line message).
        InferenceFailed: the worker died without a result.
    """
    t0 = time.monotonic()
    while not pool.slot.acquire(timeout=POLL_S):
        poll(time.monotonic() - t0, True, None)
    try:
        if done is not None and (hit := done()) is not None:
            return hit
        with tempfile.TemporaryDirectory(prefix="glandseg-job-") as tmp:
            job_dir = Path(tmp)
            np.save(job_dir / "image.npy", np.ascontiguousarray(image))
            job = {
                "model_dir": str(model_dir),
                "tta": bool(tta),
                "mpp": mpp,
                "memory_bytes": memory_bytes,
                "engine": engine,
            }
            (job_dir / "job.json").write_text(json.dumps(job))
            return pool.run(
                str(model_dir),
                job_dir,
                lambda: poll(time.monotonic() - t0, False, read_progress(job_dir)),
            )
    finally:
        pool.slot.release()
