"""The state of training run folders, read from what the trainer writes (``progress.json``, ``log.jsonl``, pids).

Status words: ``running``, ``starting`` (launched, no step yet), ``finished``, ``stopped``, ``failed``, ``dead``
(the trainer vanished without saying why, e.g. killed) or ``new`` (nothing launched). Process checks use
``psutil`` (a pid counts as ours only while its command line mentions ``glandseg_core``). No streamlit here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from glandseg_core.config import RunConfig, load_config
from glandseg_core.files import atomic_write_text

REQUESTED_CONFIG = "requested_config.json"
TRAIN_OUT, TRAIN_PID = "train.out", "train.pid"
EVAL_DIR, EVAL_OUT, EVAL_PID = "eval", "eval.out", "eval.pid"  # Test A + B (copied by Promote)
VAL_EVAL_DIR, VAL_EVAL_OUT, VAL_EVAL_PID = "eval_val", "eval_val.out", "eval_val.pid"
EVALS = {"test": (EVAL_DIR, EVAL_OUT, EVAL_PID), "val": (VAL_EVAL_DIR, VAL_EVAL_OUT, VAL_EVAL_PID)}
PHASE_KEYS = ("phase", "unit", "done", "total", "phase_started", "time")
PREFS = ".dashboard.json"  # the Train page's remembered data folder and preset, in the runs root
RUN_COLUMNS = [
    "name",
    "model",
    "recipe",
    "status",
    "phase",
    "epoch",
    "epochs",
    "best_val_f1",
    "best_epoch",
    "updated",
]


def alive(pid: int | None, marker: str = "glandseg_core") -> bool:
    """True when ``pid`` runs (not a zombie) and its command line mentions ``marker`` (guards pid reuse)."""
    if not pid or pid <= 0:
        return False
    try:
        proc = psutil.Process(int(pid))
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(timeout=0)  # reap our own finished child
            return False
        return marker in " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``{}`` when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (read from its end)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def read_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``log.jsonl`` as a table, one row per epoch (an unfinished last line is skipped); empty if none."""
    rows = []
    with contextlib.suppress(OSError):
        for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return pd.DataFrame(rows)


def _status_word(
    progress: dict[str, Any], stale: bool, pid_file: int | None, is_alive: bool, last_line: str
) -> str:
    status = progress.get("status")
    if stale and is_alive:
        return "starting"
    if stale and pid_file:
        # the last launch ended before its first step: stopped while setting up, or failed (bad data, lock taken)
        return "stopped" if last_line.startswith("stopped:") else "failed"
    if status == "running" and not is_alive:
        return "dead"
    return status or "new"


def _last_change(run_dir: Path) -> float:
    """The newest modification time of the run folder's files (0 when none); a file the trainer removes while
    they are listed (its lock, a temporary file) is skipped."""
    times = []
    for p in run_dir.glob("*"):
        with contextlib.suppress(FileNotFoundError):
            if p.is_file():
                times.append(p.stat().st_mtime)
    return max(times, default=0.0)


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The state of one run folder.

    Returns:
        ``{"status", "alive", "pid", "epoch", "epochs", "step", "steps", "loss", "error", "updated", "phase",
        "unit", "done", "total", "phase_started", "time", "message", "resume", "has_best", "has_last"}``
        (status: see the module docstring; phase and its ``done`` of ``total`` ``unit``: see
        ``glandseg_core.train.phases``; a stopped run's ``message`` and ``resume``: its ``progress.json``).
    """
    run_dir = Path(run_dir)
    progress = read_json(run_dir / "progress.json")
    pid_file = read_pid(run_dir / TRAIN_PID)
    launched = (run_dir / TRAIN_PID).stat().st_mtime if (run_dir / TRAIN_PID).exists() else 0.0
    stale = launched > progress.get("time", 0.0)  # the last launch has not written progress yet
    pid = pid_file if stale or not progress.get("pid") else progress["pid"]
    is_alive = alive(pid)
    last_line = _last_line(run_dir / TRAIN_OUT) if stale and not is_alive else ""
    status = _status_word(progress, stale, pid_file, is_alive, last_line)
    error = progress.get("error") or ""
    if status in ("failed", "dead") and (run_dir / TRAIN_OUT).exists():
        error = _last_line(run_dir / TRAIN_OUT) or error
    epoch = progress.get("epoch")
    log = read_log(run_dir)
    if epoch is None and not log.empty:
        epoch = int(log["epoch"].iloc[-1])
    updated = _last_change(run_dir)
    fresh = {} if stale else progress  # a new launch: the previous attempt's phase is not this one's
    return {
        "status": status,
        "alive": bool(is_alive),
        "pid": pid,
        "epoch": epoch,
        "epochs": progress.get("epochs"),
        "step": progress.get("step"),
        "steps": progress.get("steps"),
        "loss": progress.get("loss"),
        "error": error,
        "updated": updated,
        **{k: fresh.get(k) for k in PHASE_KEYS},
        "message": fresh.get("message")
        or (last_line[len("stopped:") :].strip() if status == "stopped" else ""),
        "resume": fresh.get("resume") or "",
        "has_best": (run_dir / "best.pt").is_file(),
        "has_last": (run_dir / "last.pt").is_file(),
    }


def _run_row(d: Path) -> dict[str, Any]:
    cfg = read_json(d / "config.json") or read_json(d / REQUESTED_CONFIG)
    st = run_status(d)
    log = read_log(d)
    best = log.loc[log["val_f1"].idxmax()] if "val_f1" in log and log["val_f1"].notna().any() else None
    return {
        "name": d.name,
        "path": str(d),
        "model": cfg.get("model", "?"),
        "recipe": cfg.get("name", "?"),
        "status": st["status"],
        "epoch": st["epoch"],
        "epochs": st["epochs"] or cfg.get("train_epochs"),
        "best_epoch": None if best is None else int(best["epoch"]),
        "best_val_f1": None if best is None else float(best["val_f1"]),
        "best_val_object_dice": None
        if best is None
        else float(best.get("val_object_dice", float("nan"))),
        "has_best": st["has_best"],
        "has_last": st["has_last"],
        "phase": st["phase"] if st["status"] in ("running", "stopped") else "",
        "updated": st["updated"],
    }


def list_runs(root: str | os.PathLike = "runs") -> list[dict[str, Any]]:
    """Every run folder under ``root`` (newest first) with its status and best validation scores."""
    root = Path(root)
    rows = [
        _run_row(d)
        for d in sorted(root.iterdir() if root.is_dir() else [])
        if d.is_dir() and any((d / n).exists() for n in ("config.json", "progress.json", TRAIN_OUT))
    ]
    return sorted(rows, key=lambda r: -r["updated"])


def runs_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs of :func:`list_runs` as a display table (``updated`` as local time)."""
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    table["updated"] = [time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) for t in table["updated"]]
    return table


