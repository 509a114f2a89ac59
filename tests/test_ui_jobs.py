"""Tests for glandseg_core.jobs: background training (start, refuse a second, stop, resume, status), evaluation
and promotion. Trainings are tiny U-Nets on the fake GlaS folder, with a private lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers import tiny_unet_config

from glandseg_core import jobs
from glandseg_core.infer import ModelError, load_run
from glandseg_core.locks import TrainingBusy, training_lock


@pytest.fixture
def quiet_env(lock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores, other jobs running
    return lock_dir


def wait_for(cond: Callable[[], bool], timeout: float = 180.0, what: str = "") -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_device_info_names_the_device() -> None:
    info = jobs.device_info()
    assert info["device"] in ("cpu", "cuda") and info["cpus"] >= 1


def test_start_refused_while_the_lock_is_held(quiet_env: Path, tmp_path: Path) -> None:
    with training_lock(tmp_path / "other"), pytest.raises(TrainingBusy, match="already running"):
        jobs.start_training(tiny_unet_config(), tmp_path / "runs" / "a")
    assert not (tmp_path / "runs" / "a").exists()  # nothing written for a refused start


def test_status_of_dead_and_new_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert jobs.run_status(run)["status"] == "new"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(done.stdout)
    (run / "progress.json").write_text(
        json.dumps({"status": "running", "pid": dead_pid, "epoch": 2, "time": time.time()})
    )
    (run / "log.jsonl").write_text(
        '{"epoch": 1, "train_loss": 1.0}\n{"epoch": 2, "train_lo'
    )  # torn last line
    st = jobs.run_status(run)
    assert st["status"] == "dead" and not st["alive"]
    assert list(jobs.read_log(run)["epoch"]) == [1]
    assert jobs.stop_training(run) is False
    (run / "config.json").write_text(json.dumps({"model": "unet", "name": "x"}))
    [row] = jobs.list_runs(tmp_path)
    assert row["name"] == "run" and row["status"] == "dead" and row["model"] == "unet"


def test_train_finish_evaluate_promote(quiet_env: Path, fake_glas_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "tiny"
    cfg = tiny_unet_config(train_epochs=1, train_steps_per_epoch=1)
    pid = jobs.start_training(cfg, run, data=fake_glas_dir, workers=1, time_limit_minutes=10)
    assert pid > 0 and (run / "requested_config.json").is_file()
    assert jobs.run_status(run)["status"] in ("starting", "running", "finished")
    wait_for(
        lambda: jobs.run_status(run)["status"] not in ("starting", "running"), what="the run to end"
    )
    st = jobs.run_status(run)
    assert st["status"] == "finished", (st, (run / "train.out").read_text()[-2000:])
    assert len(jobs.read_log(run)) == 1
    assert "--workers 1 --time-limit 10 " in (run / "train.out").read_text()
    [row] = jobs.list_runs(run.parent)
    assert row["has_best"] and row["best_val_f1"] is not None and row["epochs"] == 1
    with pytest.raises(FileExistsError):
        jobs.start_training(cfg, run, data=fake_glas_dir)

    jobs.start_evaluation(run, data=fake_glas_dir, splits=("testA",))
    wait_for(lambda: jobs.evaluation_status(run)["status"] != "running", what="the evaluation")
    ev = jobs.evaluation_status(run)
    assert ev["status"] == "done", (run / "eval.out").read_text()[-2000:]
    assert ev["summary"]["testA"]["n_images"] == 1

    model_dir = tmp_path / "models" / "unet"
    jobs.promote(run, model_dir)
    assert {
        "weights.pt",
        "config.json",
        "postprocess.json",
        "metrics.json",
        "per_image.csv",
        "MODEL_CARD.md",
    } <= {p.name for p in model_dir.iterdir()}
    assert "testA" in (model_dir / "MODEL_CARD.md").read_text()
    assert load_run(model_dir).kind == "unet"
    with pytest.raises(ModelError, match="confirm"):
        jobs.promote(run, model_dir)
    jobs.promote(run, model_dir, overwrite=True)


def test_second_start_refused_then_stop_and_resume(
    quiet_env: Path, fake_glas_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "runs" / "long"
    jobs.start_training(
        tiny_unet_config(train_epochs=200, train_steps_per_epoch=2), run, data=fake_glas_dir
    )
    # refused at once, even before the trainer has taken the lock
    with pytest.raises(TrainingBusy, match="(starting|already running)"):
        jobs.start_training(tiny_unet_config(), tmp_path / "runs" / "second", data=fake_glas_dir)
    assert jobs.busy_message()
    wait_for(lambda: len(jobs.read_log(run)) >= 1, what="the first epoch")
    assert jobs.run_status(run)["status"] == "running"
    with pytest.raises(TrainingBusy):
        jobs.resume_training(run, data=fake_glas_dir)
    assert jobs.stop_training(run)
    wait_for(lambda: jobs.run_status(run)["status"] == "stopped", what="the stop")
    assert (run / "last.pt").is_file()
    wait_for(lambda: not jobs.busy_message(), timeout=30, what="the trainer to exit")

    jobs.resume_training(run, data=fake_glas_dir)
    assert jobs.run_status(run)["status"] in ("starting", "running")
    wait_for(lambda: jobs.run_status(run)["status"] == "running", what="the resumed run")
    assert jobs.stop_training(run)
    wait_for(lambda: jobs.run_status(run)["status"] == "stopped", what="the second stop")
    assert "resume" in (run / "train.out").read_text()
