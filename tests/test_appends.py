"""Records that survive faults (issue #23 items 5 and 9): whole-line appends that repair a torn tail, a tolerant
reader, full-disk errors that name the file in ``evaluate``, ``export`` and Promote and leave no temporary file,
and a resumed run whose log holds each epoch once."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from glandseg_core import checkpoints, files
from glandseg_core.checkpoints import WEIGHTS, export_model, read_checkpoint
from glandseg_core.cli import main
from glandseg_core.errors import WriteError
from glandseg_core.evaluation import TEST_HISTORY, read_test_history, record_test_scoring
from glandseg_core.files import append_line, read_json_lines
from glandseg_core.train.runfiles import LOG, append_log, read_log, trim_log
from glandseg_dashboard.promote import promote
from tests.helpers import write_fake_glas

pytestmark = pytest.mark.usefixtures("one_thread")
ENOSPC = os.strerror(errno.ENOSPC)


def _half_then_full(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``os.write`` to a file named ``name`` writes half its bytes, then the disk is full."""
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == name:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, ENOSPC)
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", write)


# ----------------------------------------------------------------------------------------- append_line


def test_append_line_writes_whole_lines_and_a_failed_one_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.jsonl"
    append_line(path, '{"a": 1}')
    before = path.read_bytes()
    with monkeypatch.context() as mp:
        _half_then_full(mp, "h.jsonl")
        with pytest.raises(OSError) as info:
            append_line(path, '{"b": 2}')
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before  # the half line was cut off again
    append_line(path, '{"c": 3}')
    assert read_json_lines(path) == [{"a": 1}, {"c": 3}]
    with pytest.raises(ValueError, match="one line"):
        append_line(path, "two\nlines")


def test_a_torn_tail_is_moved_aside_before_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction: a partial line left by a full disk swallowed the next scoring (glued to it)."""
    path = tmp_path / "h.jsonl"
    path.write_text('{"a": 1}\n{"date": "2026-01-0')
    with caplog.at_level(logging.WARNING):
        append_line(path, '{"b": 2}')
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert (tmp_path / "h.jsonl.torn").read_text() == '{"date": "2026-01-0\n'  # kept, not lost
    assert any(
        "torn last line" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
    )
    path.write_text('{"a": 1}')  # whole JSON without its newline (a hand edit): kept as a record
    append_line(path, '{"b": 2}')
    assert read_json_lines(path) == [{"a": 1}, {"b": 2}]


def test_the_reader_recovers_a_record_glued_to_a_torn_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / TEST_HISTORY
    rec = {"date": "d", "split": "testB", "figures": {"pooled_f1": 0.6}}
    path.write_text('{"date": "x", "split": "te' + json.dumps(rec) + "\n" + '{"split": "testA"')
    with caplog.at_level(logging.WARNING):
        assert read_test_history(tmp_path) == [rec]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{path}, line 1" in m for m in messages) and any(
        f"{path}, line 2" in m for m in messages
    )


# ----------------------------------------------------------------------------------- evaluate, full disk


@pytest.fixture
def model_dir(untrained_unet_run: Path, tmp_path: Path) -> Path:
    return export_model(untrained_unet_run, tmp_path / "models" / "tiny")


def test_evaluate_on_a_full_disk_names_the_history_and_loses_no_later_scoring(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    glas = write_fake_glas(tmp_path / "glas", names=("testB_1",))
    record_test_scoring(model_dir, {"testA": {"pooled_f1": 0.5}})
    argv = ["evaluate", "--model", str(model_dir), "--data", str(glas), "--split", "testB"]
    with monkeypatch.context() as mp:
        _half_then_full(mp, TEST_HISTORY)
        rc = main([*argv, "--out", str(tmp_path / "e1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert str(model_dir / TEST_HISTORY) in err[0] and "disk is full" in err[0], err
    assert (model_dir / TEST_HISTORY).read_text().endswith("\n")  # no partial line
    assert main([*argv, "--out", str(tmp_path / "e2")]) == 0  # space again
    assert [r["split"] for r in read_test_history(model_dir)] == ["testA", "testB"]


def test_evaluate_names_a_results_file_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glandseg_core.evaluation import write_results

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(WriteError, match=r"cannot write .*per_image\.csv: the disk is full"):
        write_results(tmp_path, __import__("pandas").DataFrame({"a": [1]}), {"val": {}})
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------- export and Promote


def _torch_writer_failure(*_: object, **__: object) -> None:
    """What ``torch.save`` raises on a full disk (seen with ``torch.save(obj, "/dev/full")``)."""
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@pytest.mark.parametrize("failure", ["torch", "os"])
def test_export_on_a_full_disk_is_one_line_and_leaves_the_old_model(
    failure: str,
    model_dir: Path,
    untrained_unet_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    if failure == "torch":
        monkeypatch.setattr(checkpoints.torch, "save", _torch_writer_failure)
    else:
        real_save = torch.save

        def save(obj: object, fh, *a: object, **k: object) -> None:  # type: ignore[no-untyped-def]
            fh.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, ENOSPC)

        monkeypatch.setattr(checkpoints.torch, "save", save)
        assert real_save is not save
    rc = main(["export", str(untrained_unet_run), str(model_dir), "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert (
        err[0].startswith(f"error: cannot write {model_dir / WEIGHTS}")
        and "nothing was exported" in err[0]
    )
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before  # no weights.pt.tmp either
    read_checkpoint(model_dir / WEIGHTS)


def test_export_fails_whole_when_a_small_file_cannot_be_written(
    untrained_unet_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if "postprocess" in self.name:
            real(self, data[:3])
            raise OSError(errno.ENOSPC, ENOSPC)
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    target = tmp_path / "m"
    with pytest.raises(WriteError, match=r"cannot write .*postprocess\.json: the disk is full"):
        export_model(untrained_unet_run, target)
    assert os.listdir(target) == []


def test_promote_on_a_full_disk_raises_one_line_the_page_shows(
    untrained_unet_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints.torch, "save", _torch_writer_failure)
    target = tmp_path / "models" / "new"
    with pytest.raises(OSError) as info:  # run_panel shows (ModelError, ValueError, OSError) as one line
        promote(untrained_unet_run, target)
    assert isinstance(info.value, WriteError) and "\n" not in str(info.value)
    assert f"cannot write {target / WEIGHTS}" in str(info.value)
    assert os.listdir(target) == []


def test_promote_names_a_card_that_cannot_be_written(
    untrained_unet_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glandseg_dashboard import promote as promote_mod

    real = promote_mod.atomic_write_text

    def write(path: Path, text: str) -> None:
        if Path(path).name == "MODEL_CARD.md":
            raise OSError(errno.ENOSPC, ENOSPC, str(path))
        real(path, text)

    monkeypatch.setattr(promote_mod, "atomic_write_text", write)
    target = tmp_path / "models" / "new"
    with pytest.raises(WriteError, match=r"MODEL_CARD\.md: the disk is full .*promote again"):
        promote(untrained_unet_run, target)
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------- the run log


def test_resume_drops_a_duplicated_epoch_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for epoch, loss in [(1, 0.9), (2, 0.8), (2, 0.7), (3, 0.6)]:
        append_log(tmp_path, {"epoch": epoch, "train_loss": loss})
    with caplog.at_level(logging.WARNING):
        trim_log(tmp_path, 2)
    assert [(r["epoch"], r["train_loss"]) for r in read_log(tmp_path / LOG)] == [(1, 0.9), (2, 0.7)]
    assert any("duplicated epoch" in r.getMessage() for r in caplog.records)
