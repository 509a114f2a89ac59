"""Grid points scored by several processes: the val images are split between forked workers, each keeping its
images' post-processing stages and scorers from point to point (:class:`~.tune.ImageGrid` holds them), and the
parent pools each point's per-image scores. The scores are the same as in one process: each image is scored by
one worker with the same stages and memo, and the parent puts them back in image order.

Used only where ``fork`` exists (Linux): the workers inherit the cached raw outputs instead of receiving them. A
stop in the parent (``TrainingStopped`` from the signal handler while it waits) ends the workers at once; they
ignore SIGINT, so a Ctrl-C in a terminal reaches only the parent's handler.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from ..metrics import ImageScores


def _serve(conn: Connection, images: Sequence[Any]) -> None:
    """A worker: for each settings object received, the scores of its images; ``None`` ends it. SIGTERM (from
    :meth:`ScorePool.close`) ends it quietly: the parent's handler, which a fork copies, would raise
    ``TrainingStopped`` here and print a traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        post = conn.recv()
        if post is None:
            conn.close()
            return
        conn.send([im.score(post) for im in images])


def default_workers(n_images: int) -> int:
    """Processes worth starting for ``n_images`` images: the CPUs this process may use, at most one per two
    images; 1 (no pool) without ``fork``."""
    if "fork" not in mp.get_all_start_methods() or not hasattr(os, "sched_getaffinity"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), n_images // 2))


class ScorePool:
    """``pool(post)`` -> the images' ``ImageScores`` in image order, computed by ``workers`` forked processes.

    Args:
        images: objects with ``score(post) -> ImageScores`` (:class:`~.tune.ImageGrid`). workers: at least 2.
    """

    def __init__(self, images: Sequence[Any], workers: int) -> None:
        ctx = mp.get_context("fork")
        gc.collect()  # this process's garbage is collected here, not in a forked worker (batches.loader says why)
        self.n = len(images)
        self.parts = [list(range(w, self.n, workers)) for w in range(workers)]
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        try:
            for part in self.parts:
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(theirs, [images[i] for i in part]), daemon=True)
                proc.start()
                theirs.close()
                self.conns.append(ours)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    def __call__(self, post: Any) -> list[ImageScores]:
        for conn in self.conns:
            conn.send(post)
        out: list[Any] = [None] * self.n
        for conn, part in zip(self.conns, self.parts, strict=True):
            for i, scores in zip(part, conn.recv(), strict=True):
                out[i] = scores
        return out

    def close(self) -> None:
        """End the workers now (a worker busy with a point is terminated)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout=5)
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> Callable[[Any], list[ImageScores]]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
