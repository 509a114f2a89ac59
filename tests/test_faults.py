"""Faults during training: kill -9 then resume, a full disk while checkpointing, two trainings at once.

Every training here is a tiny U-Net on the fake GlaS folder, with a private lock folder (``lock_dir``), so the
machine-wide lock of real trainings is never touched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_unet_config

from glandseg_core import train as train_mod
from glandseg_core.config import RunConfig, save_config
from glandseg_core.infer import read_checkpoint
from glandseg_core.locks import lock_holder
from glandseg_core.train import fit


def _cfg(**overrides: object) -> RunConfig:
    return tiny_unet_config(**overrides)  # type: ignore[return-value]


def _env() -> dict[str, str]:
    env = dict(os.environ)  # carries GLANDSEG_LOCK_DIR from the lock_dir fixture
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "glandseg_core", "train", "--no-bar", *map(str, args)]


def _epochs(run_dir: Path) -> list[int]:
    path = run_dir / "log.jsonl"
    return (
        [json.loads(ln)["epoch"] for ln in path.read_text().splitlines() if ln.strip()]
        if path.exists()
        else []
    )


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a training in the background; its output goes to ``log`` (a pipe could fill up and block it)."""
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)


def _wait(cond, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before {what}: {log.read_text()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------ kill -9 + resume


def test_kill_9_mid_epoch_then_resume_loses_nothing(
    tmp_path: Path, lock_dir: Path, fake_glas_dir: Path
) -> None:
    epochs = 4
    cfg_path = tmp_path / "tiny.json"
    save_config(_cfg(train_epochs=epochs, train_steps_per_epoch=120), cfg_path)
    run_dir = tmp_path / "run"
    cmd = _train_cmd("--config", cfg_path, "--data", fake_glas_dir, "--out", run_dir)
    proc = _start(cmd, tmp_path / "first.log")

    def in_second_epoch() -> bool:
        p = _progress(run_dir)
        return (run_dir / "last.pt").exists() and p.get("event") == "step" and p.get("epoch", 0) >= 2

    _wait(in_second_epoch, proc, 300, "epoch 2 to start", tmp_path / "first.log")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    done = (
        read_checkpoint(run_dir / "last.pt")["epoch"] + 1
    )  # epochs finished and checkpointed (1-based)
    in_progress = _progress(run_dir)["epoch"]
    log_before = (run_dir / "log.jsonl").read_text().splitlines()
    assert 1 <= done < epochs
    assert lock_holder() is None  # the kernel released the dead process's lock

    res = subprocess.run(
        _train_cmd("--out", run_dir, "--resume", "--data", fake_glas_dir),
        check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert _epochs(run_dir) == list(range(1, epochs + 1))  # every epoch once, in order
    assert (run_dir / "log.jsonl").read_text().splitlines()[:done] == log_before[
        :done
    ]  # nothing rewritten
    rerun = [int(m) for m in re.findall(r"^epoch (\d+):", res.stderr + res.stdout, flags=re.MULTILINE)]
    assert rerun == list(range(done + 1, epochs + 1))
    assert in_progress - done <= 1  # at most the epoch cut short by the kill runs twice
    assert _progress(run_dir)["status"] == "finished"
    assert read_checkpoint(run_dir / "last.pt")["epoch"] == epochs - 1
    assert (run_dir / "best.pt").is_file() and (run_dir / "postprocess.json").is_file()
    assert not list(run_dir.glob("*.tmp"))


# ----------------------------------------------------------------------------- full disk at checkpoint


def _disk_full(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_disk_full_while_checkpointing_keeps_the_previous_last_pt(
    where: str, tmp_path: Path, lock_dir: Path, fake_glas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    cfg = _cfg(train_epochs=3)
    real_save, real_replace = torch.save, os.replace

    def save(obj: object, f: object, *a: object, **k: object) -> None:
        if isinstance(obj, dict) and "optimizer" in obj and obj["epoch"] >= 1:  # last.pt of epoch 2
            f.write(b"half a checkpoint")  # type: ignore[union-attr]
            _disk_full()
        real_save(obj, f, *a, **k)  # type: ignore[arg-type]

    def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if Path(dst).name == "last.pt" and (run_dir / "last.pt").exists():  # the second last.pt
            _disk_full()
        real_replace(src, dst)

    with monkeypatch.context() as mp, pytest.raises(OSError) as info:
        if where == "torch.save":
            mp.setattr(train_mod.torch, "save", save)
        else:
            mp.setattr(train_mod.os, "replace", replace)
        fit(cfg, fake_glas_dir, run_dir, show_bar=False)

    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    ckpt = read_checkpoint(run_dir / "last.pt")  # intact and loadable: epoch 1
    assert ckpt["epoch"] == 0 and "optimizer" in ckpt
    assert not list(run_dir.glob("*.tmp"))
    progress = _progress(run_dir)
    assert progress["status"] == "failed" and "No space left on device" in progress["error"]
    assert lock_holder() is None
    fit(cfg, fake_glas_dir, run_dir, resume=True, show_bar=False)  # the disk has room again
    assert _epochs(run_dir) == [1, 2, 3]


# --------------------------------------------------------------------------------- two trainings at once


def test_second_training_is_refused_while_one_runs(
    tmp_path: Path, lock_dir: Path, fake_glas_dir: Path
) -> None:
    cfg_path = tmp_path / "long.json"
    save_config(_cfg(train_epochs=50, train_steps_per_epoch=1000), cfg_path)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    log = tmp_path / "first.log"
    first = _start(_train_cmd("--config", cfg_path, "--data", fake_glas_dir, "--out", first_dir), log)
    try:
        _wait(lambda: lock_holder() is not None, first, 300, "the first training to take the lock", log)
        res = subprocess.run(
            _train_cmd("--config", cfg_path, "--data", fake_glas_dir, "--out", second_dir),
            check=False, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "another training is running" in lines[0], res.stderr
        assert str(first_dir) in lines[0]  # names the running one
        assert not (second_dir / "last.pt").exists()
        assert first.poll() is None  # the first one is unharmed
        # SIGTERM is handled once the training loop runs (earlier it would simply end the process)
        _wait(
            lambda: _progress(first_dir).get("event") == "step",
            first,
            300,
            "the first training's steps",
            log,
        )
    finally:
        first.send_signal(signal.SIGTERM)  # stops after the current step
        try:
            first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
    assert first.returncode == 3  # "stopped"
    assert lock_holder() is None
