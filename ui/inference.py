"""Segmentation for the pages, in a child process that can be cancelled (issue #15, item 4).

Every segmentation runs in its own ``python -m ui.worker`` process, one at a time per server. The page's
script polls it every quarter second, drawing the elapsed time and a Cancel button; clicking Cancel, leaving
the page or changing a widget stops the script run (Streamlit raises inside the poll), and a ``finally`` kills
the child. A browser session that ends (tab closed) is noticed in the poll as well. When a job ends its process
exits, so its memory goes back to the operating system. A spare worker waits with torch already imported, so a
job does not wait for the imports. Results are kept in a small store shared by all sessions, keyed by model
folder, weights' mtime, TTA and the image's digest.
"""

from __future__ import annotations

import contextlib
import hashlib
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
import streamlit as st

from glandseg_core.checkpoints import WEIGHTS
from glandseg_core.errors import ModelError

from . import budget
from .settings import APP_DIR, mtime

POLL_S = 0.25
GONE_GRACE_S = 5.0  # a session without a browser for this long is over (a reconnect takes less)


class InferenceFailed(RuntimeError):
    """The worker process died without a result (killed, out of memory); one-line message."""


class Cancelled(Exception):
    """The user cancelled this segmentation; the page shows a button to run it again."""


class SessionEnded(Exception):
    """The browser session of this script run has gone; the run ends (pages do not catch this)."""


@dataclass(frozen=True)
class Segmentation:
    """A label map (int32[H, W], 0=background, 1..N glands) and the model's time in seconds."""

    labels: np.ndarray
    seconds: float


class _Store:
    """A small LRU of finished segmentations, shared by all sessions (a cache resource, thread-safe): callers
    never change a returned label map in place."""

    def __init__(self, max_items: int = 24) -> None:
        self._items: OrderedDict[tuple, Segmentation] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_items

    def get(self, key: tuple) -> Segmentation | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple, value: Segmentation) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class _Workers:
    """One job at a time, and one spare worker with its imports done (a cache resource)."""

    def __init__(self) -> None:
        self.slot = threading.Lock()
        self._spare: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "ui.worker", *args],
            cwd=APP_DIR,
            stdin=subprocess.PIPE if not args else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # the worker reports in error.json
        )

    def start(self, job_dir: Path) -> subprocess.Popen:
        """A worker given ``job_dir``: the spare when it is alive, else a new one; a new spare is made."""
        with self._lock:
            proc, self._spare = self._spare, None
            if proc is None or proc.poll() is not None:
                proc = self._spawn()
            self._spare = self._spawn()
        try:
            assert proc.stdin is not None
            proc.stdin.write(f"{job_dir}\n".encode())
            proc.stdin.close()
        except OSError:  # the spare died meanwhile: a worker of its own
            kill(proc)
            proc = self._spawn(str(job_dir))
        return proc


@st.cache_resource
def _store() -> _Store:
    return _Store()


@st.cache_resource
def _workers() -> _Workers:
    return _Workers()


def clear() -> None:
    """Forget every kept segmentation (after a model folder changed)."""
    _store().clear()


