"""One training at a time: file locks that the operating system releases when the process dies (even kill -9).

Two locks guard a training:

- the machine-wide lock ``$GLANDSEG_LOCK_DIR/train.lock`` (default ``~/.cache/glandseg``): one training per
  machine, so two do not share the CPU or GPU (:func:`training_lock`). :func:`fit` holds it when its caller asks
  (``machine_lock=True``): ``glandseg train`` does, and so every training the dashboard launches; a library
  caller training on its own data decides for itself;
- a lock inside the run folder (``.train.lock``): one training per run folder whatever the lock folder, so two
  trainers never write the same ``last.pt`` and ``log.jsonl`` (:func:`run_folder_lock`); :func:`fit` always
  holds it.

How it works: each lock is a `filelock <https://py-filelock.readthedocs.io>`_ lock (``flock`` on POSIX,
``msvcrt.locking`` on Windows). Who holds it (``{"pid", "run_dir"}``) is written beside it in ``<lock>.json``,
because a lock file held on Windows cannot be read by other processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import TrainingBusy
from ..files import atomic_write_text

RUN_LOCK = ".train.lock"


def lock_path() -> Path:
    """The machine-wide training lock: ``$GLANDSEG_LOCK_DIR/train.lock`` (default ``~/.cache/glandseg``)."""
    root = Path(os.environ.get("GLANDSEG_LOCK_DIR", Path.home() / ".cache" / "glandseg"))
    root.mkdir(parents=True, exist_ok=True)
    return root / "train.lock"


def _info_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_holder(path: Path) -> dict:
    """The holder record beside lock ``path`` (``{}`` when missing or unreadable)."""
    try:
        who = json.loads(_info_path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return who if isinstance(who, dict) else {}


def _holder(path: Path) -> dict | None:
    """Who holds lock ``path`` now, or None when it is free (probed by taking it for an instant)."""
    probe = FileLock(path)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return _read_holder(path)
    probe.release()
    return None


def lock_holder() -> dict | None:
    """Who holds the machine-wide training lock now (``{"pid", "run_dir"}``), or None when it is free."""
    return _holder(lock_path())


def run_folder_holder(run_dir: Path) -> dict | None:
    """Who trains ``run_dir`` now (``{"pid", "run_dir"}``), or None; a folder never trained has no lock file."""
    path = Path(run_dir) / RUN_LOCK
    return _holder(path) if path.is_file() else None


@contextlib.contextmanager
def _hold(path: Path, run_dir: Path, busy: str) -> Iterator[None]:
    """Hold lock ``path`` for the block, recording this process and ``run_dir`` beside it.

    Raises:
        TrainingBusy: ``busy`` (formatted with the holder's ``pid`` and ``run``) when another process holds it.
    """
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = _read_holder(path)
        raise TrainingBusy(busy.format(pid=who.get("pid", "?"), run=who.get("run_dir", "?"))) from None
    try:
        atomic_write_text(_info_path(path), json.dumps({"pid": os.getpid(), "run_dir": str(run_dir)}))
        yield
    finally:
        with contextlib.suppress(OSError):
            _info_path(path).unlink()
        lock.release()


def training_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the machine-wide training lock for the duration of the block (``run_dir`` is recorded, not locked).

    Raises:
        TrainingBusy: when another process holds it (one line naming its pid and run folder).
    """
    busy = "another training is running (pid {pid}, run {run}); wait for it or stop it first"
    return _hold(lock_path(), Path(run_dir), busy)


def remove_unused_run_folder(run_dir: Path, created: list[Path]) -> None:
    """Remove the folders a run created (``created``, deepest first) when the run failed before writing
    anything: the run folder then holds nothing but its own free lock file, and a parent nothing at all.

    The lock is taken (without waiting) while its file is removed, so a training that has just taken it is
    never pulled out from under; a folder in any other state stays as it is.
    """
    run_dir = Path(run_dir)
    if not created or created[0] != run_dir:
        return
    lock = FileLock(run_dir / RUN_LOCK)
    try:
        if {p.name for p in run_dir.iterdir()} - {RUN_LOCK}:
            return
        lock.acquire(timeout=0)
    except (OSError, Timeout):
        return
    try:
        if not {p.name for p in run_dir.iterdir()} - {RUN_LOCK}:
            (run_dir / RUN_LOCK).unlink(missing_ok=True)
    except OSError:
        return
    finally:
        lock.release()
    for folder in created:  # only when empty
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def removed_if_unused(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Run the block; when it raises (``enabled``: rank 0), remove the folders it created for ``run_dir`` if
    nothing was written there (:func:`remove_unused_run_folder`), so a refused run leaves no folder behind."""
    created = [p for p in (Path(run_dir), *Path(run_dir).parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        if enabled:
            remove_unused_run_folder(Path(run_dir), created)
        raise


def run_folder_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the lock inside ``run_dir`` (which must exist) for the duration of the block.

    Raises:
        TrainingBusy: when another process trains this run folder (one line naming its pid and the folder).
    """
    busy = "another training is writing this run folder (pid {pid}, run {run}); wait for it or stop it first"
    return _hold(Path(run_dir) / RUN_LOCK, Path(run_dir), busy)
