"""Tests for glandseg_dashboard.jobs, glandseg_dashboard.runs and glandseg_dashboard.promote: background training (start, refuse a second, stop, resume, status),
evaluation and promotion. Trainings are tiny U-Nets on the fake GlaS folder, with a private lock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from glandseg_core.errors import ModelError, TrainingBusy
from glandseg_core.segmenters import load_segmenter
from glandseg_core.train.locks import training_lock
from glandseg_dashboard import jobs, runs
from glandseg_dashboard.promote import promote, replaced
from tests.helpers import tiny_unet_config


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
    info = runs.device_info()
    assert info["device"] in ("cpu", "cuda") and info["cpus"] >= 1


def test_start_refused_while_the_lock_is_held(
    quiet_env: Path, tmp_path: Path, shared_fake_glas: Path
) -> None:
    with training_lock(tmp_path / "other"), pytest.raises(TrainingBusy, match="already running"):
        jobs.start_training(tiny_unet_config(), tmp_path / "runs" / "a", data=shared_fake_glas)
    assert not (tmp_path / "runs" / "a").exists()  # nothing written for a refused start


def test_status_of_dead_and_new_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert runs.run_status(run)["status"] == "new"
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
    st = runs.run_status(run)
    assert st["status"] == "dead" and not st["alive"]
    assert list(runs.read_log(run)["epoch"]) == [1]
    assert jobs.stop_training(run) is False
    (run / "config.json").write_text(json.dumps({"model": "unet", "name": "x"}))
    [row] = runs.list_runs(tmp_path)
    assert row["name"] == "run" and row["status"] == "dead" and row["model"] == "unet"


@pytest.mark.slow
def test_train_finish_evaluate_promote(quiet_env: Path, fake_glas_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "tiny"
    cfg = tiny_unet_config(train_epochs=1, train_steps_per_epoch=1)
    pid = jobs.start_training(cfg, run, data=fake_glas_dir, workers=1, time_limit_minutes=10)
    assert pid > 0 and (run / "requested_config.json").is_file()
    assert runs.run_status(run)["status"] in ("starting", "running", "finished")
    wait_for(
        lambda: runs.run_status(run)["status"] not in ("starting", "running"), what="the run to end"
    )
    st = runs.run_status(run)
    assert st["status"] == "finished", (st, (run / "train.out").read_text()[-2000:])
    assert len(runs.read_log(run)) == 1
    assert "--workers 1 --time-limit 10 " in (run / "train.out").read_text()
    [row] = runs.list_runs(run.parent)
    assert row["has_best"] and row["best_val_f1"] is not None and row["epochs"] == 1
    with pytest.raises(FileExistsError):
        jobs.start_training(cfg, run, data=fake_glas_dir)

    jobs.start_evaluation(run, data=fake_glas_dir, splits=("testA",))
    wait_for(lambda: runs.evaluation_status(run)["status"] != "running", what="the evaluation")
    ev = runs.evaluation_status(run)
    assert ev["status"] == "done", (run / "eval.out").read_text()[-2000:]
    assert ev["summary"]["testA"]["n_images"] == 1

    model_dir = tmp_path / "models" / "unet"
    promote(run, model_dir)
    assert {
        "weights.pt",
        "config.json",
        "postprocess.json",
        "metrics.json",
        "per_image.csv",
        "MODEL_CARD.md",
    } <= {p.name for p in model_dir.iterdir()}
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "testA" in card and "# Model card: unet" in card  # glandseg_core.modelcard wrote it
    assert "--workers 1 --time-limit 10" in card  # the command that trained it
    assert load_segmenter(model_dir).kind == "unet"
    with pytest.raises(ModelError, match="confirm"):
        promote(run, model_dir)
    promote(run, model_dir, confirmed=replaced(model_dir))


@pytest.mark.slow
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
    wait_for(lambda: len(runs.read_log(run)) >= 1, what="the first epoch")
    assert runs.run_status(run)["status"] == "running"
    with pytest.raises(TrainingBusy):
        jobs.resume_training(run, data=fake_glas_dir)
    assert jobs.stop_training(run)
    wait_for(lambda: runs.run_status(run)["status"] == "stopped", what="the stop")
    assert (run / "last.pt").is_file()
    wait_for(lambda: not jobs.busy_message(), timeout=30, what="the trainer to exit")

    jobs.resume_training(run, data=fake_glas_dir)
    assert runs.run_status(run)["status"] in ("starting", "running")
    wait_for(lambda: runs.run_status(run)["status"] == "running", what="the resumed run")
    assert jobs.stop_training(run)
    wait_for(lambda: runs.run_status(run)["status"] == "stopped", what="the second stop")
    assert "resume" in (run / "train.out").read_text()


# ------------------------------------------------------------------------- issue #15: items 9 and 1


def test_start_checks_the_data_folder_first_and_writes_nothing(quiet_env: Path, tmp_path: Path) -> None:
    """#15 item 9: a folder that is not GlaS (``/etc``-like) is refused with what is missing; no run folder."""
    not_glas = tmp_path / "etc"
    not_glas.mkdir()
    (not_glas / "passwd").write_text("root:x:0:0\n")
    run = tmp_path / "runs" / "a"
    with pytest.raises(jobs.DatasetError, match="no train_N images"):
        jobs.start_training(tiny_unet_config(), run, data=not_glas)
    with pytest.raises(jobs.DatasetError, match="does not exist"):
        jobs.start_training(tiny_unet_config(), run, data=tmp_path / "nowhere")
    assert not run.exists() and not run.parent.exists()


