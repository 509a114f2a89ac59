"""Slide windows segmented one or two at once (glandseg_core/slides/lanes.py): results in window order, a
second window only when the first one's memory growth fits the bound twice, closing stops the rest."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from glandseg_core.segmenters.instances import Instances
from glandseg_core.slides import lanes


class Recorder:
    """A stand-in segmenter: each window's one instance is scored by its x; records how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.most = self.calls = 0

    def window_instances(self, image: np.ndarray, progress: object = None) -> Instances:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05 if image[0, 0, 0] % 2 else 0.01)  # odd windows slower: they finish out of order
        with self.lock:
            self.running -= 1
        mask = np.ones((2, 2), bool)
        box = np.array([[0, 0, 2, 2]], np.int64)
        return Instances(np.array([image[0, 0, 0]], np.float32), box, [mask], np.zeros(1, bool))


def _read(y: int, x: int) -> np.ndarray:
    return np.full((4, 4, 3), x, np.uint8)


@pytest.mark.parametrize("bound, most", [(2**50, 2), (0, 1)])
def test_windows_come_back_in_order_two_at_once_only_when_memory_allows(bound: int, most: int) -> None:
    seg = Recorder()
    jobs = [(0, x) for x in range(8)]
    got = [float(inst.scores[0]) for inst in lanes.segment_windows(seg, _read, jobs, bound)]  # type: ignore[arg-type]
    assert got == [float(x) for _, x in jobs]
    assert seg.most == most


def test_closing_the_windows_stops_those_not_started() -> None:
    seg = Recorder()
    results = lanes.segment_windows(seg, _read, [(0, x) for x in range(20)], 2**50)  # type: ignore[arg-type]
    next(results)
    next(results)
    results.close()
    assert seg.calls <= 4 and seg.running == 0


def test_a_window_that_fails_raises_in_order() -> None:
    def read(y: int, x: int) -> np.ndarray:
        if x == 2:
            raise OSError("cannot read window 2")
        return _read(y, x)

    results = lanes.segment_windows(Recorder(), read, [(0, x) for x in range(5)], 2**50)  # type: ignore[arg-type]
    assert [float(next(results).scores[0]) for _ in range(2)] == [0.0, 1.0]
    with pytest.raises(OSError, match="window 2"):
        next(results)
