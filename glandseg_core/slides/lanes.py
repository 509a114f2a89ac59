"""Segment a slide's windows in order, overlapping reading, the network and post-processing.

How it works: a reader thread reads the windows ahead (OpenSlide decodes and Pillow shrinks outside the GIL),
and worker threads segment them (:func:`windows.window_instances`). The first window is segmented alone;
its growth of the process's memory (peak RSS after it, less the RSS before it) says whether a second window
fits beside it: when the peak so far plus :data:`MARGIN` times that growth stays under :data:`PEAK_BOUND` (and
under what the machine has available), two windows are segmented at once from then on. On two cores that lets one window's
post-processing (the U-Net's watershed, mostly Python and single-threaded) run while the other's network
(ONNX Runtime or PyTorch, which release the GIL) uses the cores, instead of leaving one idle. A network held
by an engine runs one call at a time (``engines.runners``), so only its buffers exist once. A Mask R-CNN on
2048-px windows grows by more than the bound allows and stays at one window at a time.

Results come back in the order of the windows whatever finishes first; the outputs are the same as
one window at a time (each window is segmented on its own).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import psutil

from ..segmenters.base import WindowSegmenter
from ..segmenters.instances import Instances
from .windows import window_instances

PEAK_BOUND = 3_000_000_000  # bytes: issue #22's slide peak memory bound (benchmarks/README.md)
# a second window's growth and half a window more: on the 20k slide the U-Net's peak with two windows at once
# ended 330 MB above the peak after the first plus one window's growth (each thread's allocator keeps its own)
MARGIN = 1.5
log = logging.getLogger("glandseg")

Job = tuple[int, int]  # (y, x) of a window, in model pixels


def _peak_rss() -> int:
    """The process's peak resident set so far, in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def lanes_after_first(rss_before: int, bound: int = PEAK_BOUND) -> int:
    """How many windows to segment at once after the first: 2 when the peak so far plus :data:`MARGIN` times the
    first window's growth (peak after it, less ``rss_before``) stays under ``bound`` and what the machine has
    available."""
    peak = _peak_rss()
    growth = max(0, peak - rss_before)
    room = min(bound, psutil.Process().memory_info().rss + psutil.virtual_memory().available)
    lanes = 2 if peak + MARGIN * growth <= room else 1
    log.debug(
        "slide: %d window(s) at once (peak %.0f MB, a window %.0f MB)",
        lanes,
        peak / 2**20,
        growth / 2**20,
    )
    return lanes


def segment_windows(
    segmenter: WindowSegmenter,
    read: Callable[[int, int], np.ndarray],
    jobs: list[Job],
    bound: int = PEAK_BOUND,
) -> Generator[Instances, None, None]:
    """The instances of each window in ``jobs`` (``read(y, x)`` gives its pixels), in order.

    Closing the iterator (or an error in a window) cancels the windows not started and waits for the ones
    running (seconds).
    """
    reader, workers = ThreadPoolExecutor(1), ThreadPoolExecutor(2)
    reads: dict[int, Future[np.ndarray]] = {}
    segs: dict[int, Future[Instances]] = {}

    def want(i: int) -> None:
        """Read window ``i`` ahead (if it exists)."""
        if i < len(jobs) and i not in reads:
            reads[i] = reader.submit(read, *jobs[i])

    def start(i: int) -> None:
        """Segment window ``i`` in a worker (reading it first if not yet asked)."""
        if i < len(jobs) and i not in segs:
            want(i)
            segs[i] = workers.submit(lambda f: window_instances(segmenter, f.result()), reads[i])

    try:
        rss_before, lanes = psutil.Process().memory_info().rss, 1
        for i in range(len(jobs)):
            for j in range(i, i + lanes):
                start(j)
            want(i + lanes)
            inst = segs.pop(i).result()
            del reads[i]
            if i == 0:
                lanes = lanes_after_first(rss_before, bound)
            yield inst
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
        reader.shutdown(wait=True, cancel_futures=True)
