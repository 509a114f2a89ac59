"""Writing files safely: atomic replacement, so readers see the old or the new file, never a partial one.

The lowest layer of the package (it imports nothing of glandseg's): config, thresholds, io, training and
exports all write through it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a partial one.

    How it works: the data go to a hidden temporary file in the same folder, which is flushed, fsynced
    and renamed over the target with ``os.replace`` (atomic on POSIX and Windows). On any error the
    temporary file is removed and the old file is left untouched. An existing file keeps its permission
    bits; a new one gets 0o644.

    Args:
        path: Destination file; its folder must exist.
        data: The new content.

    Raises:
        OSError: The folder is missing or not writable, the disk is full, ...
    """
    target = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        with contextlib.suppress(OSError):
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`).

    Args:
        path: Destination file; its folder must exist.
        text: The new content, written as is (no newline translation).

    Raises:
        OSError: The folder is missing or not writable, the disk is full, ...
    """
    atomic_write_bytes(path, text.encode("utf-8"))
