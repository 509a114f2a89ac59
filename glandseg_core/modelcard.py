"""Write ``MODEL_CARD.md`` for a model folder from what its run and its evaluations recorded.

Usage: ``glandseg card trained_models/unet --run runs/unet --command "..." [--notes notes.md]``. This is the only
card writer: the dashboard's Promote calls :func:`write_card` too.
Reads the run's ``config.json``, ``log.jsonl`` and ``tuning.json``, and the model folder's ``metrics.json`` (Test A /
Test B), ``val/summary.json``, ``tta/summary.json`` and ``summary_relabel_gt.json`` (when present) and
``per_image.csv``.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import cast

import pandas as pd
import torch

from .checkpoints import WEIGHTS, read_checkpoint
from .config import RunConfig, config_to_dict, load_config
from .datasets.glas import find_items, single_id_annotations
from .errors import DatasetError
from .evaluation import TEST_HISTORY, TEST_SPLITS, read_relabel_summary, read_test_history
from .files import atomic_write_text
from .stats import POSTER, PUBLISHED, detection_f1


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _results_table(summaries: dict[str, dict]) -> list[str]:
    rows = [
        "| split | images | pooled F1 | pooled obj. Dice | pooled obj. Hausdorff | mean F1 | mean obj. Dice | mean obj. Hausdorff | mean pixel IoU | mean count score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, s in summaries.items():
        rows.append(
            f"| {label} | {s['n_images']} | {_fmt(s['pooled_f1'])} | {_fmt(s['pooled_object_dice'])} | "
            f"{_fmt(s['pooled_object_hausdorff'], 1)} | {_fmt(s['mean_f1'])} | {_fmt(s['mean_object_dice'])} | "
            f"{_fmt(s['mean_object_hausdorff'], 1)} | {_fmt(s.get('mean_pixel_iou'))} | {_fmt(s.get('mean_count_score'))} |"
        )
    return rows


def _single_id_section(per_image: pd.DataFrame, data: str | None) -> list[str]:
    """Flag test images annotated with one id for all glands, with the pooled F1 without them (diagnostic only)."""
    try:
        names = single_id_annotations(find_items(data, ("testA", "testB")))
    except DatasetError:
        return []
    if not names:
        return []
    lines = [
        "",
        "## Ground-truth quirk: images annotated with one id",
        "",
        (
            f"{len(names)} test images ({', '.join(names)}) give all their glands a single id in the annotation. The official "
            "metrics never relabel by connectivity (see `docs/METRICS.md`), so each counts as one ground-truth object and a "
            "per-gland segmentation scores F1 0 on it. The official figures above include them, unchanged. For "
            "diagnosis only, pooled F1 without them:"
        ),
        "",
        "| split | images | pooled F1 (official) | pooled F1 without the single-id images |",
        "|---|---|---|---|",
    ]
    for split in ("testA", "testB"):
        rows = per_image[per_image["split"] == split]
        kept = rows[~rows["image"].isin(names)]
        if len(kept) < len(rows):
            lines.append(
                f"| {split} | {len(kept)} of {len(rows)} | {_pooled_f1(rows):.3f} | {_pooled_f1(kept):.3f} |"
            )
    return lines


def _pooled_f1(rows: pd.DataFrame) -> float:
    return detection_f1(int(rows["tp"].sum()), int(rows["fp"].sum()), int(rows["fn"].sum()))


def _weights_line(weights: Path) -> str:
    if not weights.is_file():
        return "- Weights: not shipped (scores only; the notes below say why)."
    state = read_checkpoint(weights)["model"]
    n_params = sum(v.numel() for v in state.values())
    storage = (
        "fp16 storage (BatchNorm statistics fp32)"
        if any(v.dtype == torch.float16 for v in state.values())
        else "fp32"
    )
    return (
        f"- Weights: `weights.pt` ({weights.stat().st_size / 2**20:.1f} MiB, {storage}, {n_params / 1e6:.2f} M values), "
        "loaded with `torch.load(..., weights_only=True)`."
    )


def _read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    rows = []
    for ln in path.read_text().splitlines():
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run: the card reports the complete epochs
    return rows


def _header(model_dir: Path, run_dir: Path, cfg: RunConfig, command: str, hardware: str) -> list[str]:
    log = _read_log(run_dir)
    wall = sum(r.get("seconds", 0.0) for r in log)
    tuning = _read_json(run_dir / "tuning.json")
    post = _read_json(model_dir / "postprocess.json")
    hardware = (
        hardware
        or f"{platform.machine()} CPU, {os.cpu_count()} cores on the machine that wrote this card"
    )
    init = (
        f"; fine-tuned from `{cfg.train_init}` (`train_init`), trained as the notes below say."
        if cfg.train_init
        else "."
    )
    return [
        _weights_line(model_dir / WEIGHTS),
        f"- Recipe: preset `{cfg.name}` (every hyperparameter below and in `config.json`)" + init,
        f"- Trained by: `{command}`",
        f"- Hardware: {hardware}; wall time of the logged epochs {wall / 3600:.2f} h over {len(log)} logged epochs.",
        f"- Best epoch on `val`: {tuning.get('best_epoch', '?')} (selection: pooled F1, then object Dice).",
        f"- Post-processing tuned on `val` (grid of {tuning.get('grid_size', '?')}): `{json.dumps(post)}`.",
        "",
        "## Data and splits",
        data_and_splits(model_dir),
    ]


def _results(model_dir: Path, run_dir: Path, metrics: dict) -> list[str]:
    val = _read_json(model_dir / "val" / "summary.json")
    tta = _read_json(model_dir / "tta" / "summary.json")
    tuning = _read_json(run_dir / "tuning.json")
    lines = ["", "## Results (official GlaS metrics, `glandseg evaluate`)", ""]
    summaries = {"val": val["val"]} if val.get("val") else {}
    for split in ("testA", "testB", "all"):
        if split in metrics:
            summaries["Test A + B" if split == "all" else split] = metrics[split]
    lines += _results_table(summaries)
    if not val.get("val") and "val_f1" in tuning:
        lines += [
            "",
            (
                f"`val` (from the tuning, pooled only): F1 {tuning['val_f1']:.3f}, object Dice "
                f"{tuning['val_object_dice']:.3f}, object Hausdorff {tuning['val_object_hausdorff']:.1f}."
            ),
        ]
    if tta:
        lines += ["", "With test-time augmentation (`--tta`: 8 flips / 90° rotations):", ""]
        lines += _results_table({("val + Test A + B" if k == "all" else k): v for k, v in tta.items()})
    return lines + _components_section(model_dir, metrics)


def _components_section(model_dir: Path, metrics: dict) -> list[str]:
    """The same predictions scored against ground truth split into connected components (``--relabel-gt``):
    the convention several published GlaS results use, so theirs are compared with the right figures."""
    comp = read_relabel_summary(model_dir)
    if not comp:
        return []
    differ = [k for k, v in comp.items() if k != "all" and v != metrics.get(k)]
    intro = (
        "The same predictions against ground truth whose ids are split into connected components (8-connected; "
        "`glandseg evaluate --relabel-gt`), the convention several published GlaS results use; figures differ "
        f"from the official ones on {', '.join(differ) or 'no split'}. Pooled and per-image-mean columns as above:"
    )
    lines = [
        "",
        "### Ground truth split into components (a second convention, not the official figures)",
        "",
    ]
    return (
        lines
        + [intro, ""]
        + _results_table({("Test A + B" if k == "all" else k): v for k, v in comp.items()})
    )


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def data_and_splits(model_dir: Path) -> str:
    """The card's data paragraph, with how often the test sets were scored (from ``test_history.jsonl``)."""
    history = read_test_history(model_dir)
    counts = {s: sum(r["split"] == s for r in history) for s in TEST_SPLITS}
    looked = (
        f"Test A was scored {_times(counts['testA'])} and Test B {_times(counts['testB'])} for this folder, each time for a model "
        'already chosen on `val`; every scoring and its reason is listed under "Test-set history" below.'
        if history
        else f"Test A and Test B are scored only for a model already chosen on `val`; each scoring is recorded in `{TEST_HISTORY}`."
    )
    return (
        "GlaS (Warwick-QU, MICCAI 2015). `train`: 70 images, `val`: 15 images carved from the 85 training images "
        "(stratified by grade, fixed in `glandseg_core/datasets/glas/val_split.txt`), Test A: 60, Test B: 20. Epoch, checkpoint and "
        f"post-processing thresholds were chosen on `val` only. {looked}"
    )


