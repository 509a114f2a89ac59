"""Tests for ui.inference and ui.worker: segmentation in a child process that can be cancelled, stops when the
browser session ends and gives its memory back when it ends (issue #15, item 4)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from glandseg_core.errors import ModelError
from glandseg_core.io import read_image
from tests.helpers import REPO
from tests.test_app import make_tiny_models
from ui import inference


class Stop(Exception):
    """Stands for the exception Streamlit raises in a script run that is stopped or rerun."""


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen]]:
    """Every job's worker process, as started."""
    started: list[subprocess.Popen] = []
    pool = inference._workers()
    real = pool.start

    def start(job_dir: Path) -> subprocess.Popen:
        started.append(real(job_dir))
        return started[-1]

    monkeypatch.setattr(pool, "start", start)
    yield started


def sample() -> np.ndarray:
    return read_image(REPO / "samples" / "testA_1.png")[:256, :320]


def test_a_job_runs_in_a_child_that_exits(tiny_models: Path, workers: list[subprocess.Popen]) -> None:
    polls: list[tuple[float, bool]] = []
    result = inference.run_job(
        str(tiny_models / "unet"), sample(), False, lambda t, w: polls.append((t, w))
    )
    assert result.labels.shape == (256, 320) and result.labels.dtype == np.int32 and result.seconds > 0
    [proc] = workers
    assert proc.returncode == 0 and not psutil.pid_exists(proc.pid)  # its memory went back with it
    assert polls and all(not waiting for _, waiting in polls)


def test_cancel_kills_the_worker_and_frees_the_slot(
    tiny_models: Path, workers: list[subprocess.Popen]
) -> None:
    def cancel(elapsed: float, waiting: bool) -> None:
        raise Stop

    with pytest.raises(Stop):
        inference.run_job(str(tiny_models / "maskrcnn"), sample(), True, cancel)
    [proc] = workers
    assert proc.returncode is not None and proc.returncode < 0  # killed, not finished
    assert not psutil.pid_exists(proc.pid)
    assert inference._workers().slot.acquire(timeout=0)  # the next job may run
    inference._workers().slot.release()


def test_a_closed_browser_session_stops_the_job(
    tiny_models: Path, workers: list[subprocess.Popen], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "session_active", lambda: False)
    monkeypatch.setattr(inference, "GONE_GRACE_S", 0.0)

    class Box:
        def caption(self, text: str) -> None:
            raise AssertionError("no progress is drawn for a session that has gone")

    with pytest.raises(inference.SessionEnded, match="browser session ended"):
        inference.run_job(str(tiny_models / "unet"), sample(), False, inference._poller(Box(), "x"))
    [proc] = workers
    assert proc.returncode is not None and not psutil.pid_exists(proc.pid)


def test_a_broken_model_folder_is_one_line(tmp_path: Path, workers: list[subprocess.Popen]) -> None:
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError) as info:
        inference.run_job(str(tmp_path), sample(), False, lambda t, w: None)
    assert "\n" not in str(info.value) and "weights.pt" in str(info.value)
