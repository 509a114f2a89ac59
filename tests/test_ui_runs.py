"""Tests for glandseg_dashboard.runs (a run's state with its phase; val and test evaluations with their progress) and the
test-set history that Promote carries into a model folder (issues #14 and #12). No training here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glandseg_core.evaluation import TEST_HISTORY
from glandseg_dashboard import jobs, runs
from glandseg_dashboard.promote import promote, replaced


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_status_carries_the_phase_and_a_stop_before_the_first_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pid = _dead_pid()
    (run / "progress.json").write_text(json.dumps({
        "status": "stopped", "phase": "tune", "unit": "grid points", "done": 7, "total": 54, "epoch": None,
        "epochs": 3, "message": "stopped while tuning post-processing; resume redoes the tuning",
        "time": time.time(), "pid": pid}))  # fmt: skip
    (run / "last.pt").write_bytes(b"x")
    s = runs.run_status(run)
    assert s["status"] == "stopped" and s["phase"] == "tune" and s["done"] == 7 and s["has_last"]
    assert "resume redoes the tuning" in s["message"] and not s["has_best"]
    # a new launch that was stopped while still setting up (no progress written yet): "stopped", not "failed"
    time.sleep(0.05)
    (run / "train.pid").write_text(f"{pid}\n")
    (run / "train.out").write_text(
        "$ python -m glandseg_core train ...\nstopped: stopped while setting up\n"
    )
    s = runs.run_status(run)
    assert s["status"] == "stopped" and s["phase"] is None and s["message"] == "stopped while setting up"
    (run / "train.out").write_text("error: no train_N images in /x\n")
    assert runs.run_status(run)["status"] == "failed"


def test_val_and_test_evaluations_are_kept_apart_with_their_progress(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "eval_val" / "predictions").mkdir(parents=True)
    assert runs.evaluation_status(run, "val")["status"] == "none"
    # a running val evaluation: "<pid> <images>" in its pid file, progress counted from its saved predictions
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "glandseg_core"])
    try:
        (run / "eval_val" / "predictions" / "old_labels.png").write_bytes(b"")
        os.utime(run / "eval_val" / "predictions" / "old_labels.png", (0, 0))  # an earlier evaluation's
        (run / "eval_val.pid").write_text(f"{sleeper.pid} 15\n")
        for name in ("train_10", "train_12"):
            (run / "eval_val" / "predictions" / f"{name}_labels.png").write_bytes(b"")
        ev = runs.evaluation_status(run, "val")
        assert ev["status"] == "running" and (ev["done"], ev["total"]) == (2, 15)
        assert runs.evaluation_status(run, "test")["status"] == "none"  # the test step is separate
        assert jobs.stop_evaluation(run, "test") is False
        assert jobs.stop_evaluation(run, "val") is True
        sleeper.wait(timeout=30)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert runs.evaluation_status(run, "val")["status"] == "failed"
    (run / "eval_val" / "summary.json").write_text(json.dumps({"val": {"pooled_f1": 0.5}}))
    ev = runs.evaluation_status(run, "val")
    assert ev["status"] == "done" and ev["summary"]["val"]["pooled_f1"] == 0.5


def test_evaluation_needs_best_pt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no best.pt"):
        jobs.start_evaluation(tmp_path, splits=("val",))


def test_promote_carries_the_runs_test_history(untrained_unet_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(untrained_unet_run, run)
    line = {"date": "2026-12-01", "commit": "abc", "split": "testA", "tta": False, "reason": "chosen on val",
            "figures": {"pooled_f1": 0.5}}  # fmt: skip
    (run / TEST_HISTORY).write_text(json.dumps(line) + "\n")
    target = tmp_path / "models" / "mine"
    promote(run, target)
    assert (target / TEST_HISTORY).read_text() == (run / TEST_HISTORY).read_text()
    assert "Test A was scored once" in (target / "MODEL_CARD.md").read_text()
    # another run without a history replaces this model: the old history is named, then removed
    assert TEST_HISTORY in replaced(target)
    promote(untrained_unet_run, target, confirmed=replaced(target))
    assert not (target / TEST_HISTORY).exists()
