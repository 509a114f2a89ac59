"""Background training and evaluation for the Train page: launch, refuse a second training, stop, resume.

Every job is ``python -m glandseg_core ...`` in its own session (``start_new_session=True``), writing to the run
folder (``train.out`` / ``eval.out``), so it survives the dashboard and never runs inside a Streamlit script.
The trainer holds the training locks (:mod:`glandseg_core.train.locks`): ``glandseg train`` asks ``fit`` for
the machine-wide one (``machine_lock=True``) and ``glandseg evaluate`` records test-split scorings in the model's
``test_history.jsonl`` (``record_history=True``), so the jobs launched here get both. This module refuses a
second start early, including the seconds between a launch and the trainer taking the lock. Before anything is
written, a new training checks its data folder with the trainer's own discovery
(:func:`glandseg_core.datasets.glas.find_items`), and a launch that fails leaves no run folder behind (issue #15, item 9).
Process checks use ``psutil``. No streamlit here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from glandseg_core.config import RunConfig, config_to_dict, save_config
from glandseg_core.datasets import detect_layout, open_folder
from glandseg_core.datasets.glas import data_root, find_items
from glandseg_core.errors import DatasetError, TrainingBusy
from glandseg_core.evaluation import TEST_HISTORY
from glandseg_core.files import atomic_write_text
from glandseg_core.train.locks import lock_holder, lock_path

from . import runs
from .safepaths import existing
from .settings import APP_DIR

REQUESTED_CONFIG = runs.REQUESTED_CONFIG
TRAIN_OUT, TRAIN_PID = runs.TRAIN_OUT, runs.TRAIN_PID
EVAL_DIR, EVAL_OUT, EVAL_PID = runs.EVAL_DIR, runs.EVAL_OUT, runs.EVAL_PID
# What a launch writes or a trainer leaves in a run folder; a new start into a folder replaces them (confirmed).
ATTEMPT_FILES = (
    REQUESTED_CONFIG,
    "config.json",
    "progress.json",
    "log.jsonl",
    TRAIN_PID,
    TRAIN_OUT,
    "best.pt",
    "tuning.json",
    "postprocess.json",
    EVAL_DIR,
    EVAL_PID,
    EVAL_OUT,
    runs.VAL_EVAL_DIR,
    runs.VAL_EVAL_PID,
    runs.VAL_EVAL_OUT,
    TEST_HISTORY,
)
ESTIMATE_TIMEOUT_S = 600


def _launch(args: list[str], out: Path) -> int:
    """Start ``python -m glandseg_core <args>`` detached, stdout and stderr appended to ``out``.

    Raises:
        OSError: the process could not be started.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(out, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n$ python -m glandseg_core {' '.join(args)}  ({stamp})\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "glandseg_core", *args],
            cwd=APP_DIR,
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
    with FileLock(root / "launch.lock"):
        yield root / "pending.json"


def busy_message() -> str | None:
    """Why a training cannot start now, or None."""
    holder = lock_holder()
    if holder is not None:
        return (
            f"A training is already running (pid {holder.get('pid', '?')}, run {holder.get('run_dir', '?')}); "
            "stop it or wait for it to finish. One training at a time."
        )
    pending = runs.read_json(lock_path().parent / "pending.json")
    if runs.alive(pending.get("pid")):
        return (
            f"A training process is starting or finishing (pid {pending['pid']}, run "
            f"{pending.get('run_dir', '?')}); one training at a time."
        )
    return None


