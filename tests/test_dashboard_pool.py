"""Tests for glandseg_dashboard.pool and glandseg_dashboard.worker: warm models (issue #22, item 1).

A model folder's worker loads its model once and serves every later job (loads are counted by the worker);
Cancel kills only that model's worker and the next job starts a new one; a crashed worker is one line and is
restarted; the memory budget still refuses a job before it allocates; workers never outlive their server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from glandseg_core.errors import ModelError
from glandseg_core.imaging.io import read_image
from glandseg_dashboard import pool, worker
from tests.helpers import REPO
from tests.test_app import make_tiny_models


class Stop(Exception):
    """Stands for the exception Streamlit raises in a script run that is stopped (Cancel)."""


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def workers() -> Iterator[pool.Pool]:
    own = pool.Pool()
    yield own
    own.shutdown()


def sample() -> np.ndarray:
    return read_image(REPO / "samples" / "testA_1.png")[:256, :320]


def quiet(*_: object) -> None:
    pass


def gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


class DiesUntaken(pool.ModelWorker):
    """A worker that ends on its first job's line without taking it (no ``worker.pid``): what a worker killed
    while idle looks like when the pool picks it before its process could be reaped (its leader is a zombie
    while its other threads exit, so ``poll()`` still says it runs)."""

    def __init__(self, model_dir: str, preload: bool = False) -> None:
        self.model_dir = model_dir
        code = "import sys; sys.stdin.readline()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def test_warm_worker_reuse_cancel_crash_and_budget(
    tiny_models: Path, workers: pool.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    unet = str(tiny_models / "unet")
    workers.warm([unet])  # started and loaded ahead of the first job (the server's first page run)
    first = pool.run_job(workers, unet, sample(), False, quiet)
    second = pool.run_job(workers, unet, sample()[::-1].copy(), False, quiet)
    assert first.loads == 1 and first.load_seconds == 0  # loaded before the job came
    assert second.pid == first.pid and second.loads == 1 and second.load_seconds == 0  # not loaded again
    assert second.labels.shape == (256, 320) and second.labels.dtype == np.int32

    # the budget still refuses a job before anything is allocated, in one line; the warm model stays
    with pytest.raises(ModelError, match="budget") as info:
        pool.run_job(workers, unet, sample(), False, quiet, memory_bytes=1)
    assert "\n" not in str(info.value) and workers.pids() == {unet: first.pid}

    # Cancel (the poll raises): only this model's worker is killed, within a second, and the slot is free
    def cancel(*_: object) -> None:
        raise Stop

    with pytest.raises(Stop):
        pool.run_job(workers, unet, sample(), True, cancel)
    assert gone(first.pid, 1.0) and workers.pids() == {}
    assert workers.slot.acquire(timeout=0)
    workers.slot.release()
    again = pool.run_job(workers, unet, sample(), False, quiet)  # a new worker pays the start-up again
    assert again.pid != first.pid and again.loads == 1 and again.load_seconds > 0

    # a worker killed while idle (out of memory, an admin): the next job gets a new one. The killed worker is
    # often not reapable yet and looks alive to the pool; and the next one started here dies before it takes
    # the job (DiesUntaken, the same thing made certain): the job goes to a new worker either way
    os.kill(again.pid, signal.SIGKILL)
    assert gone(again.pid, 5.0)
    real, started = pool.ModelWorker, list[pool.ModelWorker]()

    def first_dies(model_dir: str, preload: bool = False) -> pool.ModelWorker:
        started.append((real if started else DiesUntaken)(model_dir, preload))
        return started[-1]

    monkeypatch.setattr(pool, "ModelWorker", first_dies)
    after = pool.run_job(workers, unet, sample(), False, quiet)
    assert [type(w) for w in started] == [DiesUntaken, real] and after.pid == started[1].pid
    assert after.load_seconds > 0  # a new worker (DiesUntaken's untaken job did not end the run)
    assert after.pid != again.pid and (after.labels == again.labels).all()
    assert gone(started[0].pid, 5.0) and workers.pids() == {unet: after.pid}

    # killed during a job (once the worker has taken it: its progress.json is there): one line, and the next
    # job works
    killed: list[int] = []

    def crash(elapsed: float, waiting: bool, progress: dict | None) -> None:
        if progress is not None and not killed:
            os.kill(after.pid, signal.SIGKILL)
            killed.append(after.pid)

    big = np.tile(
        sample(), (8, 8, 1)
    )  # 2048 x 2560: seconds of work, so the kill lands before it ends (polls
    # come every pool.POLL_S, and a GlaS-sized job can end between two of them on an idle machine)
    with pytest.raises(pool.InferenceFailed, match="ended without a result") as failed:
        pool.run_job(workers, unet, big, False, crash)
    assert "\n" not in str(failed.value) and "killed" in str(failed.value) and killed == [after.pid]
    assert pool.run_job(workers, unet, sample(), False, quiet).pid not in (after.pid, again.pid)


def test_the_worker_loads_again_only_when_the_folder_or_its_settings_change(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the worker's model cache (loads counted with a stand-in loader)."""
    import glandseg_core.segmenters as segmenters

    loads: list[tuple[str, bool, str]] = []
    monkeypatch.setattr(
        segmenters,
        "load_segmenter",
        lambda d, tta, device, engine: loads.append((d, tta, engine)) or object(),
    )
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"1")
    loaded = worker.Loaded()
    for tta in (False, False, True, True):
        loaded.get(str(folder), tta, None)
    assert loads == [(str(folder), False, "auto"), (str(folder), True, "auto")] and loaded.loads == 2
    os.utime(folder / "weights.pt", ns=(1, 1))  # new weights (e.g. promoted): loaded again
    _, seconds = loaded.get(str(folder), True, None)
    assert len(loads) == 3 and seconds >= 0
    loaded.get(str(folder), True, None, "torch")  # another engine asked for: loaded again, with it
    loaded.get(str(folder), True, None, "torch")
    assert loads[3:] == [(str(folder), True, "torch")] and loaded.loads == 4


