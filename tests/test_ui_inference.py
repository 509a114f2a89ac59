"""Tests for glandseg_dashboard.inference: segmentation on a warm child process that can be cancelled (killed, its
memory with it), stops when the browser session ends (issue #15, item 4; #22 item 1). The pool itself:
tests/test_dashboard_pool.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from glandseg_core.errors import ModelError
from glandseg_core.imaging.io import read_image
from glandseg_dashboard import inference, pool
from tests.helpers import REPO
from tests.test_app import make_tiny_models


class Stop(Exception):
    """Stands for the exception Streamlit raises in a script run that is stopped or rerun."""


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[pool.Pool]:
    """A pool of warm workers of its own (the server's one in ``inference._pool``), shut down after the test."""
    own = pool.Pool()
    monkeypatch.setattr(inference, "_pool", lambda: own)
    yield own
    own.shutdown()


def sample() -> np.ndarray:
    return read_image(REPO / "samples" / "testA_1.png")[:256, :320]


@pytest.mark.slow
def test_a_job_runs_in_a_warm_child_that_stays(tiny_models: Path, workers: pool.Pool) -> None:
    polls: list[tuple[float, bool, dict | None]] = []
    result = inference.run_job(
        str(tiny_models / "unet"), sample(), False, lambda t, w, p: polls.append((t, w, p))
    )
    assert result.labels.shape == (256, 320) and result.labels.dtype == np.int32 and result.seconds > 0
    assert psutil.pid_exists(result.pid) and workers.pids() == {str(tiny_models / "unet"): result.pid}
    assert polls and all(not waiting for _, waiting, _ in polls)


def test_cancel_kills_the_worker_and_frees_the_slot(tiny_models: Path, workers: pool.Pool) -> None:
    def cancel(elapsed: float, waiting: bool, progress: dict | None) -> None:
        raise Stop

    with pytest.raises(Stop):
        inference.run_job(str(tiny_models / "maskrcnn"), sample(), True, cancel)
    assert workers.pids() == {}  # killed and forgotten: its memory went with it
    assert workers.slot.acquire(timeout=0)  # the next job may run
    workers.slot.release()


def test_a_closed_browser_session_stops_the_job(
    tiny_models: Path, workers: pool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "session_active", lambda: False)
    monkeypatch.setattr(inference, "GONE_GRACE_S", 0.0)

    class Box:
        def progress(self, fraction: float, text: str) -> None:
            raise AssertionError("no progress is drawn for a session that has gone")

    with pytest.raises(inference.SessionEnded, match="browser session ended"):
        inference.run_job(str(tiny_models / "unet"), sample(), False, inference._poller(Box(), "x"))
    assert workers.pids() == {}


@pytest.mark.slow
def test_a_broken_model_folder_is_one_line(tmp_path: Path, workers: pool.Pool) -> None:
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError) as info:
        inference.run_job(str(tmp_path), sample(), False, lambda *_: None)
    assert "\n" not in str(info.value) and "weights.pt" in str(info.value)


@pytest.mark.slow
def test_the_worker_reports_each_forward_pass_and_the_poll_draws_it(
    tiny_models: Path, workers: pool.Pool
) -> None:
    """#14: progress with the step (window, TTA view) and the time left, from the worker's progress.json."""
    seen: list[dict] = []

    def poll(elapsed: float, waiting: bool, progress: dict | None) -> None:
        if progress and (not seen or progress != seen[-1]):
            seen.append(progress)

    # 4 windows of up to 2048 px (2 x 2, evenly spaced, at the training scale)
    image = np.tile(read_image(REPO / "samples" / "testA_1.png"), (5, 3, 1))[:2300, :2300]
    result = inference.run_job(str(tiny_models / "maskrcnn"), image, False, poll)
    assert result.labels.shape == (2300, 2300)
    last = seen[-1]
    assert last["views"] == 1 and last["windows"] == 4 and last["total"] == 4
    assert last["done"] == 4 and last["phase"] == "post-processing"
    dones = [p["done"] for p in seen]
    assert dones == sorted(dones) and len(set(dones)) >= 3  # seen while it ran, in order
    seen.clear()
    inference.run_job(str(tiny_models / "unet"), sample(), True, poll)  # TTA: 8 views of one window
    assert seen[-1]["views"] == 8 and seen[-1]["total"] == 8 and seen[-1]["done"] == 8


def test_describe_names_the_step_and_the_time_left() -> None:
    p = {
        "phase": "segmenting",
        "done": 10,
        "total": 72,
        "views": 8,
        "windows": 9,
        "started": 100.0,
        "last": 120.0,
    }
    fraction, line = inference.describe(25.0, False, p, now=121.0)
    assert fraction == pytest.approx(10 / 72)
    # 2 s per finished pass: 61 passes after this one, and 1 s left of this one
    assert "window 2 of 9" in line and "TTA view 3 of 8" in line and "about 2 min left" in line
    assert "about 2 min left" in inference.describe(25.0, False, {**p, "total": 70}, now=121.0)[1]
    assert "about 7 s left" in inference.describe(25.0, False, {**p, "total": 14}, now=121.0)[1]
    assert "waiting" in inference.describe(3.0, True, None, 0.0)[1]
    assert "loading" in inference.describe(1.0, False, None, 0.0)[1]
    p1 = {**p, "done": 0, "total": 1, "views": 1, "windows": 1, "started": None, "last": None}
    assert inference.describe(2.0, False, p1, 0.0) == (0.0, "2 s elapsed, estimating the time left")
    assert inference.describe(2.0, False, {**p, "done": 72}, 0.0)[0] == 1.0


def test_the_disk_cache_keeps_a_result_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glandseg_dashboard import diskcache

    monkeypatch.setenv("GLANDSEG_CACHE", str(tmp_path))
    key = ("models/unet", 12.5, False, None, "abc")
    assert diskcache.load(key) is None
    labels = np.arange(12, dtype=np.int32).reshape(3, 4)
    diskcache.save(key, labels, 1.5)
    got = diskcache.load(key)
    assert got is not None and (got[0] == labels).all() and got[0].dtype == np.int32 and got[1] == 1.5
    assert (
        diskcache.load(("models/unet", 13.0, False, None, "abc")) is None
    )  # new weights: computed again
    next(diskcache.cache_dir().glob("*.npz")).write_bytes(b"torn")
    assert diskcache.load(key) is None


@pytest.mark.slow
def test_warm_computes_once_per_process_and_keeps_on_disk(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glandseg_dashboard import diskcache

    monkeypatch.setenv("GLANDSEG_CACHE", str(tmp_path))
    own = pool.Pool()
    monkeypatch.setattr(inference, "_pool", lambda: own)
    model = str(tiny_models / "unet")
    assert inference.warm("test-samples", [(model, sample())])
    assert not inference.warm("test-samples", [(model, sample())])
    [thread] = [t for t in threading.enumerate() if t.name == "glandseg-warm-test-samples"]
    thread.join(timeout=300)
    hit = inference.kept(model, sample(), persist=True)
    assert hit is not None and hit.labels.shape == (256, 320)
    assert len(list(diskcache.cache_dir().glob("*.npz"))) == 1
    assert set(own.pids()) == {model}  # its model stays loaded for the first request
    own.shutdown()


@pytest.mark.slow
def test_a_pixel_size_segments_at_the_models_scale_and_answers_at_the_images(
    tiny_models: Path, workers: pool.Pool
) -> None:
    result = inference.run_job(str(tiny_models / "unet"), sample(), False, lambda *_: None, mpp=0.31)
    assert result.labels.shape == (256, 320) and result.labels.dtype == np.int32
