"""Faults during training: kill -9 then resume, a full disk while checkpointing or logging, a torn log line,
two trainings at once.

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
import time
from pathlib import Path

import pytest
import torch

from glandseg_core import files
from glandseg_core.checkpoints import read_checkpoint
from glandseg_core.cli import main
from glandseg_core.config import RunConfig, save_config
from glandseg_core.errors import TrainingStopped
from glandseg_core.progress import Step
from glandseg_core.train import fit
from glandseg_core.train import runfiles as train_mod
from glandseg_core.train.locks import lock_holder
from tests import cliproc
from tests.helpers import REPO, tiny_unet_config


def _cfg(**overrides: object) -> RunConfig:
    return tiny_unet_config(**overrides)  # type: ignore[return-value]


def _env() -> dict[str, str]:
    env = dict(os.environ)  # carries GLANDSEG_LOCK_DIR from the lock_dir fixture
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train_cmd(*args: str | Path) -> list[str]:
    """``glandseg train`` arguments; tests/cliproc.py runs them as ``python -m glandseg_core`` would, forked."""
    return ["train", "--no-bar", *map(str, args)]


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


def _start(cmd: list[str], log: Path) -> cliproc.Proc:
    """Start a training in the background, in a process of its own; its output goes to ``log``."""
    return cliproc.Proc(cmd, _env(), log=log)


def _wait(cond, proc: cliproc.Proc, timeout: float, what: str, log: Path) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before {what}: {log.read_text()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------------------------ kill -9 + resume


@pytest.mark.slow
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

    res = cliproc.run(
        _train_cmd("--out", run_dir, "--resume", "--data", fake_glas_dir), _env(), timeout=600
    )
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


@pytest.mark.slow
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
    # one line naming the file and the cause (issue #15 item 5)
    assert f"cannot write {run_dir / 'last.pt'}: disk full" in str(info.value) and "\n" not in str(
        info.value
    )
    ckpt = read_checkpoint(run_dir / "last.pt")  # intact and loadable: epoch 1
    assert ckpt["epoch"] == 0 and "optimizer" in ckpt
    assert not list(run_dir.glob("*.tmp"))
    progress = _progress(run_dir)
    assert progress["status"] == "failed" and "No space left on device" in progress["error"]
    assert lock_holder() is None
    fit(cfg, fake_glas_dir, run_dir, resume=True, show_bar=False)  # the disk has room again
    assert _epochs(run_dir) == [1, 2, 3]  # epoch 2's line, logged before last.pt failed, is not doubled


def _torch_writer_failure(*_: object, **__: object) -> None:
    """What ``torch.save`` to a path on a full disk raises (seen with ``torch.save(obj, "/dev/full")``)."""
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@pytest.mark.slow
def test_disk_full_at_the_first_checkpoint_then_retry_never_duplicates_log_lines(
    tmp_path: Path, lock_dir: Path, fake_glas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #15 item 5: torch's own writer error becomes one line naming the file and "disk full"; with no
    last.pt there is nothing to resume, and retrying in the same folder used to append to the old log.jsonl,
    so epoch 1 appeared twice."""
    run_dir = tmp_path / "run"
    cfg = _cfg(train_epochs=2)
    real_save = torch.save

    def save(obj: object, f: object, *a: object, **k: object) -> None:
        if isinstance(obj, dict) and "optimizer" in obj:
            _torch_writer_failure()
        real_save(obj, f, *a, **k)  # type: ignore[arg-type]

    with monkeypatch.context() as mp, pytest.raises(OSError) as info:
        mp.setattr(train_mod.torch, "save", save)
        fit(cfg, fake_glas_dir, run_dir, show_bar=False)
    msg = str(info.value)
    assert f"cannot write {run_dir / 'last.pt'}: disk full" in msg and "\n" not in msg, msg
    assert "inline_container" in msg  # torch's own words are kept, after ours
    assert not (run_dir / "last.pt").exists() and _epochs(run_dir) == [1]
    assert _progress(run_dir)["status"] == "failed"
    with pytest.raises(FileNotFoundError, match="last.pt"):
        fit(cfg, fake_glas_dir, run_dir, resume=True, show_bar=False)
    fit(cfg, fake_glas_dir, run_dir, show_bar=False)  # retry in the same folder
    assert _epochs(run_dir) == [1, 2]


