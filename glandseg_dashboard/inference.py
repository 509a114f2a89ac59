"""Segmentation for the pages, in a child process that can be cancelled (issue #15, item 4).

Every segmentation runs in its own ``python -m glandseg_dashboard.worker`` process, one at a time per server. The page's
script polls it every quarter second, drawing the elapsed time and a Cancel button; clicking Cancel, leaving
the page or changing a widget stops the script run (Streamlit raises inside the poll), and a ``finally`` kills
the child. A browser session that ends (tab closed) is noticed in the poll as well. When a job ends its process
exits, so its memory goes back to the operating system. A spare worker waits with torch already imported, so a
job does not wait for the imports. Results are kept in a small store shared by all sessions, keyed by model
folder, weights' mtime, TTA, pixel size and the image's digest; those of bundled samples and GlaS images also on
disk (:mod:`glandseg_dashboard.diskcache`), where the samples are computed ahead of the first visit (:func:`warm`).

Progress: the worker rewrites ``progress.json`` in its job folder after each forward pass, from the segmenter's
plan and progress steps (:mod:`glandseg_dashboard.worker`; the CLI's bar is told the same steps); the poll draws it as a progress bar with the step (model, window, TTA view) and the time left.
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

from . import budget, diskcache
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
            [sys.executable, "-m", "glandseg_dashboard.worker", *args],
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


def read_progress(job_dir: Path) -> dict | None:
    """The worker's ``progress.json`` (None before it wrote one, or while it is being replaced)."""
    try:
        return json.loads((job_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None


Poll = Callable[[float, bool, "dict | None"], None]


def run_job(
    model_dir: str,
    image: np.ndarray,
    tta: bool,
    poll: Poll,
    *,
    mpp: float | None = None,
    done: Callable[[], Segmentation | None] | None = None,
    workers: _Workers | None = None,
    memory_bytes: int | None = None,
) -> Segmentation:
    """Segment ``image`` with ``model_dir`` in a worker process; ``poll(elapsed_s, waiting, progress)`` runs
    every ``POLL_S`` while it waits for its turn (``waiting``) or runs (``progress``: the worker's
    ``progress.json``). Whatever ``poll`` raises stops the job: the worker is killed before the exception goes
    on. ``done()``, asked once the turn has come, may return the result computed meanwhile by another job.
    ``memory_bytes``: the budget the worker checks the segmenter's own plan against before it segments.

    Raises:
        ModelError: the model folder or the image cannot be used (the worker's one-line message).
        InferenceFailed: the worker died without a result.
    """
    workers = workers or _workers()
    t0 = time.monotonic()
    while not workers.slot.acquire(timeout=POLL_S):
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
            }
            (job_dir / "job.json").write_text(json.dumps(job))
            proc = workers.start(job_dir)
            try:
                while proc.poll() is None:
                    poll(time.monotonic() - t0, False, read_progress(job_dir))
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


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def describe(elapsed: float, waiting: bool, progress: dict | None, now: float) -> tuple[float, str]:
    """(fraction done, one line: the step and the time left) of a job's poll."""
    if waiting:
        return 0.0, f"waiting for another segmentation to finish ({_duration(elapsed)})"
    phase = (progress or {}).get("phase", "loading")
    if phase == "loading" or not progress or not progress.get("total"):
        return 0.0, f"loading the model ({_duration(elapsed)})"
    done, total, views = int(progress["done"]), int(progress["total"]), max(1, int(progress["views"]))
    if phase == "post-processing" or done >= total:
        return 1.0, f"post-processing the network's output into glands ({_duration(elapsed)})"
    step = [f"window {done // views + 1} of {total // views}"] if total > views else []
    step += [f"TTA view {done % views + 1} of {views}"] if views > 1 else []
    started = progress.get("started")
    if done and started:
        left = f"about {_duration((now - started) / done * (total - done))} left"
    else:
        left = "estimating the time left"
    return done / total, " · ".join([*step, f"{_duration(elapsed)} elapsed, {left}"])


def _poller(box: st.delta_generator.DeltaGenerator, what: str) -> Poll:
    gone_since: list[float] = []

    def poll(elapsed: float, waiting: bool, progress: dict | None = None) -> None:
        if not session_active():
            gone_since.append(time.monotonic())
            if time.monotonic() - gone_since[0] >= GONE_GRACE_S:
                st.stop()  # the browser left: the finally in run_job kills the worker
                raise SessionEnded(f"Segmenting {what}: the browser session ended.")  # if stop() returns
        else:
            gone_since.clear()
        fraction, line = describe(elapsed, waiting, progress, time.time())
        box.progress(fraction, text=f"Segmenting {what}: {line}")

    return poll


def _key(model_dir: str, tta: bool, mpp: float | None, image_id: str) -> tuple:
    return (model_dir, mtime(Path(model_dir) / WEIGHTS), bool(tta), mpp, image_id)


def _kept(key: tuple, persist: bool) -> Segmentation | None:
    if (hit := _store().get(key)) is not None:
        return hit
    if persist and (disk := diskcache.load(key)) is not None:
        _store().put(key, Segmentation(*disk))
        return _store().get(key)
    return None


def _keep(key: tuple, result: Segmentation, persist: bool) -> None:
    _store().put(key, result)
    if persist:
        diskcache.save(key, result.labels, result.seconds)


def kept(
    model_dir: str | Path,
    image: np.ndarray,
    *,
    tta: bool = False,
    mpp: float | None = None,
    persist: bool = False,
) -> Segmentation | None:
    """The kept result of a segmentation, without running one (None when there is none)."""
    return _kept(_key(str(model_dir), tta, mpp, digest(image)), persist)


def cancelled(image: np.ndarray) -> bool:
    """Whether the user cancelled the segmentation of ``image`` (until :func:`offer_again`'s button)."""
    return st.session_state.get("seg_cancelled") == digest(image)


def offer_again(image: np.ndarray, label: str = "Segment again") -> None:
    """A button that clears a cancellation of ``image`` and runs the page again."""
    if st.button(label, key=f"seg_again_{digest(image)}", type="primary"):
        st.session_state.pop("seg_cancelled", None)
        st.rerun()


def warm(name: str, jobs: list[tuple[str, np.ndarray]]) -> bool:
    """Compute (model folder, image) segmentations in the background, once per server process, and keep them
    in memory and on disk; see :mod:`glandseg_dashboard.diskcache`. Returns whether this call started them."""
    store, workers = _store(), _workers()  # fetched in the script thread

    def job(model_dir: str, image: np.ndarray) -> None:
        key = _key(model_dir, False, None, digest(image))
        if _kept(key, True) is None:
            result = run_job(
                model_dir, image, False, lambda *_: None, done=lambda: _kept(key, True), workers=workers
            )
            store.put(key, result)
            diskcache.save(key, result.labels, result.seconds)

    return diskcache.warm(name, [lambda m=m, im=im: job(m, im) for m, im in jobs])


def segment(
    model_dir: str | Path,
    image: np.ndarray,
    *,
    tta: bool = False,
    mpp: float | None = None,
    what: str = "",
    persist: bool = False,
) -> Segmentation:
    """The label map of ``image`` by ``model_dir``: kept result, else a cancellable job drawn on the page as a
    progress bar (step and time left) with a Cancel button.

    Args:
        mpp: the image's µm per pixel (None: the model's own); it is then segmented at the model's pixel size.
        persist: keep the result on disk too (bundled samples and GlaS images; never an upload).

    Raises:
        Cancelled: the user cancelled it (the page may draw :func:`offer_again`).
        ModelError: the model cannot be used. ImageError: the image, resampled to the model's pixel size at
            ``mpp``, would need more than the memory budget (one line saying what would fit).
        InferenceFailed: the worker died without a result.
    """
    model_dir = str(model_dir)
    what = what or Path(model_dir).name
    image_id = digest(image)
    key = _key(model_dir, tta, mpp, image_id)
    if (hit := _kept(key, persist)) is not None:
        return hit
    if st.session_state.get("seg_cancelled") == image_id:
        raise Cancelled(f"Segmenting {what} was cancelled.")
    memory_bytes = budget.check_job(model_dir, image.shape, mpp, tta, what)  # after resampling to mpp
    job = hashlib.blake2b(repr(key).encode(), digest_size=6).hexdigest()
    status = st.empty()
    box = st.empty()
    with box.container():
        if st.button("Cancel", key=f"seg_cancel_{job}", icon=":material/cancel:"):
            st.session_state["seg_cancelled"] = image_id
            box.empty()
            raise Cancelled(f"Segmenting {what} was cancelled.")
    try:
        result = run_job(
            model_dir,
            image,
            tta,
            _poller(status, what),
            mpp=mpp,
            done=lambda: _kept(key, persist),
            memory_bytes=memory_bytes,
        )
    finally:
        status.empty()
        box.empty()
    _keep(key, result, persist)
    return result
