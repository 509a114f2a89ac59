"""What an evaluation leaves on disk, when its caller asks: the tables and the test-set history.

Files: ``per_image.csv`` (one row per image), ``summary.json`` (``{split: {pooled_f1, ...}}``), and for the
``relabel_gt`` diagnostic ``per_image_relabel_gt.csv`` and ``summary_relabel_gt.json``, which say what they are.

Test-set hygiene: each time a model folder's segmenter is scored on Test A or Test B by the CLI or the
dashboard, one line per test split is appended to that folder's ``test_history.jsonl`` (date, git commit,
split, figures, TTA, reason), so a model card can say how often its test sets were looked at and why
(:func:`read_test_history`).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..errors import WriteError
from ..files import append_line, atomic_write_text, describe_os_error, read_json_lines
from ..metrics import HEADLINE_FIGURES

TEST_SPLITS = ("testA", "testB")
TEST_HISTORY = "test_history.jsonl"
HISTORY_FIGURES = (*HEADLINE_FIGURES, "tp", "fp", "fn", "n_images")
RELABEL_SUFFIX = (
    "_relabel_gt"  # per_image_relabel_gt.csv, summary_relabel_gt.json: the diagnostic's files
)


def write_results(
    out_dir: str | os.PathLike, table: pd.DataFrame, summary: dict[str, dict], suffix: str = ""
) -> None:
    """Write ``per_image<suffix>.csv`` and ``summary<suffix>.json`` into ``out_dir`` (which must exist); the
    relabelled diagnostic (a ``suffix``) says what it is.

    Raises:
        WriteError: a file could not be written (one line naming it; an ``OSError``); no temporary file is left.
    """
    out_dir = Path(out_dir)
    note = "ground-truth ids split into connected components (8-connectivity); NOT the official GlaS figures"
    text = json.dumps({"diagnostic": note, **summary} if suffix else summary, indent=2)
    try:
        atomic_write_text(
            out_dir / f"per_image{suffix}.csv", table.to_csv(index=False, float_format="%.6g")
        )
        atomic_write_text(out_dir / f"summary{suffix}.json", text + "\n")
    except OSError as e:
        raise WriteError(describe_os_error(None, e)) from e


def read_relabel_summary(out_dir: str | os.PathLike) -> dict[str, dict]:
    """The connected-components diagnostic of an evaluation (``{split: summary}``), or {} when not written."""
    path = Path(out_dir) / f"summary{RELABEL_SUFFIX}.json"
    if not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, dict)}


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _git_commit(folder: Path) -> str:
    """The short commit of the repository holding ``folder``, ``+dirty`` when the folder's tracked files differ
    from it; ``unknown`` outside a repository."""
    try:
        commit = _git(folder, "rev-parse", "--short", "HEAD")
        return commit + (
            "+dirty" if _git(folder, "status", "--porcelain", "--untracked-files=no", "--", ".") else ""
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def record_test_scoring(
    model_dir: str | os.PathLike, summary: dict[str, dict], *, tta: bool = False, reason: str = ""
) -> int:
    """Append one line per test split of ``summary`` to ``model_dir/test_history.jsonl``.

    Each line: ``{"date", "commit", "split", "tta", "reason", "figures": {pooled_f1, ...}}``. Splits other than
    Test A / Test B are not recorded (``val`` may be scored as often as selection needs).

    Returns:
        How many lines were appended.

    Raises:
        WriteError: the history could not be written (one line naming it, e.g. a full disk).
    """
    model_dir = Path(model_dir)
    splits = [s for s in TEST_SPLITS if s in summary]
    if not splits:
        return 0
    date = datetime.now(UTC).isoformat(timespec="seconds")
    commit = _git_commit(model_dir)
    lines = []
    for split in splits:
        figures = {k: summary[split][k] for k in HISTORY_FIGURES if k in summary[split]}
        rec = {
            "date": date,
            "commit": commit,
            "split": split,
            "tta": tta,
            "reason": reason,
            "figures": figures,
        }
        lines.append(json.dumps(rec))
    path = model_dir / TEST_HISTORY
    # each line whole or not at all; a torn tail of an earlier fault is repaired first
    for line in lines:
        try:
            append_line(path, line)
        except OSError as e:
            raise WriteError(describe_os_error(path, e) + "; this scoring is not recorded") from e
    return len(lines)


def read_test_history(model_dir: str | os.PathLike) -> list[dict]:
    """The records of ``model_dir/test_history.jsonl``, oldest first ([] when there is none); a torn line is
    skipped with a warning, and a record glued onto one by an older writer is recovered."""
    records = read_json_lines(Path(model_dir) / TEST_HISTORY)
    return [r for r in records if isinstance(r, dict) and r.get("split") in TEST_SPLITS]


def format_summary(summary: dict[str, dict]) -> str:
    """A small text table of the pooled and mean figures per split."""
    lines = [
        f"{'split':<7} {'n':>3} {'F1':>6} {'objDice':>8} {'objHaus':>8} | {'meanF1':>6} {'meanDice':>8} {'meanHaus':>8}"
    ]
    for split, s in summary.items():
        lines.append(
            f"{split:<7} {s['n_images']:>3} {s['pooled_f1']:>6.3f} {s['pooled_object_dice']:>8.3f} {s['pooled_object_hausdorff']:>8.1f} | "
            f"{s['mean_f1']:>6.3f} {s['mean_object_dice']:>8.3f} {s['mean_object_hausdorff']:>8.1f}"
        )
    return "\n".join(lines)