def check_data(data: str | os.PathLike | None, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """The data folder a job would read, checked with the trainer's own discovery (GlaS, or any other layout
    of ``glandseg_core.datasets``, e.g. a fine-tuning run's own copy of an annotation set).

    Raises:
        DatasetError: one line saying what is missing (no folder, no ``train_N`` images, unpaired files, ...).
    """
    root = data_root(data)
    if detect_layout(root) == "glas":
        find_items(root, splits)
    elif not open_folder(root).items(list(splits)):
        raise DatasetError(f"{root} has no annotated images in {', '.join(splits)}")
    return root


def _start(run_dir: Path, args: list[str]) -> int:
    with _launch_guard() as pending:
        busy = busy_message()
        if busy:
            raise TrainingBusy(busy)
        progress = runs.read_json(run_dir / "progress.json")
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


def previous_attempt(run_dir: str | os.PathLike) -> list[str]:
    """What a new training in ``run_dir`` would replace: the files of an earlier attempt found there."""
    return existing(Path(run_dir), ATTEMPT_FILES)


def _clear_attempt(run_dir: Path, names: list[str]) -> None:
    for name in names:
        path = run_dir / name.rstrip("/")
        if name.endswith("/"):
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def start_training(
    cfg: RunConfig,
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    workers: int = 0,
    time_limit_minutes: float = 0.0,
    *,
    replace: Collection[str] = (),
    device: str | None = None,
) -> int:
    """Launch a new training of ``cfg`` into ``run_dir`` in the background.

    Args:
        cfg: the run's configuration (written to ``run_dir/requested_config.json``; the trainer writes
            ``config.json`` itself).
        run_dir: the run folder; it must not hold a run with a finished epoch (``last.pt``).
        data: the GlaS folder (default: the trainer's ``$GLANDSEG_DATA``); checked before anything is written.
        workers: processes that build augmented batches (``train --workers``).
        time_limit_minutes: a training budget; the run fits its schedule to it (``train --time-limit``).
        replace: the files of an earlier attempt (:func:`previous_attempt`) the user agreed to replace.
        device: ``cpu`` or ``cuda`` (``train --device``); None: the trainer's default (CUDA when present).

    Returns:
        The trainer's process id.

    Raises:
        TrainingBusy: another training runs or is starting.
        DatasetError: the data folder is not a usable GlaS folder (says what is missing).
        FileExistsError: ``run_dir`` holds a run (``last.pt``), or files of an attempt not in ``replace``.
        ValueError: negative ``workers`` or ``time_limit_minutes``.
        OSError: the trainer could not be started (the run folder is then left as it was).
    """
    if workers < 0 or time_limit_minutes < 0:
        raise ValueError("workers and the time budget cannot be negative")
    run_dir = Path(run_dir).resolve()
    if (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir.name} already holds a run; resume it or choose another name")
    found = previous_attempt(run_dir)
    if unconfirmed := [n for n in found if n not in replace]:
        raise FileExistsError(f"{run_dir.name} holds {', '.join(unconfirmed)}; confirm replacing them")
    busy = busy_message()  # checked again under the launch lock; this one only avoids writing a folder
    if busy:
        raise TrainingBusy(busy)
    root = check_data(data)
    created = not run_dir.exists()
    args = ["train", "--config", str(run_dir / REQUESTED_CONFIG), "--out", str(run_dir), "--no-bar"]
    args += ["--workers", str(int(workers))] if workers else []
    args += ["--time-limit", f"{float(time_limit_minutes):g}"] if time_limit_minutes else []
    args += ["--device", device] if device else []
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _clear_attempt(run_dir, found)
        save_config(cfg, run_dir / REQUESTED_CONFIG)
        return _start(run_dir, [*args, "--data", str(root)])
    except BaseException:
        # nothing half-made stays behind: a folder this call created goes, else the files it wrote
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            _clear_attempt(run_dir, previous_attempt(run_dir))
        raise


def resume_training(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    restart: bool = False,
    device: str | None = None,
) -> int:
    """Continue a stopped, failed or killed run from its ``last.pt``, in the background (a run stopped while
    tuning redoes only the tuning). With ``restart``, a run stopped before its first finished epoch starts
    again from its requested config (it has no ``last.pt``: there is nothing to resume).

    Raises:
        TrainingBusy: another training runs or is starting.
        FileNotFoundError: the run has no ``last.pt`` yet (nothing to resume), and no config to restart from.
        DatasetError: the data folder is not a usable GlaS folder.
    """
    run_dir = Path(run_dir).resolve()
    if runs.run_status(run_dir)["alive"]:
        raise TrainingBusy(f"{run_dir.name} is running already")
    root = check_data(data)
    on = ["--device", device] if device else []  # the device the run was started on (None: the default)
    if not (run_dir / "last.pt").is_file():
        if not restart or not (run_dir / REQUESTED_CONFIG).is_file():
            raise FileNotFoundError(
                f"{run_dir.name} has no last.pt yet (no finished epoch); nothing to resume"
            )
        args = ["train", "--config", str(run_dir / REQUESTED_CONFIG), "--out", str(run_dir), "--no-bar"]
        return _start(run_dir, [*args, "--data", str(root), *on])
    args = ["train", "--out", str(run_dir), "--resume", "--no-bar", "--data", str(root)]
    return _start(run_dir, [*args, *on])


def stop_training(run_dir: str | os.PathLike) -> bool:
    """Ask a run's trainer to stop (SIGTERM): whatever it does (steps, validation, tuning) ends within seconds,
    and ``last.pt`` stays the last finished epoch's (see ``glandseg_core.train.phases``).

    Returns:
        True when a running trainer was signalled, False when none runs for this folder.
    """
    state = runs.run_status(run_dir)
    pid = state["pid"]
    if not state["alive"] or not pid:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(int(pid)).send_signal(signal.SIGTERM)
    return True


def stop_evaluation(run_dir: str | os.PathLike, kind: str = "test") -> bool:
    """End a run's background ``val`` or ``test`` evaluation (SIGTERM); True when one was running."""
    pid = runs.read_pid(Path(run_dir) / runs.eval_files(kind)[2])
    if runs.evaluation_status(run_dir, kind)["status"] != "running" or not pid:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).send_signal(signal.SIGTERM)
    return True


