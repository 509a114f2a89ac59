"""Background training and evaluation for the dashboard: start, stop, resume, status, list, promote.

Every job is ``python -m glandseg_core ...`` in its own session (``start_new_session=True``), writing to the run
folder (``train.out`` / ``eval.out``), so it survives the dashboard and never runs inside a Streamlit script.
The trainer itself holds the machine-wide training lock (:mod:`glandseg_core.locks`); this module refuses a
second start early, including the seconds between a launch and the trainer taking the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from .config import RunConfig, load_config, save_config
from .io import atomic_write_text
from .locks import TrainingBusy, lock_holder, lock_path

__all__ = [
    "TrainingBusy",
    "busy_message",
    "device_info",
    "evaluation_status",
    "list_runs",
    "promote",
    "read_log",
    "resume_training",
    "run_status",
    "start_evaluation",
    "start_training",
    "stop_training",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REQUESTED_CONFIG = "requested_config.json"
TRAIN_OUT, TRAIN_PID = "train.out", "train.pid"
EVAL_DIR, EVAL_OUT, EVAL_PID = "eval", "eval.out", "eval.pid"


# ------------------------------------------------------------------------------------------ processes


def _alive(pid: int | None, marker: str = "glandseg_core") -> bool:
    """True when ``pid`` runs (not a zombie) and its command line mentions ``marker`` (guards pid reuse)."""
    if not pid or pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap our own finished children
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        with contextlib.suppress(OSError):
            if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            return marker in proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace"
            )
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _launch(args: list[str], out: Path) -> int:
    """Start ``python -m glandseg_core <args>`` detached, stdout and stderr appended to ``out``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(out, "ab") as log:
        log.write(
            f"\n$ python -m glandseg_core {' '.join(args)}  ({time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "glandseg_core", *args],
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


@contextlib.contextmanager
def _launch_guard() -> Iterator[Path]:
    """Serialise launches across sessions and processes; yields the pending-launch record's path."""
    root = lock_path().parent
    with open(root / "launch.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield root / "pending.json"
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def busy_message() -> str | None:
    """Why a training cannot start now, or None."""
    holder = lock_holder()
    if holder is not None:
        return (
            f"A training is already running (pid {holder.get('pid', '?')}, run {holder.get('run_dir', '?')}); "
            "stop it or wait for it to finish. One training at a time."
        )
    pending = _read_json(lock_path().parent / "pending.json")
    if _alive(pending.get("pid")):
        return (
            f"A training process is starting or finishing (pid {pending['pid']}, run {pending.get('run_dir', '?')}); "
            "one training at a time."
        )
    return None


def _start(run_dir: Path, args: list[str]) -> int:
    with _launch_guard() as pending:
        busy = busy_message()
        if busy:
            raise TrainingBusy(busy)
        run_dir.mkdir(parents=True, exist_ok=True)
        progress = _read_json(run_dir / "progress.json")
        if progress.get("status") == "running":  # a killed trainer left "running" behind: say so
            atomic_write_text(
                run_dir / "progress.json", json.dumps({**progress, "status": "dead"}) + "\n"
            )
        pid = _launch(args, run_dir / TRAIN_OUT)
        atomic_write_text(run_dir / TRAIN_PID, f"{pid}\n")
        atomic_write_text(
            pending, json.dumps({"pid": pid, "run_dir": str(run_dir), "time": time.time()})
        )
    return pid


def start_training(
    cfg: RunConfig,
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    workers: int = 0,
    time_limit_minutes: float = 0.0,
) -> int:
    """Launch a new training of ``cfg`` into ``run_dir`` in the background.

    Args:
        cfg: the run's configuration (written to ``run_dir/requested_config.json``; the trainer writes
            ``config.json`` itself).
        run_dir: the run folder; must not hold a run already.
        data: the GlaS folder (default: the trainer's ``$GLANDSEG_DATA``).
        workers: processes that build augmented batches (``train --workers``).
        time_limit_minutes: a training budget; the run fits its schedule to it (``train --time-limit``).

    Returns:
        The trainer's process id.

    Raises:
        TrainingBusy: another training runs or is starting.
        FileExistsError: ``run_dir`` holds a run (``last.pt``); resume it or pick another folder.
        ValueError: negative ``workers`` or ``time_limit_minutes``.
    """
    if workers < 0 or time_limit_minutes < 0:
        raise ValueError("workers and the time budget cannot be negative")
    run_dir = Path(run_dir).resolve()
    if (run_dir / "last.pt").exists() or (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir.name} already holds a run; resume it or choose another name")
    busy = busy_message()  # checked again under the launch lock; this one only avoids writing a folder
    if busy:
        raise TrainingBusy(busy)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / REQUESTED_CONFIG)
    args = ["train", "--config", str(run_dir / REQUESTED_CONFIG), "--out", str(run_dir), "--no-bar"]
    args += ["--workers", str(int(workers))] if workers else []
    args += ["--time-limit", f"{float(time_limit_minutes):g}"] if time_limit_minutes else []
    return _start(run_dir, args + (["--data", str(data)] if data else []))


def resume_training(run_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> int:
    """Continue a stopped, failed or killed run from its ``last.pt``, in the background.

    Raises:
        TrainingBusy: another training runs or is starting.
        FileNotFoundError: the run has no ``last.pt`` yet (nothing to resume).
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "last.pt").is_file():
        raise FileNotFoundError(
            f"{run_dir.name} has no last.pt yet (no finished epoch); nothing to resume"
        )
    if run_status(run_dir)["alive"]:
        raise TrainingBusy(f"{run_dir.name} is running already")
    args = ["train", "--out", str(run_dir), "--resume", "--no-bar"]
    return _start(run_dir, args + (["--data", str(data)] if data else []))


def stop_training(run_dir: str | os.PathLike) -> bool:
    """Ask a run's trainer to stop (SIGTERM): it finishes the current step and keeps ``last.pt``.

    Returns:
        True when a running trainer was signalled, False when none runs for this folder.
    """
    state = run_status(run_dir)
    pid = state["pid"]
    if not state["alive"] or not pid:
        return False
    os.kill(int(pid), signal.SIGTERM)
    return True


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (read from its end)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The state of one run folder.

    Returns:
        ``{"status", "alive", "pid", "epoch", "epochs", "step", "steps", "loss", "error", "updated"}``;
        status is ``running``, ``starting`` (launched, no step yet), ``finished``, ``stopped``, ``failed``,
        ``dead`` (the trainer vanished without saying why, e.g. killed) or ``new`` (nothing launched).
    """
    run_dir = Path(run_dir)
    progress = _read_json(run_dir / "progress.json")
    status = progress.get("status")
    pid_file = _read_pid(run_dir / TRAIN_PID)
    launched = (run_dir / TRAIN_PID).stat().st_mtime if (run_dir / TRAIN_PID).exists() else 0.0
    stale = launched > progress.get("time", 0.0)  # the last launch has not written progress yet
    pid = pid_file if stale or not progress.get("pid") else progress["pid"]
    alive = _alive(pid)
    if stale and alive:
        status = "starting"
    elif stale and pid_file:
        status = (
            "failed"  # the last launch ended before its first step (bad data folder, lock taken, ...)
        )
    elif status == "running" and not alive:
        status = "dead"
    elif status is None:
        status = "new"
    error = progress.get("error") or ""
    if status in ("failed", "dead") and (run_dir / TRAIN_OUT).exists():
        error = _last_line(run_dir / TRAIN_OUT) or error
    epoch = progress.get("epoch")
    log = read_log(run_dir)
    if epoch is None and not log.empty:
        epoch = int(log["epoch"].iloc[-1])
    updated = max((p.stat().st_mtime for p in run_dir.glob("*") if p.is_file()), default=0.0)
    return {
        "status": status,
        "alive": bool(alive),
        "pid": pid,
        "epoch": epoch,
        "epochs": progress.get("epochs"),
        "step": progress.get("step"),
        "steps": progress.get("steps"),
        "loss": progress.get("loss"),
        "error": error,
        "updated": updated,
    }


def read_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``log.jsonl`` as a table, one row per epoch (an unfinished last line is skipped); empty if none."""
    rows = []
    with contextlib.suppress(OSError):
        for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return pd.DataFrame(rows)


def list_runs(root: str | os.PathLike = "runs") -> list[dict[str, Any]]:
    """Every run folder under ``root`` (newest first) with its status and best validation scores."""
    root = Path(root)
    runs = []
    for d in sorted(root.iterdir() if root.is_dir() else []):
        if not d.is_dir() or not any(
            (d / n).exists() for n in ("config.json", "progress.json", TRAIN_OUT)
        ):
            continue
        cfg = _read_json(d / "config.json") or _read_json(d / REQUESTED_CONFIG)
        st = run_status(d)
        log = read_log(d)
        best = (
            log.loc[log["val_f1"].idxmax()] if "val_f1" in log and log["val_f1"].notna().any() else None
        )
        runs.append(
            {
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
                "has_best": (d / "best.pt").is_file(),
                "has_last": (d / "last.pt").is_file(),
                "updated": st["updated"],
            }
        )
    return sorted(runs, key=lambda r: -r["updated"])


# ---------------------------------------------------------------------------------- evaluate, promote


def start_evaluation(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    splits: tuple[str, ...] = ("testA", "testB"),
) -> int:
    """Score a run's ``best.pt`` on ``splits`` in the background, into ``run_dir/eval/``.

    Raises:
        FileNotFoundError: the run has no ``best.pt`` yet.
        RuntimeError: an evaluation of this run is still running.
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "best.pt").is_file():
        raise FileNotFoundError(f"{run_dir.name} has no best.pt yet (no validated epoch)")
    if evaluation_status(run_dir)["status"] == "running":
        raise RuntimeError(f"{run_dir.name} is being evaluated already")
    out = run_dir / EVAL_DIR
    args = ["evaluate", "--model", str(run_dir), "--split", *splits, "--out", str(out)]
    pid = _launch(args + (["--data", str(data)] if data else []), run_dir / EVAL_OUT)
    atomic_write_text(run_dir / EVAL_PID, f"{pid}\n")
    return pid


def evaluation_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``{"status": none|running|done|failed, "summary": dict|None, "error": str}`` of a run's evaluation."""
    run_dir = Path(run_dir)
    summary_path = run_dir / EVAL_DIR / "summary.json"
    pid_path = run_dir / EVAL_PID
    if pid_path.exists() and _alive(_read_pid(pid_path)):
        return {"status": "running", "summary": None, "error": ""}
    fresh = summary_path.is_file() and (
        not pid_path.exists() or summary_path.stat().st_mtime >= pid_path.stat().st_mtime
    )
    if fresh:
        return {"status": "done", "summary": _read_json(summary_path), "error": ""}
    if pid_path.exists():
        return {"status": "failed", "summary": None, "error": _last_line(run_dir / EVAL_OUT)}
    return {"status": "none", "summary": None, "error": ""}


def promote(
    run_dir: str | os.PathLike, model_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Export a run's best checkpoint to a model folder, with its evaluation and a short model card.

    Copies ``eval/summary.json`` as ``metrics.json`` and ``eval/per_image.csv`` when the run was evaluated.

    Raises:
        ModelError: ``model_dir`` holds a model and ``overwrite`` is False, or the checkpoint is unusable.
    """
    from .infer import export_model

    run_dir = Path(run_dir)
    model_dir = export_model(run_dir, model_dir, overwrite=overwrite)
    ev = run_dir / EVAL_DIR
    for src, dst in (("summary.json", "metrics.json"), ("per_image.csv", "per_image.csv")):
        if (ev / src).is_file():
            atomic_write_text(model_dir / dst, (ev / src).read_text())
        elif overwrite:
            (model_dir / dst).unlink(missing_ok=True)  # never leave another model's scores behind
    atomic_write_text(model_dir / "MODEL_CARD.md", _model_card(run_dir, model_dir))
    return model_dir


def _model_card(run_dir: Path, model_dir: Path) -> str:
    cfg = load_config(model_dir / "config.json")
    log = read_log(run_dir)
    metrics = _read_json(model_dir / "metrics.json")
    size_mb = (model_dir / "weights.pt").stat().st_size / 1e6
    lines = [
        f"# {model_dir.name}: {cfg.model} ({cfg.name})",
        "",
        f"- source run: `{run_dir.name}`, promoted {time.strftime('%Y-%m-%d %H:%M')}",
        f"- recipe: `{cfg.name}`, {cfg.train_epochs} epochs planned, {len(log)} logged",
        f"- weights: fp16, {size_mb:.1f} MB",
        "",
        "| split | images | pooled F1 | object Dice | object Hausdorff |",
        "|---|---|---|---|---|",
    ]
    for split, s in metrics.items():
        lines.append(
            f"| {split} | {s.get('n_images')} | {s.get('pooled_f1', float('nan')):.3f} | "
            f"{s.get('pooled_object_dice', float('nan')):.3f} | {s.get('pooled_object_hausdorff', float('nan')):.1f} |"
        )
    if not metrics:
        lines.append("| (not evaluated) | | | | |")
    lines += [
        "",
        "Trained on GlaS (research use only; no commercial use). See `config.json` for every setting.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- device


def device_info() -> dict[str, Any]:
    """``{"cuda": bool, "device": "cuda"|"cpu", "name": str, "cpus": int}`` of this machine."""
    import torch

    if torch.cuda.is_available():
        return {
            "cuda": True,
            "device": "cuda",
            "name": torch.cuda.get_device_name(0),
            "cpus": os.cpu_count() or 1,
        }
    return {"cuda": False, "device": "cpu", "name": "CPU", "cpus": os.cpu_count() or 1}


def load_run_config(run_dir: str | os.PathLike) -> RunConfig | None:
    """A run's ``config.json`` (or the requested one before the trainer wrote it); None if unreadable."""
    for name in ("config.json", REQUESTED_CONFIG):
        with contextlib.suppress(ValueError, OSError):
            return load_config(Path(run_dir) / name)
    return None
