"""One training at a time: an exclusive ``flock`` that the kernel releases when the process dies (even kill -9)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path


class TrainingBusy(RuntimeError):
    """Another training is running (one-line message naming it)."""


def lock_path() -> Path:
    """The machine-wide training lock: ``$GLANDSEG_LOCK_DIR/train.lock`` (default ``~/.cache/glandseg``)."""
    root = Path(os.environ.get("GLANDSEG_LOCK_DIR", Path.home() / ".cache" / "glandseg"))
    root.mkdir(parents=True, exist_ok=True)
    return root / "train.lock"


def lock_holder() -> dict | None:
    """Who holds the training lock now (``{"pid", "run_dir"}``), or None when it is free."""
    path = lock_path()
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                return json.loads(f.read() or "{}")
            except json.JSONDecodeError:
                return {}
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold the training lock for the duration of the block.

    Raises:
        TrainingBusy: when another process holds it.
    """
    f = open(lock_path(), "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                who = json.loads(f.read() or "{}")
            except json.JSONDecodeError:
                who = {}
            raise TrainingBusy(
                f"another training is running (pid {who.get('pid', '?')}, run {who.get('run_dir', '?')}); "
                "wait for it or stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "run_dir": str(run_dir)}))
        f.flush()
        yield
    finally:
        f.close()  # closing releases the flock