def test_a_failed_launch_leaves_no_run_folder(
    quiet_env: Path, shared_fake_glas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 item 9: when the trainer cannot be started, the folder made for it goes again."""

    def broken(args: list[str], out: Path) -> int:
        raise OSError("cannot start python")

    monkeypatch.setattr(jobs, "_launch", broken)
    run = tmp_path / "runs" / "a"
    with pytest.raises(OSError, match="cannot start"):
        jobs.start_training(tiny_unet_config(), run, data=shared_fake_glas)
    assert not run.exists()


def test_an_earlier_failed_attempt_can_be_replaced_after_confirmation(
    quiet_env: Path, shared_fake_glas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 items 9 and 1: a run folder left by a start that failed before its first epoch is not a dead end,
    but its files are replaced only when the user confirms them by name."""
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "unet"}))
    (run / "train.out").write_text("error: GlaS folder /etc: no train_N images\n")
    (run / "notes.txt").write_text("mine")
    assert jobs.previous_attempt(run) == ["config.json", "train.out"]
    with pytest.raises(FileExistsError, match=r"config\.json, train\.out; confirm"):
        jobs.start_training(tiny_unet_config(), run, data=shared_fake_glas)
    assert (run / "config.json").is_file()
    monkeypatch.setattr(jobs, "_launch", lambda args, out: 0)
    jobs.start_training(
        tiny_unet_config(), run, data=shared_fake_glas, replace=["config.json", "train.out"]
    )
    assert not (run / "config.json").exists() and (run / "requested_config.json").is_file()
    assert (run / "notes.txt").read_text() == "mine"
    (run / "last.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="resume it"):
        jobs.start_training(
            tiny_unet_config(), run, data=shared_fake_glas, replace=jobs.previous_attempt(run)
        )


def test_promote_names_everything_it_would_replace(untrained_unet_run: Path, tmp_path: Path) -> None:
    """#15 item 1: an existing folder without weights.pt still has config.json and MODEL_CARD.md replaced only
    after a confirmation naming them; another model's scores and predictions never stay behind."""
    target = tmp_path / "models" / "mine"
    (target / "predictions").mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "MODEL_CARD.md").write_text("my notes")
    (target / "keep.txt").write_text("untouched")
    found = replaced(target)
    assert found == ["config.json", "MODEL_CARD.md", "predictions/"]
    with pytest.raises(ModelError, match=r"holds MODEL_CARD\.md, predictions/; confirm"):
        promote(untrained_unet_run, target, confirmed=["config.json"])
    assert (target / "MODEL_CARD.md").read_text() == "my notes" and not (target / "weights.pt").exists()
    promote(untrained_unet_run, target, confirmed=found)
    assert (target / "weights.pt").is_file() and (target / "keep.txt").read_text() == "untouched"
    assert "# Model card: mine" in (target / "MODEL_CARD.md").read_text()
    assert not (target / "predictions").exists()
    assert replaced(tmp_path / "models" / "new") == []


def test_alive_uses_the_command_line(tmp_path: Path) -> None:
    """A pid counts as a glandseg job only while it runs with glandseg_core on its command line (psutil)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "glandseg_core"])
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd (before, its command line is ours)
        while not runs.alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runs.alive(proc.pid) and not runs.alive(proc.pid, marker="something else")
    finally:
        proc.kill()
        proc.wait()
    assert not runs.alive(proc.pid) and not runs.alive(None) and not runs.alive(-1)