def eval_files(kind: str = "test") -> tuple[str, str, str]:
    """(output folder, log, pid file) of a run's ``val`` or ``test`` (Test A + B) evaluation."""
    return EVALS[kind]


def evaluation_status(run_dir: str | os.PathLike, kind: str = "test") -> dict[str, Any]:
    """``{"status": none|running|done|failed, "summary": dict|None, "error": str, "done": int, "total": int}`` of
    a run's ``val`` or ``test`` evaluation (``done``: images scored so far, counted by their saved predictions)."""
    run_dir = Path(run_dir)
    out, log, pid_name = EVALS[kind]
    summary_path = run_dir / out / "summary.json"
    pid_path = run_dir / pid_name
    if pid_path.exists() and alive(read_pid(pid_path)):
        since = pid_path.stat().st_mtime
        preds = (run_dir / out / "predictions").glob("*.png")
        done = sum(1 for p in preds if p.stat().st_mtime >= since)
        total = _job_total(pid_path)
        return {"status": "running", "summary": None, "error": "", "done": done, "total": total}
    fresh = summary_path.is_file() and (
        not pid_path.exists() or summary_path.stat().st_mtime >= pid_path.stat().st_mtime
    )
    idle = {"done": 0, "total": 0}
    if fresh:
        return {"status": "done", "summary": read_json(summary_path), "error": "", **idle}
    if pid_path.exists():
        return {"status": "failed", "summary": None, "error": _last_line(run_dir / log), **idle}
    return {"status": "none", "summary": None, "error": "", **idle}


def _job_total(pid_path: Path) -> int:
    """The image count an evaluation's pid file holds after its pid (``"<pid> <images>"``); 0 if none."""
    try:
        return int(pid_path.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def load_run_config(run_dir: str | os.PathLike) -> RunConfig | None:
    """A run's ``config.json`` (or the requested one before the trainer wrote it); None if unreadable."""
    for name in ("config.json", REQUESTED_CONFIG):
        with contextlib.suppress(ValueError, OSError):
            return load_config(Path(run_dir) / name)
    return None


def device_info() -> dict[str, Any]:
    """``{"cuda": bool, "device": "cuda"|"cpu", "name": str, "cpus": int}`` of this machine."""
    import torch

    cpus = os.cpu_count() or 1
    if torch.cuda.is_available():
        return {"cuda": True, "device": "cuda", "name": torch.cuda.get_device_name(0), "cpus": cpus}
    return {"cuda": False, "device": "cpu", "name": "CPU", "cpus": cpus}


def time_left(
    status: dict[str, Any], cfg: RunConfig | None, log: pd.DataFrame
) -> dict[str, float | None]:
    """Estimated seconds left ``{"phase", "training"}`` of a running run, from its own pace so far.

    ``phase``: the phase in progress at the pace of its items so far. ``training`` (during epoch steps): the
    steps left at the current step pace plus the validations left at the last validation's pace (None when
    unknown). Post-processing tuning comes after and is not included.
    """
    out: dict[str, float | None] = {"phase": None, "training": None}
    done, total = status.get("done") or 0, status.get("total") or 0
    started, when = status.get("phase_started"), status.get("time")
    if status.get("status") != "running" or not done or not total or not started or not when:
        return out
    pace = max(0.0, when - started) / done
    out["phase"] = (total - done) * pace
    if (
        status.get("phase") == "train"
        and cfg is not None
        and status.get("epochs")
        and status.get("epoch")
    ):
        epoch, epochs = int(status["epoch"]), int(status["epochs"])
        steps_left = (total - done) + (epochs - epoch) * total
        vals = [e for e in range(epoch, epochs + 1) if e % cfg.train_val_every == 0 or e == epochs]
        val_pace = log["val_seconds"].dropna() if "val_seconds" in log else pd.Series(dtype=float)
        if vals and val_pace.empty:
            return out
        out["training"] = steps_left * pace + (len(vals) * float(val_pace.iloc[-1]) if vals else 0.0)
    return out


def remembered(root: str | os.PathLike) -> dict[str, Any]:
    """The Train page's settings kept across browser sessions (``<runs root>/.dashboard.json``); {} if none."""
    return read_json(Path(root) / PREFS)


def remember(root: str | os.PathLike, **values: Any) -> None:
    """Keep ``values`` (e.g. ``data_dir``, ``preset``) in ``<runs root>/.dashboard.json`` (merged; best effort:
    a read-only runs folder only means nothing is remembered)."""
    path = Path(root) / PREFS
    merged = {**remembered(root), **values}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(merged, indent=1) + "\n")