def test_disk_full_is_one_line_on_the_command_line(
    tmp_path: Path,
    lock_dir: Path,
    fake_glas_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg_path = tmp_path / "tiny.json"
    save_config(_cfg(train_epochs=1), cfg_path)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(train_mod.torch, "save", _torch_writer_failure)
    rc = main(
        [
            "train",
            "--no-bar",
            "--config",
            str(cfg_path),
            "--data",
            str(fake_glas_dir),
            "--out",
            str(run_dir),
        ]
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(("error", "Traceback"))]
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot write") and "best.pt" in err[0] and "disk full" in err[0], (
        err
    )


@pytest.mark.slow
def test_disk_full_while_logging_leaves_no_partial_line(
    tmp_path: Path, lock_dir: Path, fake_glas_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk in the middle of a log line: the error names log.jsonl, the half line is cut off again, and
    --resume continues with every epoch logged once."""
    run_dir = tmp_path / "run"
    cfg = _cfg(train_epochs=3)
    real_write = os.write

    def failing_write(fd: int, data: bytes) -> int:  # half a log line, then the disk is full
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "log.jsonl" and _epochs(run_dir) == [
            1
        ]:
            real_write(fd, data[:7])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    with monkeypatch.context() as mp, pytest.raises(OSError) as info:
        mp.setattr(files.os, "write", failing_write)
        fit(cfg, fake_glas_dir, run_dir, show_bar=False)
    msg = str(info.value)
    assert f"cannot write {run_dir / 'log.jsonl'}: disk full" in msg and "\n" not in msg, msg
    assert (run_dir / "log.jsonl").read_text().endswith("\n")  # the half line is gone
    assert _epochs(run_dir) == [1] and read_checkpoint(run_dir / "last.pt")["epoch"] == 0
    fit(cfg, fake_glas_dir, run_dir, resume=True, show_bar=False)
    assert _epochs(run_dir) == [1, 2, 3]


# ------------------------------------------------------------------------------------ a torn log line


def _stop_in_epoch_2(step: Step) -> None:
    if step.phase == "train" and step.detail.get("event") == "step" and step.detail.get("epoch") == 2:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_resume_skips_a_half_written_last_log_line(
    tmp_path: Path, lock_dir: Path, fake_glas_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #15 item 6: a crash in the middle of writing log.jsonl left a torn last line that blocked
    --resume with "Expecting ',' delimiter: line 1 column 24", naming no file."""
    run_dir = tmp_path / "run"
    cfg = _cfg(train_epochs=3)
    with pytest.raises(TrainingStopped):
        fit(cfg, fake_glas_dir, run_dir, progress=_stop_in_epoch_2, show_bar=False)
    log = run_dir / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"epoch": 2, "lr": 0.0')  # torn: no closing brace, no newline
    with caplog.at_level("WARNING"):
        fit(cfg, fake_glas_dir, run_dir, resume=True, show_bar=False)
    assert _epochs(run_dir) == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(log) in w and "half-written last line (line 2)" in w for w in warnings), warnings


def test_an_unreadable_log_line_names_the_file_and_line(
    tmp_path: Path, lock_dir: Path, fake_glas_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        fit(_cfg(train_epochs=3), fake_glas_dir, run_dir, progress=_stop_in_epoch_2, show_bar=False)
    log = run_dir / "log.jsonl"
    log.write_text("garbage\n" + log.read_text())  # not the last line: not a torn write, so not skipped
    with pytest.raises(ValueError, match=re.escape(f"{log}, line 1: unreadable training log line")):
        fit(_cfg(train_epochs=3), fake_glas_dir, run_dir, resume=True, show_bar=False)
    rc = main(["train", "--no-bar", "--out", str(run_dir), "--resume", "--data", str(fake_glas_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{log}, line 1" in err[0], err


# --------------------------------------------------------------------------------- two trainings at once


@pytest.mark.slow
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
        res = cliproc.run(
            _train_cmd("--config", cfg_path, "--data", fake_glas_dir, "--out", second_dir),
            _env(),
            timeout=300,
        )
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