def kill(proc: subprocess.Popen) -> None:
    """End a worker now (it holds nothing worth saving) and reap it."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _outcome(proc: subprocess.Popen, job_dir: Path) -> Segmentation:
    if (job_dir / "result.json").is_file():
        result = json.loads((job_dir / "result.json").read_text())
        return Segmentation(np.load(job_dir / "labels.npy"), float(result["seconds"]))
    if (job_dir / "error.json").is_file():
        raise ModelError(json.loads((job_dir / "error.json").read_text())["error"])
    code = proc.returncode
    why = "killed: out of memory?" if code is not None and code < 0 else f"exit code {code}"
    raise InferenceFailed(f"the segmentation process ended without a result ({why})")


def run_job(
    model_dir: str, image: np.ndarray, tta: bool, poll: Callable[[float, bool], None]
) -> Segmentation:
    """Segment ``image`` with ``model_dir`` in a worker process; ``poll(elapsed_s, waiting)`` runs every
    ``POLL_S`` while it waits for its turn (``waiting``) or runs. Whatever ``poll`` raises stops the job: the
    worker is killed before the exception goes on.

    Raises:
        ModelError: the model folder or the image cannot be used (the worker's one-line message).
        InferenceFailed: the worker died without a result.
    """
    workers = _workers()
    t0 = time.monotonic()
    while not workers.slot.acquire(timeout=POLL_S):
        poll(time.monotonic() - t0, True)
    try:
        with tempfile.TemporaryDirectory(prefix="glandseg-job-") as tmp:
            job_dir = Path(tmp)
            np.save(job_dir / "image.npy", np.ascontiguousarray(image))
            (job_dir / "job.json").write_text(
                json.dumps({"model_dir": str(model_dir), "tta": bool(tta)})
            )
            proc = workers.start(job_dir)
            try:
                while proc.poll() is None:
                    poll(time.monotonic() - t0, False)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=POLL_S)
            finally:
                kill(proc)
            return _outcome(proc, job_dir)
    finally:
        workers.slot.release()


def session_active() -> bool:
    """False once this script's browser session has disconnected (True outside a Streamlit server)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return True
    return Runtime.instance().is_active_session(ctx.session_id)


def digest(image: np.ndarray) -> str:
    """A short content hash of an image (part of the result key)."""
    h = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=12)
    h.update(repr(image.shape).encode())
    return h.hexdigest()


def _poller(box: st.delta_generator.DeltaGenerator, what: str) -> Callable[[float, bool], None]:
    gone_since: list[float] = []

    def poll(elapsed: float, waiting: bool) -> None:
        if not session_active():
            gone_since.append(time.monotonic())
            if time.monotonic() - gone_since[0] >= GONE_GRACE_S:
                st.stop()  # the browser left: the finally in run_job kills the worker
                raise SessionEnded(f"Segmenting {what}: the browser session ended.")  # if stop() returns
        else:
            gone_since.clear()
        state = "waiting for another segmentation to finish" if waiting else "running"
        box.caption(f"Segmenting {what}… {elapsed:.0f} s ({state}; Cancel stops it)")

    return poll


def segment(
    model_dir: str | Path, image: np.ndarray, *, tta: bool = False, what: str = ""
) -> Segmentation:
    """The label map of ``image`` by ``model_dir``: kept result, else a cancellable job drawn on the page.

    Raises:
        Cancelled: the user cancelled it (a "Segment again" button is drawn in its place).
        ModelError: the model cannot be used, or the image is above the pixel budget.
        InferenceFailed: the worker died without a result.
    """
    model_dir = str(model_dir)
    what = what or Path(model_dir).name
    image_id = digest(image)
    key = (model_dir, mtime(Path(model_dir) / WEIGHTS), bool(tta), image_id)
    if (hit := _store().get(key)) is not None:
        return hit
    job = hashlib.blake2b(repr(key).encode(), digest_size=6).hexdigest()
    if st.session_state.get("seg_cancelled") == image_id:
        if not st.button(f"Segment {what} again", key=f"seg_again_{job}"):
            raise Cancelled(f"Segmenting {what} was cancelled.")
        del st.session_state["seg_cancelled"]
    kind = budget.model_kind(model_dir)
    limit = budget.current_budget().max_pixels(kind, tta)
    if image.shape[0] * image.shape[1] > limit:
        raise ModelError(
            f"{image.shape[1]}×{image.shape[0]} px is above this machine's budget of {limit:,} px"
        )
    box = st.empty()
    with box.container():
        if st.button("Cancel", key=f"seg_cancel_{job}"):
            st.session_state["seg_cancelled"] = image_id
            box.empty()
            raise Cancelled(f"Segmenting {what} was cancelled.")
    status = st.empty()
    try:
        result = run_job(model_dir, image, tta, _poller(status, what))
    finally:
        status.empty()
        box.empty()
    _store().put(key, result)
    return result
