"""Segmentation for the pages, on warm worker processes that can be cancelled (issues #15 item 4, #22 item 1).

Each model folder has a long-lived worker process that keeps its model loaded (:mod:`glandseg_dashboard.pool`,
one pool per server, shared by all sessions): a job pays the network's time only. Jobs run one at a time per
server. The page's script polls the job every quarter second, drawing a progress bar and a Cancel button;
clicking Cancel, leaving the page or changing a widget stops the script run (Streamlit raises inside the poll),
and the pool kills that model's worker, so the job's memory goes back to the operating system at once; the next
job for that model starts a new worker and loads the model again (said under the Cancel's "run again" button).
A browser session that ends (tab closed) is noticed in the poll as well. Results are kept in a small store
shared by all sessions, keyed by model folder, weights' mtime, TTA, pixel size and the image's digest; those of
bundled samples and GlaS images also on disk (:mod:`glandseg_dashboard.diskcache`), and the bundled samples'
results ship with the repository (:mod:`glandseg_dashboard.shipped`), so a first visit shows them at once.

Progress: the worker rewrites ``progress.json`` in its job folder after each forward pass (:mod:`glandseg_dashboard.worker`);
the poll draws it as a progress bar with the step (model, window, TTA view) and the time left, estimated from
the finished forward passes (:func:`glandseg_core.progress.time_left`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import streamlit as st

from glandseg_core.progress import time_left

from . import budget, diskcache, pool, shipped
from .pool import InferenceFailed, Poll, Segmentation, read_progress  # noqa: F401  re-exported for the pages

POLL_S = pool.POLL_S
GONE_GRACE_S = 5.0  # a session without a browser for this long is over (a reconnect takes less)
digest = diskcache.digest


class Cancelled(Exception):
    """The user cancelled this segmentation; the page shows a button to run it again."""


class SessionEnded(Exception):
    """The browser session of this script run has gone; the run ends (pages do not catch this)."""


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


@st.cache_resource
def _store() -> _Store:
    return _Store()


@st.cache_resource
def _pool() -> pool.Pool:
    """The server's warm workers (one per model folder; shut down with the server)."""
    return pool.Pool()


def clear() -> None:
    """Forget every kept segmentation (after a model folder changed)."""
    _store().clear()


def run_job(
    model_dir: str,
    image: np.ndarray,
    tta: bool,
    poll: Poll,
    *,
    mpp: float | None = None,
    done=None,
    workers: pool.Pool | None = None,
    memory_bytes: int | None = None,
) -> Segmentation:
    """:func:`glandseg_dashboard.pool.run_job` on the server's pool (or ``workers``)."""
    return pool.run_job(
        workers or _pool(), model_dir, image, tta, poll, mpp=mpp, done=done, memory_bytes=memory_bytes
    )


def session_active() -> bool:
    """False once this script's browser session has disconnected (True outside a Streamlit server)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return True
    return Runtime.instance().is_active_session(ctx.session_id)


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
    seconds = time_left(started, progress.get("last"), done, total, now) if started else None
    left = (
        "estimating the time left" if seconds is None else f"about {_duration(max(1.0, seconds))} left"
    )
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


_key = diskcache.key


def _on_disk(key: tuple) -> tuple[np.ndarray, float] | None:
    """A kept result on disk: the cache's, else (no TTA, the model's pixel size) a shipped sample's."""
    if (disk := diskcache.load(key)) is not None:
        return disk
    model_dir, _, tta, mpp, image_id = key
    return shipped.load(model_dir, image_id) if not tta and mpp is None else None


def _kept(key: tuple, persist: bool) -> Segmentation | None:
    if (hit := _store().get(key)) is not None:
        return hit
    if persist and (disk := _on_disk(key)) is not None:
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
    """A button that clears a cancellation of ``image`` and runs the page again, and why a rerun starts slower."""
    if st.button(label, key=f"seg_again_{digest(image)}", type="primary"):
        st.session_state.pop("seg_cancelled", None)
        st.rerun()
    st.caption(pool.RESTART_NOTE)


def warm(name: str, jobs: list[tuple[str, np.ndarray]]) -> bool:
    """Once per server process and ``name``, in the background: start the warm workers of the jobs' model
    folders (their models loaded ahead of the first request), then compute the (model folder, image)
    segmentations not kept yet (shipped, or on disk) and keep them in memory and on disk; see
    :mod:`glandseg_dashboard.diskcache`. Returns whether this call started them."""
    store, workers = _store(), _pool()  # fetched in the script thread
    folders = list(dict.fromkeys(m for m, _ in jobs))

    def job(model_dir: str, image: np.ndarray) -> None:
        key = _key(model_dir, False, None, digest(image))
        if _kept(key, True) is None:
            result = run_job(
                model_dir, image, False, lambda *_: None, done=lambda: _kept(key, True), workers=workers
            )
            store.put(key, result)
            diskcache.save(key, result.labels, result.seconds)

    return diskcache.warm(
        name, [lambda: workers.warm(folders), *(lambda m=m, im=im: job(m, im) for m, im in jobs)]
    )


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
