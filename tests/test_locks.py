"""Tests for glandseg_core.train.locks: one training per machine, one per run folder (whatever the lock
folder), holder records, and no ``fcntl`` needed to import (Windows)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.config import save_config
from glandseg_core.errors import TrainingBusy
from glandseg_core.train import fit
from glandseg_core.train.locks import (
    RUN_LOCK,
    lock_holder,
    lock_path,
    remove_unused_run_folder,
    run_folder_holder,
    run_folder_lock,
    training_lock,
)
from tests import cliproc
from tests.helpers import REPO, tiny_unet_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_lock_refuses_a_second_start(
    lock_dir: Path, fake_glas_dir: Path, tmp_path: Path
) -> None:
    with training_lock(tmp_path / "first"):
        holder = lock_holder()
        assert holder == {"pid": os.getpid(), "run_dir": str(tmp_path / "first")}
        with pytest.raises(TrainingBusy) as e:
            fit(
                tiny_unet_config(), fake_glas_dir, tmp_path / "second", machine_lock=True, show_bar=False
            )
        msg = str(e.value)
        assert str(os.getpid()) in msg and "first" in msg and "\n" not in msg
        assert not (tmp_path / "second" / "last.pt").exists()
    assert lock_holder() is None
    assert (lock_dir / "train.lock").is_file()


def test_fit_takes_the_machine_lock_only_when_asked(
    lock_dir: Path, synthetic_glands: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Library callers train on in-memory pairs without the machine-wide lock; the CLI and the dashboard ask
    for it (``machine_lock=True``). The run folder's own lock is still taken, and released."""
    image, labels = synthetic_glands
    cfg = tiny_unet_config(train_epochs=1, train_steps_per_epoch=1, train_val_every=1)
    with training_lock(tmp_path / "someone_else"):  # held: a locking fit would be refused
        best = fit(
            cfg, [(image, labels)] * 2, tmp_path / "run", val_data=[(image, labels)], show_bar=False
        )
    assert best["epoch"] == 1 and 0.0 <= best["val_f1"] <= 1.0
    assert (tmp_path / "run" / "last.pt").is_file() and run_folder_holder(tmp_path / "run") is None
    assert sorted(p.name for p in lock_dir.iterdir()) == ["train.lock"]  # only the one held above
    (lock_dir / "train.lock").unlink()
    fit(cfg, [(image, labels)] * 2, tmp_path / "run2", val_data=[(image, labels)], show_bar=False)
    assert list(lock_dir.iterdir()) == []  # no machine lock file was created


def test_holder_record_and_release(lock_dir: Path, tmp_path: Path) -> None:
    assert lock_path() == lock_dir / "train.lock"
    assert lock_holder() is None
    with training_lock(tmp_path / "a"):
        assert lock_holder() == {"pid": os.getpid(), "run_dir": str(tmp_path / "a")}
        with (
            pytest.raises(TrainingBusy, match="another training is running"),
            training_lock(tmp_path / "b"),
        ):
            pass
        assert lock_holder()["run_dir"] == str(tmp_path / "a")  # the refused one changed nothing
    assert lock_holder() is None
    with training_lock(tmp_path / "b"):  # free again: a new holder is recorded
        assert lock_holder() == {"pid": os.getpid(), "run_dir": str(tmp_path / "b")}


def test_run_folder_lock_names_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert run_folder_holder(run) is None and not (run / RUN_LOCK).exists()  # probing creates nothing
    assert run_folder_holder(tmp_path / "missing") is None
    with run_folder_lock(run):
        assert (run / RUN_LOCK).is_file()
        assert run_folder_holder(run) == {"pid": os.getpid(), "run_dir": str(run)}
        with pytest.raises(TrainingBusy) as e, run_folder_lock(run):
            pass
        msg = str(e.value)
        assert "\n" not in msg and f"pid {os.getpid()}" in msg and str(run) in msg, msg
    assert run_folder_holder(run) is None
    with run_folder_lock(run):  # released
        pass


@pytest.mark.slow
def test_the_package_imports_without_fcntl() -> None:
    """Issue #11: ``locks.py`` imported ``fcntl``, so the package failed to import on Windows."""
    code = (
        "import sys, warnings; sys.modules['fcntl'] = None; warnings.simplefilter('ignore');"
        "import glandseg_core.train.locks as l, glandseg_core.train; print('ok', hasattr(l, 'fcntl'))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0 and res.stdout.split() == ["ok", "False"], res.stderr[-2000:]


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_one_training_per_run_folder_whatever_the_lock_folder(
    tmp_path: Path, fake_glas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #15 item 10: with a different GLANDSEG_LOCK_DIR, a second ``--resume`` trained the same run folder
    at the same time (and wrote "stopped" into its progress.json when killed). Now the run folder's own lock
    refuses it before it writes anything."""
    cfg_path, run_dir = tmp_path / "long.json", tmp_path / "run"
    save_config(tiny_unet_config(train_epochs=1000, train_steps_per_epoch=2), cfg_path)
    env = {**os.environ, "GLANDSEG_LOCK_DIR": str(tmp_path / "locks-a"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = ["train", "--no-bar", "--config", cfg_path, "--data", fake_glas_dir, "--out", run_dir]
    first = cliproc.Proc(
        cmd, env, log=tmp_path / "first.log"
    )  # its own process, forked (tests/cliproc.py)
    try:
        end = time.monotonic() + 300
        while not ((run_dir / "last.pt").exists() and _progress(run_dir).get("event") == "step"):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            assert time.monotonic() < end, "the first training never checkpointed"
            time.sleep(0.05)
        monkeypatch.setenv("GLANDSEG_LOCK_DIR", str(tmp_path / "locks-b"))
        assert lock_holder() is None  # the machine-wide lock of folder B is free ...
        with pytest.raises(TrainingBusy) as e:  # ... yet the run folder is taken
            fit(tiny_unet_config(), fake_glas_dir, run_dir, resume=True, show_bar=False)
        msg = str(e.value)
        assert f"pid {first.pid}" in msg and str(run_dir) in msg and "\n" not in msg, msg
        assert first.poll() is None and run_folder_holder(run_dir)["pid"] == first.pid
        assert _progress(run_dir)["pid"] == first.pid  # the refused one wrote nothing
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    assert first.returncode == 3  # "stopped"
    assert _progress(run_dir)["status"] == "stopped" and _progress(run_dir)["pid"] == first.pid


def test_remove_unused_run_folder_spares_a_held_or_used_folder(tmp_path: Path) -> None:
    """Only a folder the run created, holding nothing but its free lock file, is removed (issue #23 item 9)."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    with run_folder_lock(run):
        remove_unused_run_folder(run, [run, run.parent])  # held (here by this process): stays
    assert (run / RUN_LOCK).is_file()
    remove_unused_run_folder(run, [])  # not created by the run: stays
    (run / "config.json").write_text("{}")
    remove_unused_run_folder(run, [run, run.parent])  # something written: stays
    assert (run / "config.json").is_file()
    (run / "config.json").unlink()
    remove_unused_run_folder(run, [run, run.parent])
    assert not (tmp_path / "runs").exists()
