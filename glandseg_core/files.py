"""Writing files safely: atomic replacement, so readers see the old or the new file, never a partial one;
and one-line descriptions of why a write failed (disk full, permission denied, ...), naming the file.

The lowest layer of the package (it imports nothing of glandseg's): config, thresholds, io, training and
exports all write through it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: appends are still single writes, without the lock
    fcntl = None  # type: ignore[assignment]


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


# ------------------------------------------------------------------------------------- appended lines

_log = logging.getLogger(__name__)
TORN_SUFFIX = ".torn"  # a torn last line is moved to <file>.torn, never dropped unseen


def _is_json(text: bytes) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _torn_tail(fd: int, size: int) -> bytes:
    """The bytes after the last newline of the open file ``fd`` of ``size`` bytes (b"" when it ends in one)."""
    tail, pos = b"", size
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return chunk[cut + 1 :] + tail
        tail = chunk + tail
    return tail


def _repair(fd: int, path: Path) -> bytes:
    """Make the file end in a newline before an append; returns the bytes to write first.

    A last line without its newline that is whole JSON is kept (a newline is added); anything else is a torn
    write: it is moved to ``<file>.torn`` and cut off, with a warning naming both files.
    """
    size = os.fstat(fd).st_size
    tail = _torn_tail(fd, size) if size else b""
    if not tail:
        return b""
    if _is_json(tail):
        return b"\n"
    torn = path.with_name(path.name + TORN_SUFFIX)
    with open(torn, "ab") as fh:
        fh.write(tail + b"\n")
    os.ftruncate(fd, size - len(tail))
    _log.warning(
        "%s: a torn last line (%d bytes, an interrupted write) was moved to %s", path, len(tail), torn
    )
    return b""


def append_line(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` as one whole line: readers and later appends never see half of it.

    How it works: the file is opened with ``O_APPEND`` and locked (``flock``, POSIX) against other appenders;
    a torn last line left by an earlier crash or full disk is repaired first (:func:`_repair`: kept when it is
    whole JSON, else moved to ``<file>.torn`` with a warning); then the line and its newline go out in a
    single ``os.write``. A short or failed write is cut off again, so the file still ends in a whole line.

    Args:
        path: The file (created when missing); its folder must exist.
        text: One line, without a newline inside (a trailing one is allowed).

    Raises:
        ValueError: ``text`` holds a newline before its end.
        OSError: the disk is full, ...: ``filename`` is ``path``; the file is as it was before.
    """
    target = Path(path)
    line = text.removesuffix("\n")
    if "\n" in line:
        raise ValueError(f"{target}: a record to append must be one line")
    data = (line + "\n").encode("utf-8")
    try:
        fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        exc.filename = os.fspath(target)
        raise
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _append_locked(fd, target, data)
    except OSError as exc:
        if exc.errno is None:
            raise
        exc.filename = os.fspath(target)
        raise
    finally:
        os.close(fd)


def _append_locked(fd: int, target: Path, data: bytes) -> None:
    """The body of :func:`append_line` once the file is open and locked."""
    data = _repair(fd, target) + data
    start = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write: the disk filled up in the middle of the line
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _salvage(line: str) -> Any:
    """A whole JSON object at the end of ``line`` (a torn record glued to the next one), else None."""
    decoder = json.JSONDecoder()
    for i in range(1, len(line)):
        if line[i] != "{":
            continue
        try:
            value, end = decoder.raw_decode(line, i)
        except ValueError:
            continue
        if end == len(line.rstrip()):
            return value
    return None


def read_json_lines(path: str | os.PathLike[str]) -> list[Any]:
    """The JSON values of a JSON Lines file, oldest first ([] when it is missing), tolerant of faults.

    A torn line (an interrupted append) is skipped with a warning naming the file and line; a record that an
    older writer glued onto such a torn line is recovered.

    Raises:
        OSError: the file exists but cannot be read.
    """
    target = Path(path)
    if not target.is_file():
        return []
    out = []
    for n, line in enumerate(target.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
            continue
        except ValueError:
            pass
        rescued = _salvage(line)
        if rescued is not None:
            out.append(rescued)
            _log.warning(
                "%s, line %d: a torn record glued to the next one; the next one is kept", target, n
            )
        else:
            _log.warning("%s, line %d: skipped a torn or unreadable line", target, n)
    return out