def history_section(model_dir: Path) -> list[str]:
    """``## Test-set history``: every recorded scoring of Test A / Test B for this folder, oldest first."""
    history = read_test_history(model_dir)
    if not history:
        return []
    counts = {s: sum(r["split"] == s for r in history) for s in TEST_SPLITS}
    backfilled = sum(bool(r.get("backfilled")) for r in history)
    lines = [
        "",
        "## Test-set history",
        "",
        (
            f"From `{TEST_HISTORY}`: Test A scored {_times(counts['testA'])}, Test B {_times(counts['testB'])}"
            + (
                f" ({backfilled} records backfilled from the git history of `metrics.json`, `tta/summary.json` and "
                "the cards, dated by the commit that recorded them)"
                if backfilled
                else ""
            )
            + "."
        ),
        "",
        "| date | commit | split | TTA | pooled F1 | obj. Dice | obj. Hausdorff | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in history:
        f = r.get("figures", {})
        lines.append(
            f"| {str(r.get('date', '?'))[:10]} | `{r.get('commit', '?')}` | {r['split']} | {'yes' if r.get('tta') else 'no'} | "
            f"{_fmt(f.get('pooled_f1'))} | {_fmt(f.get('pooled_object_dice'))} | {_fmt(f.get('pooled_object_hausdorff'), 1)} | "
            f"{r.get('reason') or '–'} |"
        )
    return lines


def _reproduce(model_dir: Path) -> str:
    return (
        f"Reproduce the figures without inference: `glandseg evaluate --predictions {model_dir}/predictions "
        "--split testA testB --out cache/check` (compare with `metrics.json`); re-running the model "
        f"(`--model {model_dir}`) is a new look at the test sets and is recorded in `{TEST_HISTORY}`."
    )


def refresh_card(model_dir: str | Path) -> Path:
    """Rewrite the test-history parts of an existing ``MODEL_CARD.md`` in place (its data paragraph and its
    ``## Test-set history`` section), for a folder whose training run is no longer at hand."""
    path = Path(model_dir) / "MODEL_CARD.md"
    lines = path.read_text().splitlines()
    i = lines.index("## Data and splits")
    lines[i + 1] = data_and_splits(Path(model_dir))
    if "## Test-set history" in lines:
        a = lines.index("## Test-set history") - 1
        b = next((k for k in range(a + 2, len(lines)) if lines[k].startswith("## ")), len(lines))
        del lines[a : b - 1]
    at = lines.index("## Beside the poster and published GlaS results") - 1
    lines[at:at] = history_section(Path(model_dir))
    old = [k for k, ln in enumerate(lines) if ln.startswith("Reproduce the figures")]
    if old:
        lines[old[0]] = _reproduce(Path(model_dir))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _references(display: str, metrics: dict) -> list[str]:
    lines = ["", "## Beside the poster and published GlaS results", ""]
    lines += ["| method | split | F1 | obj. Dice | obj. Hausdorff |", "|---|---|---|---|---|"]
    for p in (r for r in POSTER if str(r["method"]).startswith(display)):
        lines.append(
            f"| {p['method']}, per-image means | {p['split']} | {p['f1']:.2f} | – | {p['object_hausdorff']:.0f} |"
        )
    for split in ("testA", "testB"):
        if split in metrics:
            s, label = metrics[split], f"Test {split[-1]}"
            lines.append(
                f"| **this model**, pooled | {label} | **{s['pooled_f1']:.3f}** | {s['pooled_object_dice']:.3f} | {s['pooled_object_hausdorff']:.1f} |"
            )
            lines.append(
                f"| this model, per-image mean | {label} | {s['mean_f1']:.3f} | {s['mean_object_dice']:.3f} | {s['mean_object_hausdorff']:.1f} |"
            )
    for r in PUBLISHED:
        dice, hd = cast("float | None", r["object_dice"]), cast("float | None", r["object_hausdorff"])
        lines.append(f"| {r['method']} | {r['split']} | {r['f1']:.3f} | {_fmt(dice)} | {_fmt(hd, 1)} |")
    return lines


def _worst_images(per_image: Path, data: str | None) -> list[str]:
    if not per_image.is_file():
        return []
    table = pd.read_csv(per_image)
    df = table.sort_values(["f1", "object_dice"]).head(6)
    lines = [
        "",
        "## Worst images (lowest F1 on Test A / Test B)",
        "",
        "| image | grade | GT glands | predicted | TP | F1 | obj. Dice | obj. Hausdorff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.image} | {r.grade} | {r.n_gt} | {r.n_pred} | {r.tp} | {r.f1:.3f} | {r.object_dice:.3f} | {r.object_hausdorff:.1f} |"
        )
    return lines + _single_id_section(table, data)


def render(
    model_dir: Path,
    run_dir: Path,
    command: str,
    *,
    notes: str = "",
    data: str | None = None,
    hardware: str = "",
) -> str:
    """The card's Markdown text. ``hardware`` describes where the run trained (default: this machine)."""
    cfg = load_config(model_dir / "config.json")
    metrics = _read_json(model_dir / "metrics.json")
    display = cfg.kind.title
    lines = [f"# Model card: {model_dir.name} ({display})", ""]
    lines += _header(model_dir, run_dir, cfg, command, hardware)
    lines += _results(model_dir, run_dir, metrics)
    lines += history_section(model_dir)
    lines += _references(display, metrics)
    lines += _worst_images(model_dir / "per_image.csv", data)
    lines += ["", "## Hyperparameters", "", "| field | value |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in config_to_dict(cfg).items()]
    if notes:
        lines += ["", notes.strip()]
    if (model_dir / WEIGHTS).is_file():
        lines += ["", _reproduce(model_dir)]
    return "\n".join(lines) + "\n"


def write_card(
    model_dir: str | Path,
    run_dir: str | Path,
    command: str,
    *,
    notes: str = "",
    data: str | None = None,
    hardware: str = "",
) -> Path:
    """Write ``model_dir/MODEL_CARD.md`` (atomically) from :func:`render`; returns its path."""
    model_dir, run_dir = Path(model_dir), Path(run_dir)
    path = model_dir / "MODEL_CARD.md"
    atomic_write_text(
        path, render(model_dir, run_dir, command, notes=notes, data=data, hardware=hardware)
    )
    return path
