"""The engine tests (tests/engine_cases.py) in a pytest process of their own.

With OpenVINO and ONNX Runtime loaded into the suite's process by those tests, a later in-process training
(tests/test_faults.py) crashed the whole suite with a segmentation fault and no Python traceback, on this
machine (2026-12-06; each half passes alone). Running the engine cases in a child process keeps every one of
their checks and keeps those runtimes out of the suite's process. The child gets the same marker selection
(``-m "not slow"`` in the fast lane).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("engine_cases.py")


def test_engine_cases_in_their_own_process(request: pytest.FixtureRequest) -> None:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)]
    markexpr = request.config.option.markexpr
    if markexpr:
        args += ["-m", markexpr]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1200, cwd=CASES.parents[1])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]
