"""Data sets beyond GlaS on the Metrics and drill-down pages: which sets there are, where their scores live, and
scoring a set with both models in the background. No streamlit here.

Where the scores of model folder ``<model>`` on a data set ``<set>`` live (what ``glandseg evaluate`` writes with
``--out``)::

    <set>/evaluations/<model>/per_image.csv, summary.json          the official GlaS figures
    <set>/evaluations/<model>/per_image_relabel_gt.csv, ...        ground truth split into components (diagnostic)
    <set>/evaluations/<model>/predictions/<image>_labels.png      the label maps scored
    <set>/evaluations/<model>/eval.out, eval.pid                  the dashboard's background job

so a set scored by hand shows up as well::

    glandseg evaluate --model trained_models/unet --data annotations/my-glands \\
        --out annotations/my-glands/evaluations/unet --save-predictions --relabel-gt

The sets looked at: every annotation set (``settings.annotations_root()``), and every folder in the data root
(``settings.data_root()``) that holds an ``evaluations/`` folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from glandseg_core.datasets import as_dataset
from glandseg_core.files import atomic_write_text

from . import annotation_sets, jobs, runs, settings

EVALUATIONS = "evaluations"
LOG, PID = "eval.out", "eval.pid"


@dataclass(frozen=True)
class DataSet:
    """A data set the results pages can show: ``key`` is unique (``annotations:my-glands``)."""

    key: str
    label: str
    folder: Path


def find_sets() -> list[DataSet]:
    """Annotation sets (scored or not), then folders of the data root with an ``evaluations/`` folder."""
    root = settings.annotations_root()
    out = [
        DataSet(f"annotations:{name}", f"Annotation set {name}", root / name)
        for name in annotation_sets.list_sets(root)
    ]
    data = settings.data_root()
    if data.is_dir():
        for d in sorted(p for p in data.iterdir() if (p / EVALUATIONS).is_dir()):
            out.append(DataSet(f"data:{d.name}", f"{d.name} (in {data})", d))
    return out


def evaluation_dir(folder: str | os.PathLike, model: str) -> Path:
    """Where the scores of model folder ``model`` (its name) on the set in ``folder`` live."""
    return Path(folder) / EVALUATIONS / model


def scored_models(folder: str | os.PathLike) -> dict[str, Path]:
    """Model name -> its evaluation folder, for each model whose per_image.csv the set holds."""
    root = Path(folder) / EVALUATIONS
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if (d / "per_image.csv").is_file()}


def status(folder: str | os.PathLike, model: str) -> dict:
    """``{"status": none|running|done|failed, "done": images scored so far, "total": images, "error": str}`` of
    the dashboard's scoring of ``model`` on the set."""
    out = evaluation_dir(folder, model)
    pid_path, summary = out / PID, out / "summary.json"
    total = _total(pid_path)
    if pid_path.is_file() and runs.alive(runs.read_pid(pid_path)):
        since = pid_path.stat().st_mtime
        done = sum(1 for p in (out / "predictions").glob("*.png") if p.stat().st_mtime >= since)
        return {"status": "running", "done": done, "total": total, "error": ""}
    if summary.is_file() and (
        not pid_path.is_file() or summary.stat().st_mtime >= pid_path.stat().st_mtime
    ):
        return {"status": "done", "done": total, "total": total, "error": ""}
    if pid_path.is_file():
        return {"status": "failed", "done": 0, "total": total, "error": _last_line(out / LOG)}
    return {"status": "none", "done": 0, "total": 0, "error": ""}


def _total(pid_path: Path) -> int:
    try:
        return int(pid_path.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


def start_scoring(folder: str | os.PathLike, model_dir: str | os.PathLike) -> int:
    """Score the model folder ``model_dir`` on every image of the set in ``folder``, in the background
    (``glandseg evaluate`` through :mod:`glandseg_dashboard.jobs`), into :func:`evaluation_dir`, with the
    predictions and the connected-components diagnostic. Returns the process id.

    Raises:
        DatasetError: the set cannot be read (one line). RuntimeError: this model is being scored already.
        OSError: the process could not be started.
    """
    folder, model_dir = Path(folder).resolve(), Path(model_dir).resolve()
    if status(folder, model_dir.name)["status"] == "running":
        raise RuntimeError(f"{model_dir.name} is being scored on {folder.name} already")
    total = len(as_dataset(folder).items(None))
    out = evaluation_dir(folder, model_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    args = ["evaluate", "--model", str(model_dir), "--data", str(folder), "--out", str(out)]
    args += ["--save-predictions", "--relabel-gt", "--reason", "dashboard: score a data set"]
    pid = jobs._launch(args, out / LOG)  # the Train page's launcher: detached, logged, its own session
    atomic_write_text(out / PID, f"{pid} {total}\n")
    return pid