def start_evaluation(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    splits: tuple[str, ...] = ("testA", "testB"),
    reason: str = "",
) -> int:
    """Score a run's ``best.pt`` on ``splits`` in the background: ``val`` alone into ``run_dir/eval_val/``, test
    splits into ``run_dir/eval/`` (what Promote copies). Scoring a test split is recorded in the run's
    ``test_history.jsonl`` with ``reason`` (``glandseg_core.evaluation``), and Promote carries that history over.

    Raises:
        FileNotFoundError: the run has no ``best.pt`` yet.
        RuntimeError: an evaluation of this kind is still running.
        DatasetError: the data folder lacks the images of ``splits``.
    """
    run_dir = Path(run_dir).resolve()
    kind = "val" if tuple(splits) == ("val",) else "test"
    out, log, pid_name = runs.eval_files(kind)
    if not (run_dir / "best.pt").is_file():
        raise FileNotFoundError(f"{run_dir.name} has no best.pt yet (no validated epoch)")
    if runs.evaluation_status(run_dir, kind)["status"] == "running":
        raise RuntimeError(f"{run_dir.name} is being evaluated already")
    root = check_data(data, splits)
    total = len(find_items(root, splits))
    args = [
        "evaluate",
        "--model",
        str(run_dir),
        "--split",
        *splits,
        "--out",
        str(run_dir / out),
        "--data",
        str(root),
        "--save-predictions",
    ]
    args += ["--reason", reason] if reason and kind == "test" else []
    pid = _launch(args, run_dir / log)
    atomic_write_text(run_dir / pid_name, f"{pid} {total}\n")
    return pid


def estimate_epoch(
    cfg: RunConfig,
    data: str | os.PathLike | None,
    *,
    steps: int = 3,
    timeout: float = ESTIMATE_TIMEOUT_S,
) -> dict[str, Any]:
    """Time ``steps`` training steps of ``cfg`` in a child process (``glandseg_core.train.estimate``), so
    the page stays responsive and the model's memory goes away after.

    Returns:
        The estimate's dict (``step_seconds``, ``steps_per_epoch``, ``train_seconds``, ``val_seconds``,
        ``epoch_seconds``, ``measured_steps``).

    Raises:
        DatasetError: the data folder is unusable. RuntimeError: the measurement failed or took too long.
    """
    root = check_data(data)
    code = (
        "import json, sys; from glandseg_core.config import config_from_dict; "
        "from glandseg_core.train.estimate import estimate_epoch; "
        "cfg = config_from_dict(json.loads(sys.argv[1])); "
        "print(json.dumps(estimate_epoch(cfg, sys.argv[2], steps=int(sys.argv[3]))))"
    )
    cmd = [sys.executable, "-c", code, json.dumps(config_to_dict(cfg)), str(root), str(steps)]
    try:
        done = subprocess.run(
            cmd, cwd=APP_DIR, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"the measurement took over {timeout:.0f} s; the machine is very busy"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the measurement failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


__all__ = [
    "DatasetError",
    "TrainingBusy",
    "busy_message",
    "check_data",
    "estimate_epoch",
    "previous_attempt",
    "resume_training",
    "start_evaluation",
    "start_training",
    "stop_evaluation",
    "stop_training",
]
