"""Tests for glandseg_core.train.runfiles: checkpoints and logs written safely, failures named in one line."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from glandseg_core.train import runfiles
from glandseg_core.train.runfiles import (
    append_log,
    read_log,
    save_checkpoint,
    trim_log,
    try_write_progress,
    write_progress,
    writing,
)


def _lines(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_writing_names_the_file_and_says_disk_full(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    with pytest.raises(OSError) as e, writing(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert e.value.errno == errno.ENOSPC
    assert str(e.value) == f"[Errno 28] cannot write {path}: disk full (No space left on device)"
    with pytest.raises(OSError) as e, writing(path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert e.value.errno == errno.ENOSPC and f"cannot write {path}: disk full" in str(e.value)
    with pytest.raises(OSError, match=f"cannot write {path}: Permission denied"), writing(path):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(RuntimeError, match="something else"), writing(path):  # not a write failure
        raise RuntimeError("something else")


def test_save_checkpoint_keeps_the_old_file_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 0}, path)

    def full(obj: object, f: object, *a: object, **k: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfiles.torch, "save", full)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 1}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_append_log_cuts_a_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    append_log(tmp_path, {"epoch": 1})
    real_write = os.write

    def half_write(fd: int, data: bytes) -> int:  # half the line goes out, then the disk is full
        real_write(fd, data[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_write)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'log.jsonl'}: disk full"):
        append_log(tmp_path, {"epoch": 2})
    monkeypatch.undo()
    assert (tmp_path / "log.jsonl").read_text() == _lines({"epoch": 1})


def test_read_log_skips_a_half_written_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(_lines({"epoch": 1}, {"epoch": 2}) + '{"epoch": 3, "lr"')
    with caplog.at_level(logging.WARNING):
        assert read_log(path) == [{"epoch": 1}, {"epoch": 2}]
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == f"{path}: skipping a half-written last line (line 3)"
    assert read_log(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '{"lr": 0.1}', '{"epoch": "1"}'])
def test_an_unreadable_line_names_the_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(_lines({"epoch": 1}) + bad + "\n" + _lines({"epoch": 2}))
    with pytest.raises(ValueError, match=f"^{path}, line 2: unreadable training log line") as e:
        read_log(path)
    assert "\n" not in str(e.value)


def test_trim_log_drops_later_epochs_and_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    kept = '{"epoch": 1, "train_loss": 0.5}\n{"epoch":2}\n'  # kept lines stay byte for byte
    path.write_text(kept + _lines({"epoch": 3}) + '{"epoch": 4')
    trim_log(tmp_path, 2)
    assert path.read_text() == kept
    before = path.stat().st_mtime_ns
    trim_log(tmp_path, 2)  # nothing to drop: not rewritten
    assert path.stat().st_mtime_ns == before
    trim_log(tmp_path, 0)
    assert path.read_text() == ""
    trim_log(tmp_path / "nowhere", 3)  # no log yet: nothing to do


def test_progress_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    write_progress(tmp_path, event="epoch", epoch=1)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["event"] == "epoch" and progress["pid"] == os.getpid() and "time" in progress

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfiles, "atomic_write_text", full)
    with pytest.raises(OSError, match="progress.json: disk full"):
        write_progress(tmp_path, event="failed")
    with caplog.at_level(logging.WARNING):
        try_write_progress(tmp_path, event="failed")  # only logged: the error being reported comes first
    assert any("progress.json: disk full" in r.getMessage() for r in caplog.records)
