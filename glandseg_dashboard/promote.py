"""Promote a training run to a model folder: weights, config, thresholds, its evaluation and the model card.

The card is written by :func:`glandseg_core.modelcard.render`, the only card writer. A promotion never
replaces anything the user has not confirmed by name (issue #15, item 1): :func:`replaced` lists what a
promotion into a folder would replace or remove, and :func:`promote` refuses unless each of those is in
``confirmed``. No streamlit here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection
from pathlib import Path

from glandseg_core.checkpoints import POSTPROCESS, WEIGHTS, export_model
from glandseg_core.errors import ModelError, WriteError
from glandseg_core.evaluation import TEST_HISTORY
from glandseg_core.files import atomic_write_text, describe_os_error
from glandseg_core.modelcard import render

from .runs import EVAL_DIR, TRAIN_OUT, read_json
from .safepaths import existing

CARD = "MODEL_CARD.md"
BEFORE_AFTER = (
    "finetune_before_after.json"  # a fine-tune's base vs fine-tuned scores on its held-out images
)
WRITTEN = (
    WEIGHTS,
    "config.json",
    POSTPROCESS,
    CARD,
    "metrics.json",
    "per_image.csv",
    TEST_HISTORY,
    BEFORE_AFTER,
)
# Results of the model being replaced (drill-down predictions, val and TTA scores read by the card): removed.
STALE = ("predictions", "val", "tta")


def replaced(model_dir: str | os.PathLike) -> list[str]:
    """What promoting into ``model_dir`` would replace or remove (sub-folders end in ``/``); [] for a new one."""
    return existing(Path(model_dir), (*WRITTEN, *STALE))


def _command(run_dir: Path) -> str:
    """The training command as the dashboard launched it (first line of ``train.out``), for the card."""
    try:
        for line in (run_dir / TRAIN_OUT).read_text(errors="replace").splitlines():
            if line.startswith("$ python -m glandseg_core train"):
                return re.sub(r"\s+\(\d{4}-\d\d-\d\d [\d:]+\)$", "", line[2:]).strip()
    except OSError:
        pass
    return f"python -m glandseg_core train --out {run_dir}"


def promote(
    run_dir: str | os.PathLike, model_dir: str | os.PathLike, *, confirmed: Collection[str] = ()
) -> Path:
    """Export a run's best checkpoint to a model folder, with its evaluation and its model card.

    Copies ``eval/summary.json`` as ``metrics.json`` and ``eval/per_image.csv`` when the run was evaluated on
    Test A / B, the run's ``test_history.jsonl`` (every scoring of a test split, so the card counts them), and a
    fine-tune's before/after summaries on its held-out images (``finetune_before_after.json``);
    scores, history and predictions of a model being replaced are removed, never left beside the new weights.

    Args:
        run_dir: the training run (``best.pt``, ``config.json``, ``log.jsonl``).
        model_dir: the model folder to write (the caller checks that it lies inside the models root).
        confirmed: the entries of :func:`replaced` the user agreed to replace.

    Returns:
        ``model_dir``.

    Raises:
        ModelError: ``model_dir`` holds entries not in ``confirmed`` (nothing is written then), or the
            checkpoint is unusable.
        WriteError: a file could not be written (a full disk): one line naming it (an ``OSError``, which the
            page shows); no temporary file is left.
    """
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelError(f"{model_dir} is a file, not a folder")
    found = replaced(model_dir)
    if unconfirmed := [n for n in found if n not in confirmed]:
        raise ModelError(f"{model_dir} holds {', '.join(unconfirmed)}; confirm replacing them")
    export_model(run_dir, model_dir, overwrite=bool(found))  # WriteError: one line, nothing exported
    try:
        _copy_results(run_dir, model_dir)
    except OSError as e:  # a full disk after the weights went in: one line, and how to finish
        why = describe_os_error(None, e)
        raise WriteError(
            f"{why}; {model_dir} is only partly promoted: free space and promote again"
        ) from e
    return model_dir


def _copy_results(run_dir: Path, model_dir: Path) -> None:
    """The run's evaluation, test history and model card into ``model_dir``; stale results removed."""
    ev = run_dir / EVAL_DIR
    copies = [(ev / "summary.json", "metrics.json"), (ev / "per_image.csv", "per_image.csv")]
    for src, dst in [*copies, (run_dir / TEST_HISTORY, TEST_HISTORY)]:
        if src.is_file():
            atomic_write_text(model_dir / dst, src.read_text())
        else:
            (model_dir / dst).unlink(missing_ok=True)  # never leave another model's scores behind
    _copy_before_after(run_dir, model_dir)
    for name in STALE:
        if (model_dir / name).is_dir():
            shutil.rmtree(model_dir / name)
    atomic_write_text(model_dir / CARD, render(model_dir, run_dir, _command(run_dir)))


def _copy_before_after(run_dir: Path, model_dir: Path) -> None:
    """A fine-tuning run's before/after summaries (base and fine-tuned on the held-out images, with what was held
    out and from which set) as ``finetune_before_after.json``; removed when the run has none."""
    record = read_json(run_dir / "finetune.json")
    sides = {s: read_json(run_dir / "before_after" / s / "summary.json") for s in ("base", "tuned")}
    if not record or not all(sides.values()):
        (model_dir / BEFORE_AFTER).unlink(missing_ok=True)
        return
    keep = {k: record.get(k) for k in ("set", "base", "held_out")}
    atomic_write_text(model_dir / BEFORE_AFTER, json.dumps({**keep, **sides}, indent=1) + "\n")
