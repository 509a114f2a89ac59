"""The README's "Python API" examples run as written (issue #19 item 5), in one fresh interpreter, in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def api_blocks() -> list[str]:
    """The ```python blocks of the README's "## Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_python_api_examples() -> None:
    blocks = api_blocks()
    assert len(blocks) >= 4
    used = " ".join(blocks)
    for name in (
        "gs.segment",
        "gs.load_segmenter",
        "gs.evaluate",
        "gs.score_image",
        "gs.fit",
        "mpp=0.31",
    ):
        assert name in used, name


@pytest.mark.slow
def test_the_readme_python_api_examples_run(tmp_path: Path) -> None:
    script = "\n".join(api_blocks()).replace('"runs/readme-demo"', repr(str(tmp_path / "demo")))
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLANDSEG_LOCK_DIR": str(tmp_path / "locks")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    n_plain = int(re.search(r"U-Net: (\d+) glands", out).group(1))  # type: ignore[union-attr]
    n_40x = int(re.search(r"at 0.31 µm/px: (\d+) glands", out).group(1))  # type: ignore[union-attr]
    assert abs(n_plain - n_40x) <= 1, out  # issue #19: same count (±1) at twice the resolution
    assert "(1044, 1550)" in out and "pooled F1:" in out and "val F1 after one step:" in out, out
