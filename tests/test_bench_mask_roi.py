"""benchmarks/bench_mask_roi.py keeps working (a tiny run: 2 RoIs a crop, one repeat)."""

from __future__ import annotations

import pytest

from benchmarks import bench_mask_roi as bench


def test_the_finer_roialign_is_measured_against_torchvisions(capsys: pytest.CaptureFixture[str]) -> None:
    forward, both = bench.measure(28, rois=2, repeats=1)
    assert forward > 0 and both > 0
    assert bench.main(["--threads", "1", "--rois", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "8 RoIs of 256 channels, 1 thread"
    assert lines[1].startswith("RoIAlign 14x14:") and "(1.00x)" in lines[1]
    assert lines[2].startswith("RoIAlign 28x28:")