def test_the_workers_files_are_written_by_the_core_atomic_writer(tmp_path: Path) -> None:
    """progress.json is replaced whole, leaves no temporary file, and a failed write names the file itself."""
    progress = worker.JobProgress(tmp_path)
    progress.write("loading")
    progress.write("segmenting", 1, 4)
    assert json.loads((tmp_path / "progress.json").read_text())["done"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]
    with pytest.raises(OSError) as failed:
        worker.JobProgress(tmp_path / "gone").write("loading")  # the job's folder was removed (a cancel)
    assert failed.value.filename == str(tmp_path / "gone" / "progress.json")


def test_pool_keeps_at_most_max_workers(tmp_path: Path) -> None:
    small = pool.Pool(max_workers=1)
    try:
        a = small.worker(str(tmp_path / "a"))  # no preload: the process waits for jobs, nothing loaded
        b = small.worker(str(tmp_path / "b"))
        assert gone(a.pid, 5.0) and small.pids() == {str(tmp_path / "b"): b.pid}
        assert small.worker(str(tmp_path / "b")) is b  # reused
    finally:
        small.shutdown()
    assert gone(b.pid, 5.0)


PARENT = """
import sys, time
from glandseg_dashboard.pool import Pool
p = Pool()
w = p.worker(sys.argv[1])
print(w.pid, flush=True)
sys.stdin.readline()  # the test has seen the worker
if sys.argv[2] == "exit":
    sys.exit(0)  # atexit ends the worker
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_workers_end_with_their_server(tmp_path: Path, how: str) -> None:
    """No orphans: a server that exits (atexit) or is killed (-9: the worker's stdin closes) takes its workers."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "m"), how],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None and parent.stdin is not None
    pid = int(parent.stdout.readline())
    assert psutil.pid_exists(pid)
    parent.stdin.write("\n")
    parent.stdin.flush()
    if how == "sigkill":
        parent.kill()
    parent.wait(timeout=60)
    assert gone(pid, 5.0), f"the worker {pid} outlived its server ({how})"
