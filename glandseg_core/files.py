"""Writing files safely: atomic replacement, so readers see the old or the new file, never a partial one;
and one-line descriptions of why a write failed (disk full, permission denied, ...), naming the file.

The lowest layer of the package (it imports nothing of glandseg's): config, thresholds, io, training and
exports all write through it.
"""

from __future__ import annotations

import contextlib
import errno
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
        OSError: The folder is missing or not writable, the disk is full, ... Its ``filename`` is ``path``
            (not the temporary file), so ``str(exc)`` and :func:`describe_os_error` name it.
    """
    target = Path(path)
    try:
        _atomic_write(target, data)
    except OSError as exc:
        if exc.errno is None:  # a bare message: str(exc) would show a filename as "[Errno None] None"
            raise
        if exc.filename2 is not None:  # a failed rename: name the target only
            raise type(exc)(exc.errno, exc.strerror, os.fspath(target)) from exc
        exc.filename = os.fspath(target)
        raise


def _atomic_write(target: Path, data: bytes | bytearray | memoryview) -> None:
    """The body of :func:`atomic_write_bytes` (errors leave the target untouched and no temporary file)."""
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


_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
    errno.EFBIG: "the file is too large for the file system",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "an input/output error (a failing disk or a lost network share?)",
}


def describe_os_error(path: str | os.PathLike[str] | None, exc: OSError, action: str = "write") -> str:
    """One line for the user: what could not be done to which file, and why in plain words.

    Args:
        path: The file concerned; None uses ``exc.filename`` (then "a file" when that is missing too).
        exc: The error, e.g. from :func:`atomic_write_bytes` or ``torch.save``.
        action: The verb: "write", "read", "create", ...

    Returns:
        e.g. ``"cannot write out/testB_2.png: the disk is full (No space left on device)"``.
    """
    name = os.fspath(path) if path is not None else exc.filename
    target = os.fsdecode(name) if name is not None else "a file"
    detail = exc.strerror or str(exc) or type(exc).__name__
    cause = _CAUSES.get(exc.errno) if exc.errno is not None else None
    why = f"{cause} ({detail})" if cause else detail
    return f"cannot {action} {target}: {why}"
