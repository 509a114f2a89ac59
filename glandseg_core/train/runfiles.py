"""The files of a run folder that the trainer writes: checkpoints, ``log.jsonl`` and ``progress.json``.

Every write names its file when it fails: a full disk is one line such as ``cannot write last.pt: disk full
(No space left on device)``, never a bare ``[enforce fail at inline_container.cc]``. Checkpoints are replaced
atomically, so a failed write leaves the previous ``last.pt`` valid. ``log.jsonl`` holds one JSON object per
finished epoch; :func:`trim_log` makes it agree with ``last.pt`` before a run continues.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..files import append_line, atomic_write_text

log = logging.getLogger(__name__)

LOG = "log.jsonl"
PROGRESS = "progress.json"
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _is_torch_write_failure(e: RuntimeError) -> bool:
    """torch's own writer failed (``torch.save`` to a path on a full disk raises this RuntimeError)."""
    msg = str(e)
    return "inline_container" in msg or "PytorchStreamWriter" in msg


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` into an ``OSError`` whose one-line message names the file and the cause,
    e.g. ``[Errno 28] cannot write runs/x/last.pt: disk full (No space left on device)``.

    Raises:
        OSError: ``errno`` kept (``ENOSPC`` for torch's writer failures); ``strerror`` is the whole message.
    """
    try:
        yield
    except OSError as e:
        if e.errno is not None and e.errno in _DISK_FULL:
            cause = f"disk full ({os.strerror(e.errno)})"
        else:
            cause = e.strerror or str(e) or type(e).__name__
        raise OSError(e.errno, f"cannot write {path}: {cause}") from e
    except RuntimeError as e:
        if not _is_torch_write_failure(e):
            raise
        first = str(e).strip().splitlines()[0][:160]
        raise OSError(
            errno.ENOSPC, f"cannot write {path}: disk full or I/O error (torch: {first})"
        ) from e


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically: readers see the old or the new file, never a partial one.

    Raises:
        OSError: one line naming ``path`` and the cause (see :func:`writing`); the old file is untouched.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path):
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``log.jsonl`` as one whole line (:func:`glandseg_core.files.append_line`:
    a failed write leaves no partial line; a torn last line of an earlier crash is repaired first).

    Raises:
        OSError: one line naming ``log.jsonl`` and the cause.
    """
    path = run_dir / LOG
    with writing(path):
        append_line(path, json.dumps(record))


def _parse_log(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) pairs of a ``log.jsonl``; a half-written last line is skipped with a warning."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the training log ({e})") from None
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip()]
    out = []
    for n, line in numbered:
        try:
            rec = json.loads(line)
        except ValueError as e:
            rec, why = None, str(e)
        else:
            why = (
                ""
                if isinstance(rec, dict) and isinstance(rec.get("epoch"), int)
                else "not an epoch record"
            )
        if why and n == numbered[-1][0]:
            log.warning("%s: skipping a half-written last line (line %d)", path, n)
            break
        if why:
            raise ValueError(f"{path}, line {n}: unreadable training log line ({why})")
        out.append((line, rec))
    return out


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (none when it is missing); a half-written last line (a crash mid-write)
    is skipped with a one-line warning naming the file.

    Raises:
        ValueError: for any other unreadable line, naming the file and the line number.
    """
    return [rec for _, rec in _parse_log(path)] if path.is_file() else []


def trim_log(run_dir: Path, last_epoch: int) -> None:
    """Keep the log records of epochs ``<= last_epoch`` (1-based; 0 empties it), so a resumed or retried run
    never writes an epoch twice; a half-written last line goes too, and so does all but the last line of an
    epoch logged twice. The kept lines are not rewritten: the file is replaced atomically, and only when
    something is dropped.

    Raises:
        ValueError: an unreadable line other than a half-written last one (names the file and line).
        OSError: one line naming ``log.jsonl`` and the cause.
    """
    path = run_dir / LOG
    if not path.is_file():
        return
    kept = [(line, rec) for line, rec in _parse_log(path) if rec["epoch"] <= last_epoch]
    last = {rec["epoch"]: i for i, (_, rec) in enumerate(kept)}  # an epoch logged twice: its last line
    if len(last) < len(kept):
        log.warning("%s: dropping %d duplicated epoch line(s)", path, len(kept) - len(last))
    text = "".join(line + "\n" for i, (line, rec) in enumerate(kept) if last[rec["epoch"]] == i)
    if text != path.read_text(encoding="utf-8"):
        with writing(path):
            atomic_write_text(path, text)


def write_progress(run_dir: Path, **fields: Any) -> None:
    """Replace ``progress.json`` with ``fields`` plus the time and this process id.

    Raises:
        OSError: one line naming ``progress.json`` and the cause.
    """
    path = run_dir / PROGRESS
    with writing(path):
        atomic_write_text(path, json.dumps({**fields, "time": time.time(), "pid": os.getpid()}) + "\n")


def try_write_progress(run_dir: Path, **fields: Any) -> None:
    """:func:`write_progress`, but a failure (the disk that just filled up) is only logged, so it never hides
    the error being reported."""
    try:
        write_progress(run_dir, **fields)
    except OSError as e:
        log.warning("%s", e)
