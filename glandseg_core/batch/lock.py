"""One batch at a time per output folder: a lock the operating system drops when the process ends (even kill -9).

How it works: ``flock`` on the output folder itself (POSIX), so no lock file is left among the outputs. Under
``torchrun`` rank 0 holds it for the whole batch (it waits at the gather until every rank is done); a second
batch into the same folder is refused at once, in one line. Where folders cannot be locked (Windows, some
network file systems) the batch runs without the lock, after a warning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import FolderBusy

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


@contextlib.contextmanager
def folder_lock(out_dir: Path, *, hold: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` (which must exist) for the block; ``hold=False`` (a torchrun rank other than 0) only
    runs the block.

    Raises:
        FolderBusy: another batch writes into ``out_dir`` now (one line naming the folder).
    """
    if not hold or fcntl is None:
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in _BUSY:
                log.warning(
                    "%s: cannot lock the output folder (%s); going on without", out_dir, e.strerror
                )
            else:
                raise FolderBusy(
                    f"{out_dir}: another glandseg predict is writing into this folder now; wait for it to "
                    "finish, or choose another --out"
                ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock
