"""Fine-tune on an annotation set from the Train page: the sets and base models to choose from, the held-out
images, the run's own copy of the data, and the launch.

A fine-tuning run never reads or changes the user's set after its start: :func:`prepare_run_data` writes the
set's annotated images into ``<run>/data/`` (plain layout, ``images/`` + ``labels/``) with a ``dataset.json``
whose ``splits.test`` lists the held-out images (the set's own ``val``/``train`` lists are kept, minus those),
so training, its ``val`` tuning and the before/after scoring (:mod:`.before_after`) read that copy. What was
chosen is kept in ``<run>/finetune.json``. No streamlit here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from glandseg_core.checkpoints import weights_file
from glandseg_core.config import PRESETS, RunConfig, get_preset, load_config
from glandseg_core.datasets import SPEC_FILE, Dataset, FileDataset, open_folder
from glandseg_core.datasets.spec import DatasetSpec, assign_splits
from glandseg_core.errors import ConfigError, DatasetError, ModelError
from glandseg_core.files import atomic_write_text
from glandseg_core.imaging.io import write_label_png, write_png
from glandseg_core.train.starts import init_config

from . import jobs, runs

RECORD = "finetune.json"
RUN_DATA = "data"
MIN_TRAINING_IMAGES = 2  # one to train on and one for val (which tunes the post-processing)


def finetune_preset(model: str) -> str:
    """The ``finetune-<kind>`` preset of a model kind.

    Raises:
        ValueError: the kind has no fine-tuning preset.
    """
    name = f"finetune-{model}"
    if name not in PRESETS:
        raise ValueError(f"no fine-tuning preset for {model} models (no {name})")
    return name


def annotation_sets(root: Path) -> list[str]:
    """Names of the annotation sets in ``root`` (folders with ``images/`` and ``labels/``), sorted."""
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and (d / "images").is_dir()
        and (d / "labels").is_dir()
    )


def set_images(set_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """(names of the set's annotated images, those its ``dataset.json`` puts in ``test``, problems found).

    Raises:
        DatasetError: the set cannot be read (an invalid ``dataset.json``; one line).
    """
    data = open_folder(set_dir)
    items = data.items()
    problems: list[str] = data.problems() if isinstance(data, FileDataset) else []
    return [it.name for it in items], [it.name for it in items if it.split == "test"], problems


def base_models(models_root: Path, runs_root: Path) -> dict[str, Path]:
    """Models to start from, labelled for a picker: model folders (``weights.pt`` + ``config.json``) of a kind
    with a fine-tuning preset, then runs with a ``best.pt``; shipped ``unet`` / ``maskrcnn`` first."""
    out: dict[str, Path] = {}
    folders = sorted(models_root.iterdir()) if models_root.is_dir() else []
    shipped = ("unet", "maskrcnn")
    folders.sort(key=lambda d: (shipped.index(d.name) if d.name in shipped else len(shipped), d.name))
    runs_found = sorted(runs_root.iterdir()) if runs_root.is_dir() else []
    for label, d, weights in [
        *((f"model {d.name}", d, "weights.pt") for d in folders),
        *((f"run {d.name}", d, "best.pt") for d in runs_found),
    ]:
        if not (d / weights).is_file() or not (d / "config.json").is_file():
            continue
        try:
            finetune_preset(load_config(d / "config.json").model)
        except (ConfigError, ValueError, OSError):
            continue
        out[label] = d
    return out


def finetune_config(base: Path) -> RunConfig:
    """The ``finetune-<kind>`` preset on ``base``'s own section and pixel size, starting from its weights.

    Raises:
        ModelError, ConfigError: ``base`` has no usable weights or config. ValueError: no preset for its kind.
    """
    own = load_config(weights_file(base).parent / "config.json")
    return init_config(base, get_preset(finetune_preset(own.model)), own_section=True)


def held_out_by_fraction(set_dir: Path, fraction: float, seed: int = 0) -> list[str]:
    """A seeded ``fraction`` of the set's annotated images to hold out (a group, e.g. a patient, stays whole).

    Raises:
        ValueError: a fraction outside (0, 1). DatasetError: the set cannot be read.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must lie between 0 and 1, got {fraction}")
    items = open_folder(set_dir).items()
    names = [it.name for it in items]
    spec = DatasetSpec(val_fraction=0.0, test_fraction=fraction, seed=seed)
    splits, _ = assign_splits(names, {it.name: it.group for it in items}, spec, {})
    return [n for n in names if splits[n] == "test"]


def _run_spec(data: Dataset, set_dir: Path, held_out: Sequence[str]) -> dict[str, Any]:
    """The run's ``dataset.json``: ``test`` = the held-out images, the set's other lists and split settings."""
    user = data.spec if isinstance(data, FileDataset) else DatasetSpec()
    keep = {
        split: [s for s in stems if s not in held_out]
        for split, stems in user.splits.items()
        if split != "test"
    }
    images = {
        it.name: {k: v for k, v in (("mpp", it.mpp), ("group", it.group), ("grade", it.grade)) if v}
        for it in data.items()
    }
    return {
        "layout": "folder",
        "splits": {**{k: v for k, v in keep.items() if v}, "test": list(held_out)},
        "val_fraction": user.val_fraction,
        "seed": user.seed,
        "images": {k: v for k, v in images.items() if v},
    }


def prepare_run_data(set_dir: Path, held_out: Sequence[str], run_dir: Path) -> Path:
    """Write the set's annotated images into ``run_dir/data/`` (plain layout, PNG) with the run's
    ``dataset.json`` (held-out images as ``test``); the user's set is only read.

    Returns:
        The run's data folder.

    Raises:
        ValueError: no image held out, a held-out name the set lacks, or fewer than two images left to train on.
        DatasetError: the set cannot be read.
    """
    data = open_folder(set_dir)
    items = data.items()
    names = [it.name for it in items]
    unknown = [n for n in held_out if n not in names]
    if not held_out:
        raise ValueError("hold out at least one image: the before/after comparison is scored on it")
    if unknown:
        raise ValueError(f"{unknown[0]} is not an annotated image of {set_dir.name}")
    if len(names) - len(held_out) < MIN_TRAINING_IMAGES:
        raise ValueError(
            f"{set_dir.name} has {len(names)} annotated images: hold out fewer, so that at least "
            f"{MIN_TRAINING_IMAGES} are left (one to train on, one to check the training with)"
        )
    out = run_dir / RUN_DATA
    if out.exists():
        shutil.rmtree(out)
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True)
    for item in items:
        image, labels = item.load_annotated()
        write_png(out / "images" / f"{item.name}.png", image)
        write_label_png(out / "labels" / f"{item.name}.png", labels)
    spec = _run_spec(data, set_dir, held_out)
    atomic_write_text(out / SPEC_FILE, json.dumps(spec, indent=1) + "\n")
    return out


