"""Before vs after of a fine-tuning run: the base model and the fine-tuned one scored on the held-out images,
in the background, and what the Train page shows of it (table, per-image differences, overlays).

The scoring is :func:`glandseg_core.evaluation.compare_models.compare_models`, run as a child process in its own
session (like every job of :mod:`.jobs`) into ``<run>/before_after/`` (``base/`` and ``tuned/``: per-image
tables, summaries and the predicted label maps, from which the overlays are drawn without segmenting again).
No streamlit here.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from glandseg_core.evaluation.compare_models import SIDES, paired_table, read_comparison
from glandseg_core.evaluation.scoring import PREDICTION_SUFFIX
from glandseg_core.files import atomic_write_text
from glandseg_core.imaging.io import read_image, read_label_map
from glandseg_core.outputs.overlays import outcome_overlay, overlay

from . import finetune, runs
from .settings import APP_DIR

OUT, LOG, PID = "before_after", "before_after.out", "before_after.pid"
_CODE = (
    "import sys; from glandseg_core.evaluation.compare_models import compare_models; "
    "compare_models(sys.argv[1], sys.argv[2], sys.argv[3], ('test',), sys.argv[4], device=sys.argv[5] or None)"
)


def status(run_dir: Path) -> dict[str, Any]:
    """``{"status": none|running|done|failed, "done": int, "total": int, "error": str}`` of a run's scoring
    (``done``: label maps written so far by this launch, both models together)."""
    pid_path = run_dir / PID
    if pid_path.exists() and runs.alive(runs.read_pid(pid_path)):
        since = pid_path.stat().st_mtime
        written = [p for s in SIDES for p in (run_dir / OUT / s / "predictions").glob("*.png")]
        done = sum(1 for p in written if p.stat().st_mtime >= since)
        total = 2 * len(finetune.read_record(run_dir).get("held_out", []))
        return {"status": "running", "done": done, "total": total, "error": ""}
    summaries = [run_dir / OUT / s / "summary.json" for s in SIDES]
    launched = pid_path.stat().st_mtime if pid_path.exists() else 0.0
    if all(p.is_file() and p.stat().st_mtime >= launched for p in summaries):
        return {"status": "done", "done": 0, "total": 0, "error": ""}
    if pid_path.exists():
        with contextlib.suppress(OSError):
            lines = [ln for ln in (run_dir / LOG).read_text(errors="replace").splitlines() if ln.strip()]
            return {
                "status": "failed",
                "done": 0,
                "total": 0,
                "error": lines[-1] if lines else "no output",
            }
        return {"status": "failed", "done": 0, "total": 0, "error": "no output"}
    return {"status": "none", "done": 0, "total": 0, "error": ""}


def start(run_dir: Path) -> int:
    """Score the base model and the run's ``best.pt`` on the held-out images, in the background.

    Raises:
        FileNotFoundError: not a fine-tuning run, or no ``best.pt`` yet. RuntimeError: a scoring runs already.
        OSError: the process could not be started.
    """
    record = finetune.read_record(run_dir)
    if not record:
        raise FileNotFoundError(f"{run_dir.name} is not a fine-tuning run (no {finetune.RECORD})")
    if not (run_dir / "best.pt").is_file():
        raise FileNotFoundError(f"{run_dir.name} has no best.pt yet (no validated epoch)")
    if status(run_dir)["status"] == "running":
        raise RuntimeError(f"{run_dir.name}: the before/after scoring runs already")
    data, out = run_dir / finetune.RUN_DATA, run_dir / OUT
    args = [record["base"], str(run_dir), str(data), str(out), record.get("device") or ""]
    with open(run_dir / LOG, "ab") as log:
        log.write(f"\n$ before/after scoring ({time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-c", _CODE, *args],
            cwd=APP_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    atomic_write_text(run_dir / PID, f"{proc.pid}\n")
    return proc.pid


def stop(run_dir: Path) -> bool:
    """End a running scoring (SIGTERM); True when one ran."""
    pid = runs.read_pid(run_dir / PID)
    if status(run_dir)["status"] != "running" or not pid:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).send_signal(signal.SIGTERM)
    return True


def results(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(one row per metric: base, fine-tuned, mean per-image difference with its 95% interval; one row per
    held-out image with both models' scores and the difference), or None before the scoring is done."""
    comparison = read_comparison(run_dir / OUT)
    if comparison is None:
        return None
    table = paired_table(comparison)
    cols = ["f1", "object_dice", "object_hausdorff"]
    base = comparison.per_image["base"].set_index("image")[cols]
    tuned = comparison.per_image["tuned"].set_index("image")[cols]
    per_image = pd.concat(
        {"base": base, "fine-tuned": tuned, "difference": tuned - base}, axis=1
    ).reset_index()
    return table, per_image


def overlays(run_dir: Path, name: str) -> dict[str, np.ndarray]:
    """Held-out image ``name`` with its ground truth and each model's outcomes (found, merged, split, false,
    missed) drawn over it: ``{"truth", "base", "tuned"}``, uint8[H, W, 3] each.

    Raises:
        ImageError: a file is missing or unreadable (one line naming it).
    """
    data = run_dir / finetune.RUN_DATA
    image = read_image(data / "images" / f"{name}.png")
    truth = read_label_map(data / "labels" / f"{name}.png", shape=image.shape[:2])
    out = {"truth": overlay(image, truth)}
    for side in SIDES:
        path = run_dir / OUT / side / "predictions" / f"{name}{PREDICTION_SUFFIX}.png"
        out[side] = outcome_overlay(image, read_label_map(path, shape=image.shape[:2]), truth)
    return out


__all__ = ["LOG", "OUT", "PID", "overlays", "results", "start", "status", "stop"]
