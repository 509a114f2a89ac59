"""A run folder's last change is read while the trainer may remove files (its lock on stop)."""

import os
from pathlib import Path

import pytest

from glandseg_dashboard import runs


def test_a_file_removed_while_listed_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "log.jsonl").write_text("{}\n")
    os.utime(tmp_path / "log.jsonl", (100.0, 100.0))
    lock = tmp_path / ".train.lock.json"
    lock.write_text("{}")
    real, seen = Path.stat, []

    def gone_on_stat(self: Path, **kw: object) -> os.stat_result:
        if self.name == lock.name:
            seen.append(self)
            if len(seen) > 1:  # there for is_file(), removed by the trainer before its own stat
                raise FileNotFoundError(self)
        return real(self, **kw)

    monkeypatch.setattr(Path, "stat", gone_on_stat)
    assert runs._last_change(tmp_path) == 100.0 and len(seen) == 2
    assert runs._last_change(tmp_path / "empty-run-has-no-files") == 0.0
