"""glandseg_core.progress.time_left: the time left from finished units, with a fake clock (issue #22: the
Mask R-CNN's TTA estimate rose from 42 s to about 2 min while one view ran)."""

from __future__ import annotations

import pytest

from glandseg_core.progress import time_left


def test_a_slow_view_never_raises_the_estimate_while_it_runs() -> None:
    # 8 TTA views; the first took 6 s (started at t=0, finished at t=6); the second is stuck for 30 s
    estimates = [time_left(0.0, 6.0, 1, 8, now) for now in (6.0, 7.0, 9.0, 12.0, 20.0, 36.0)]
    assert estimates[0] == pytest.approx(42.0)  # 7 views x 6 s
    assert all(b <= a for a, b in zip(estimates, estimates[1:], strict=False))  # never up while stuck
    assert estimates[-1] == pytest.approx(36.0)  # held at the 6 views after this one
    # the old "elapsed / done x left" said 84 s after 12 s and 210 s after 36 s: "about 2 min" and more
    assert max(estimates) < 84.0


def test_the_rate_comes_from_finished_units_only() -> None:
    # 10 units of 2 s; after 4 of them (t=8), one second into the fifth
    assert time_left(0.0, 8.0, 4, 10, 9.0) == pytest.approx(2 * 5 + 1)
    # a slower finished unit raises the rate honestly when it finishes: 4 units in 12 s = 3 s each
    assert time_left(0.0, 12.0, 4, 10, 12.0) == pytest.approx(3 * 6)
    assert time_left(5.0, None, 0, 10, 9.0) is None  # nothing finished: nothing to estimate from
    assert time_left(0.0, 20.0, 10, 10, 25.0) == 0.0