def read_record(run_dir: Path) -> dict[str, Any]:
    """What a fine-tuning run was started with (``set``, ``base``, ``held_out``, ``device``); {} for others."""
    return runs.read_json(run_dir / RECORD)


def run_data(run_dir: Path) -> Path | None:
    """The data folder of a fine-tuning run (its own copy of the set), or None for other runs."""
    return run_dir / RUN_DATA if read_record(run_dir) else None


def start_finetune(
    cfg: RunConfig,
    run_dir: Path,
    *,
    set_dir: Path,
    base: Path,
    held_out: Sequence[str],
    device: str | None = None,
    workers: int = 0,
    time_limit_minutes: float = 0.0,
    replace: Collection[str] = (),
) -> int:
    """Copy the set into the run (:func:`prepare_run_data`), record the choices, and launch the training.

    Returns:
        The trainer's process id.

    Raises:
        FileExistsError: ``run_dir`` holds a run already. TrainingBusy: another training runs.
        ValueError, DatasetError, ModelError: bad choices or data (one line); nothing is left behind.
        OSError: the trainer could not be started.
    """
    run_dir = run_dir.resolve()
    if (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir.name} already holds a run; resume it or choose another name")
    if busy := jobs.busy_message():
        raise jobs.TrainingBusy(busy)
    created = not run_dir.exists()
    try:
        data = prepare_run_data(set_dir, held_out, run_dir)
        record = {"set": str(set_dir), "base": str(base), "held_out": list(held_out), "device": device}
        atomic_write_text(run_dir / RECORD, json.dumps(record, indent=1) + "\n")
        return jobs.start_training(
            cfg,
            run_dir,
            data=data,
            workers=workers,
            time_limit_minutes=time_limit_minutes,
            replace=replace,
            device=device,
        )
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            shutil.rmtree(run_dir / RUN_DATA, ignore_errors=True)
            (run_dir / RECORD).unlink(missing_ok=True)
        raise


def resume(run_dir: Path, fallback_data: str | os.PathLike | None) -> int:
    """Resume any run: a fine-tuning run from its own data copy and on its device, others from ``fallback_data``.

    Raises:
        as :func:`glandseg_dashboard.jobs.resume_training`.
    """
    own = run_data(run_dir)
    device = read_record(run_dir).get("device") if own else None
    data = own if own is not None else fallback_data
    return jobs.resume_training(run_dir, data=data, restart=True, device=device)


__all__ = [
    "RECORD",
    "RUN_DATA",
    "DatasetError",
    "ModelError",
    "annotation_sets",
    "base_models",
    "finetune_config",
    "finetune_preset",
    "held_out_by_fraction",
    "prepare_run_data",
    "read_record",
    "resume",
    "run_data",
    "set_images",
    "start_finetune",
]
