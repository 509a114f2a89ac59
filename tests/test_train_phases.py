"""Tests for glandseg_core.train.phases and the engine's phases: progress.json reports every phase (epoch steps,
validation, tuning with its grid points), and a stop ends any phase at once and leaves a resumable run
(issue #14: a 1-epoch run sat at "step 10/10" through 4.5 minutes of tuning, and Stop took 2.5 minutes)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from glandseg_core.errors import TrainingStopped
from glandseg_core.kinds.unet import GRID as UNET_GRID
from glandseg_core.train import engine, fit, phases
from glandseg_core.train.runfiles import read_log
from tests.helpers import VAL_NAMES, tiny_unet_config

GRID_POINTS = len(list(__import__("itertools").product(*UNET_GRID.values())))


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every progress.json record the trainer writes, in order."""
    seen: list[dict[str, Any]] = []
    original = phases.write_progress

    def record(run_dir: Path, **fields: Any) -> None:
        seen.append(fields)
        original(run_dir, **fields)

    for module in (phases, engine):
        monkeypatch.setattr(module, "write_progress", record)
    return seen


def _sigterm_when(written: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, cond) -> None:
    """SIGTERM this process once (as the dashboard's Stop does) when a written record satisfies ``cond``."""
    original, fired = phases.write_progress, []

    def record(run_dir: Path, **fields: Any) -> None:
        written.append(fields)
        original(run_dir, **fields)
        if not fired and cond(fields):
            fired.append(fields)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(phases, "write_progress", record)


def test_stop_flag_interrupts_an_armed_block_at_once() -> None:
    with phases.stop_on_signals() as flag:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
        t0 = time.time()
        timer.start()
        with pytest.raises(TrainingStopped, match="busy tuning"), flag.armed("busy tuning"):
            time.sleep(20)  # stands for a long step / a slow grid point
        assert time.time() - t0 < 5 and flag.raised
        with pytest.raises(TrainingStopped, match="next phase"), flag.armed("next phase"):
            pass  # a stop recorded earlier ends the next armed block on entry
    paused = phases.StopFlag()
    with pytest.raises(TrainingStopped, match="after the write"), paused.armed("after the write"):
        with paused.paused():
            paused()  # arrives during a write: recorded only
            done = True
        assert done  # the write finished; the stop is raised right after it


@pytest.mark.slow
def test_progress_reports_every_phase(
    lock_dir: Path, fake_glas_dir: Path, tmp_path: Path, written: list[dict[str, Any]]
) -> None:
    run = tmp_path / "run"
    fit(tiny_unet_config(train_epochs=1, train_steps_per_epoch=3), fake_glas_dir, run, show_bar=False)
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for rec in written:
        by_phase.setdefault(rec.get("phase", "?"), []).append(rec)
    assert list(by_phase) == ["train", "validate", "tune", "done"]
    train = by_phase["train"]
    assert train[0]["done"] == 1 and train[0]["event"] == "step" and train[0]["total"] == 3
    assert any(r["event"] == "epoch" for r in train) and train[-1]["unit"] == "steps"
    val = by_phase["validate"]
    assert val[-1]["done"] == val[-1]["total"] == len(VAL_NAMES) and val[-1]["unit"] == "images"
    tune = by_phase["tune"]
    outputs = [r for r in tune if r["unit"] == "val images (model outputs)"]
    grid = [r for r in tune if r["unit"] == "grid points"]
    assert outputs[-1]["done"] == len(VAL_NAMES) and grid[-1]["done"] == grid[-1]["total"] == GRID_POINTS
    assert grid[0]["phase_started"] >= outputs[0]["phase_started"]  # each stage times itself
    assert all(r["status"] == "running" and r["epoch"] == 1 for r in train + val + tune)
    final = json.loads((run / "progress.json").read_text())
    assert final["status"] == "finished" and final["phase"] == "done"


@pytest.mark.slow
def test_stop_mid_tuning_then_resume_continues_the_tuning(
    lock_dir: Path, fake_glas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, seen = tmp_path / "run", []
    monkeypatch.setattr(phases, "REPORT_EVERY_S", 0.0)  # tuning is fast now: write every grid point
    _sigterm_when(seen, monkeypatch, lambda r: r.get("unit") == "grid points" and r["done"] >= 2)
    cfg = tiny_unet_config(train_epochs=2, train_steps_per_epoch=2)
    with pytest.raises(TrainingStopped, match="tuning"):
        fit(cfg, fake_glas_dir, run, show_bar=False)
    progress = json.loads((run / "progress.json").read_text())
    assert progress["status"] == "stopped" and progress["phase"] == "tune"
    assert progress["message"] == "stopped while tuning post-processing"
    assert progress["resume"] == "continues the tuning from the grid points scored"
    assert not (run / "postprocess.json").exists() and not (run / "tuning.json").exists()
    assert [r["epoch"] for r in read_log(run / "log.jsonl")] == [1, 2]
    assert max(r["done"] for r in seen if r.get("unit") == "grid points") < GRID_POINTS  # cut short

    fit(cfg, fake_glas_dir, run, resume=True, show_bar=False)
    assert [r["epoch"] for r in read_log(run / "log.jsonl")] == [1, 2]  # no epoch trained again
    assert (run / "postprocess.json").is_file() and (run / "tuning.json").is_file()
    assert json.loads((run / "progress.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_stop_mid_validation_keeps_the_last_epoch_and_resume_repeats_it(
    lock_dir: Path, fake_glas_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, seen = tmp_path / "run", []
    _sigterm_when(
        seen, monkeypatch, lambda r: r.get("phase") == "validate" and r["epoch"] == 2 and r["done"] >= 1
    )
    cfg = tiny_unet_config(train_epochs=2, train_steps_per_epoch=2)
    with pytest.raises(TrainingStopped, match="validating epoch 2"):
        fit(cfg, fake_glas_dir, run, show_bar=False)
    progress = json.loads((run / "progress.json").read_text())
    assert progress["status"] == "stopped" and progress["phase"] == "validate"
    assert [r["epoch"] for r in read_log(run / "log.jsonl")] == [1]  # epoch 2 was not checkpointed
    assert (run / "last.pt").is_file()

    fit(cfg, fake_glas_dir, run, resume=True, show_bar=False)
    assert [r["epoch"] for r in read_log(run / "log.jsonl")] == [1, 2]
    assert json.loads((run / "progress.json").read_text())["status"] == "finished"
