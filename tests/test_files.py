"""Tests for glandseg_core.files: atomic writes, and one-line messages that name the file and the cause."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from glandseg_core import files
from glandseg_core.files import atomic_write_bytes, atomic_write_text, describe_os_error
from glandseg_core.imaging.io import write_label_png, write_png


def test_atomic_write_keeps_old_file_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old\n")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # temp file removed


def test_atomic_write_keeps_old_file_when_data_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "héllo\n")
    assert path.read_bytes() == "héllo\n".encode()
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert (path.stat().st_mode & 0o777) == 0o640


# ---------------------------------------------------------------------------------------- disk full


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic write lands on /dev/full, so the kernel answers ENOSPC as a full disk does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    real_mkstemp = tempfile.mkstemp

    def mkstemp_on_full_disk(**kwargs: object) -> tuple[int, str]:
        fd, tmp = real_mkstemp(**kwargs)  # type: ignore[call-overload]
        os.close(fd)
        os.unlink(tmp)  # the write below fails before the rename: this name is never used
        return os.open("/dev/full", os.O_WRONLY), tmp

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp_on_full_disk)


@pytest.mark.usefixtures("full_disk")
def test_disk_full_names_the_file_and_says_the_disk_is_full(tmp_path: Path) -> None:
    target = tmp_path / "testB_2.png"
    with pytest.raises(OSError) as info:
        write_png(target, np.zeros((8, 8, 3), np.uint8))
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value)  # the exception itself names the output, not a temporary file
    message = describe_os_error(None, info.value)
    assert message.startswith(f"cannot write {target}: the disk is full") and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


@pytest.mark.usefixtures("full_disk")
def test_disk_full_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "labels.png"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="labels.png"):
        write_label_png(target, np.ones((8, 8), np.int32))
    assert target.read_bytes() == b"old"


def test_permission_and_missing_folder_messages(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "no" / "such" / "metrics.json", "{}")
    assert describe_os_error(None, info.value) == (
        f"cannot write {tmp_path / 'no' / 'such' / 'metrics.json'}: the folder does not exist "
        "(No such file or directory)"
    )
    denied = PermissionError(errno.EACCES, "Permission denied")
    assert (
        describe_os_error("out/a.csv", denied)
        == "cannot write out/a.csv: permission denied (Permission denied)"
    )
    assert describe_os_error(Path("w.pt"), OSError("boom"), "save") == "cannot save w.pt: boom"
