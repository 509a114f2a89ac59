"""Does fine-tuning a shipped model on a few images of a new lab help on that lab's other images?

    .venv/bin/python -m benchmarks.bench_finetune                                   # the U-Net (~10 min, 2 cores)
    .venv/bin/python -m benchmarks.bench_finetune --model trained_models/maskrcnn \\
        --preset finetune-maskrcnn --out benchmarks/results_finetune_maskrcnn.txt

The "new lab" is the 15 GlaS ``val`` images (carved from GlaS train; the shipped models never trained on them)
with one fixed stain change (``stain_shift.NEW_LAB``: weaker haematoxylin, stronger eosin). They are split by
patient (``Grade.csv``) into 7 fine-tuning images, 3 that choose the epoch and re-tune post-processing, and 5
held out (``SPLIT``). The shipped model is scored on the 5 held-out images, fine-tuned with the preset
(``--init`` semantics: the preset's training fields on the model's own section), exported to a model folder
(its re-tuned ``postprocess.json`` with it) and scored again on the same 5; the shipped weights with only their
post-processing re-tuned on the 3 show what re-tuning alone gives. No GlaS test image is read.
Writes ``--out`` (default benchmarks/results_finetune.txt) and prints the same; ``--picture`` saves one held-out
image before and after the stain change.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmarks.stain_shift import NEW_LAB, apply_shift
from glandseg_core.checkpoints import export_model, model_from_state, read_checkpoint, weights_file
from glandseg_core.config import get_preset, load_config, replace_config
from glandseg_core.datasets import from_pairs
from glandseg_core.datasets.glas.adapter import GlasDataset
from glandseg_core.device import has_amx
from glandseg_core.evaluation import evaluate
from glandseg_core.segmenters import Segmenter, load_segmenter, make_segmenter
from glandseg_core.stats import paired_comparison
from glandseg_core.train import fit
from glandseg_core.train.starts import init_config
from glandseg_core.train.tune import base_post, tune

ROOT = Path(__file__).resolve().parents[1]
# GlaS val images by part; patients (Grade.csv) in brackets never cross parts; b = benign, m = malignant.
SPLIT = {
    # patients 10 (9 b, 16 m, 72 b), 5 (21 b), 2 (44 m, 71 m, 74 m)
    "train": ("train_9", "train_16", "train_72", "train_21", "train_44", "train_71", "train_74"),
    # patients 1 (39 m, 68 m), 3 (6 b): choose the epoch, re-tune post-processing
    "val": ("train_39", "train_68", "train_6"),
    # patients 11 (5 m, 81 m), 9 (59 b, 62 b), 13 (12 b): scored before and after, never trained on
    "held_out": ("train_5", "train_81", "train_59", "train_62", "train_12"),
}
Pairs = list[tuple[str, np.ndarray, np.ndarray]]


def glas_dir() -> Path:
    return Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))


def load_parts(glas: Path, limit: int = 0) -> dict[str, Pairs]:
    """The (name, image as released, label map) of each part of ``SPLIT``; ``limit`` > 0 keeps that many per
    part (the test's dry run). Only GlaS ``val`` items are read, and patients are checked not to cross parts."""
    items = {it.name: it for it in GlasDataset(glas).items(["val"])}
    parts: dict[str, Pairs] = {}
    patients: dict[str, set[str | None]] = {}
    for part, names in SPLIT.items():
        names = names[:limit] if limit else names
        parts[part] = []
        for name in names:
            item = items[name]  # a KeyError here means the name is not a GlaS val image
            image, labels = item.load()
            assert labels is not None and item.split == "val"
            parts[part].append((name, image, labels))
        patients[part] = {items[n].group for n in names}
    crossing = [(a, b) for a in patients for b in patients if a < b and patients[a] & patients[b]]
    if crossing:
        raise ValueError(f"a patient is in two parts: {crossing}")
    return parts


def shifted(pairs: Pairs) -> Pairs:
    """``pairs`` with the benchmark's stain change (``NEW_LAB``)."""
    return [(name, apply_shift(image, NEW_LAB), labels) for name, image, labels in pairs]


def as_pairs(pairs: Pairs, split: str):
    """An in-memory data set of ``pairs`` in ``split`` at GlaS's 0.62 µm/px."""
    return from_pairs(
        [im for _, im, _ in pairs], [lab for *_, lab in pairs], mpp=0.62, split=split,
        names=[n for n, *_ in pairs],
    )  # fmt: skip


def score(model: Path | Segmenter, pairs: Pairs) -> tuple[pd.DataFrame, dict]:
    """(per-image table indexed by image, pooled summary) of a model folder or a segmenter on ``pairs``."""
    segmenter = load_segmenter(model, device="cpu") if isinstance(model, Path) else model
    table, summary = evaluate(as_pairs(pairs, "test"), ["test"], segmenter=segmenter)
    return table.set_index("image"), summary["test"]


def retuned(model_dir: Path, val: Pairs) -> Segmenter:
    """The model's weights as shipped with post-processing re-tuned on ``val`` (no training): what re-tuning
    alone gives (as ``train.tune.tune_checkpoint`` does for a run)."""
    cfg, cpu = load_config(model_dir / "config.json"), torch.device("cpu")
    net = model_from_state(cfg, read_checkpoint(weights_file(model_dir))["model"], cpu)
    post, _ = tune(make_segmenter(net, cfg, base_post(cfg)[0], cpu), [(im, lab) for _, im, lab in val])
    return make_segmenter(net, cfg, post, cpu)


def finetune(args: argparse.Namespace, parts: dict[str, Pairs], work: Path) -> tuple[Path, float, dict]:
    """Fine-tune ``args.model`` with ``args.preset`` on the train part (val part: epoch and post-processing);
    the exported model folder, the seconds ``fit`` took and the config it trained."""
    cfg = init_config(args.model, get_preset(args.preset), own_section=True)
    overrides = {
        k: v for k, v in (("train_epochs", args.epochs), ("train_steps_per_epoch", args.steps)) if v
    }
    cfg = replace_config(cfg, **overrides)
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)  # the benchmark's own folder: each run starts afresh
    t0 = time.perf_counter()
    fit(
        cfg,
        as_pairs(parts["train"], "train"),
        run,
        val_data=as_pairs(parts["val"], "val"),
        show_bar=False,
    )
    seconds = time.perf_counter() - t0
    model = export_model(run, work / "model", overwrite=True)
    return model, seconds, json.loads((run / "config.json").read_text())


def hardware() -> str:
    """CPU model, cores torch uses, bf16 autocast (AMX) or not."""
    name = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        name = next(
            line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
        )
    except (OSError, StopIteration):
        pass
    amx = "AMX: bf16 autocast" if has_amx() else "no AMX: fp32"
    return f"{name}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; {amx}; no GPU used"


def summary_rows(rows: dict[str, dict]) -> list[str]:
    """One line per scoring: pooled F1, object Dice, object Hausdorff, TP/FP/FN."""
    out = [f"{'model / images':<52} | pooled F1 | obj Dice | obj Hausdorff | TP  FP  FN"]
    for label, s in rows.items():
        out.append(
            f"{label:<52} | {s['pooled_f1']:9.3f} | {s['pooled_object_dice']:8.3f} | "
            f"{s['pooled_object_hausdorff']:13.1f} | {s['tp']:3d} {s['fp']:3d} {s['fn']:3d}"
        )
    return out


def per_image_rows(before: pd.DataFrame, after: pd.DataFrame, clean: pd.DataFrame) -> list[str]:
    """Per held-out image: glands, F1 before and after fine-tuning (and the shipped model on the clean image)."""
    out = [f"{'image':<10} | glands | F1 clean (shipped) | F1 before | F1 after | after - before"]
    for name in before.index:
        b, a = before.loc[name, "f1"], after.loc[name, "f1"]
        out.append(
            f"{name:<10} | {int(before.loc[name, 'n_gt']):6d} | {clean.loc[name, 'f1']:18.3f} | {b:9.3f} | "
            f"{a:8.3f} | {a - b:+14.3f}"
        )
    return out


def paired_lines(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """Paired difference (after - before) of per-image F1, object Dice and object Hausdorff."""
    out = []
    for col in ("f1", "object_dice", "object_hausdorff"):
        r = paired_comparison(before[col], after[col], n_boot=2000)
        out.append(
            f"paired {col:<16} after - before over {r.n} images: mean {r.mean_diff:+.3f}, median "
            f"{r.median_diff:+.3f}, bootstrap 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}], Wilcoxon p "
            f"{r.p_value:.3f}{'  (' + r.note + ')' if r.note else ''}"
        )
    return out


def save_picture(glas: Path, name: str, path: Path) -> None:
    """``name`` before (left) and after (right) the stain change, at half size, as a JPEG."""
    image, _ = {it.name: it for it in GlasDataset(glas).items(["val"])}[name].load()
    both = np.concatenate([image, np.full((image.shape[0], 8, 3), 255, np.uint8), apply_shift(image)], 1)
    pil = Image.fromarray(both)
    pil.resize((pil.width // 2, pil.height // 2), Image.Resampling.LANCZOS).save(path, quality=85)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "trained_models" / "unet")
    p.add_argument("--preset", default="finetune-unet")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_finetune.txt")
    p.add_argument(
        "--work", type=Path, default=ROOT / "cache" / "bench_finetune", help="run + model folder"
    )
    p.add_argument("--picture", type=Path, help="save one held-out image before/after the stain change")
    p.add_argument("--epochs", type=int, default=0, help="override the preset (0: the preset's)")
    p.add_argument("--steps", type=int, default=0, help="steps per epoch (0: the preset's)")
    p.add_argument("--limit", type=int, default=0, help="images per part (0: all; the test's dry run)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    glas, t_start = glas_dir(), time.perf_counter()
    if args.picture:
        save_picture(glas, SPLIT["held_out"][-1], args.picture)
    clean_parts = load_parts(glas, args.limit)
    parts = {part: shifted(pairs) for part, pairs in clean_parts.items()}
    held, clean = parts["held_out"], clean_parts["held_out"]
    work = args.work / args.model.name
    clean_table, clean_sum = score(args.model, clean)
    before, before_sum = score(args.model, held)
    _, retuned_sum = score(retuned(args.model, parts["val"]), held)
    model, seconds, cfg = finetune(args, parts, work)
    after, after_sum = score(model, held)
    after_clean, after_clean_sum = score(model, clean)
    lines = report_lines(args, cfg, seconds, time.perf_counter() - t_start, model)
    n = len(held)
    lines += summary_rows(
        {
            f"shipped, held-out {n}, original stain": clean_sum,
            f"shipped, held-out {n}, new stain (before)": before_sum,
            "  same, post-processing re-tuned on val, no training": retuned_sum,
            f"fine-tuned, held-out {n}, new stain (after)": after_sum,
            f"fine-tuned, held-out {n}, original stain": after_clean_sum,
        }
    )
    lines += ["", *per_image_rows(before, after, clean_table), "", *paired_lines(before, after)]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


def _rel(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (results files name no machine's paths)."""
    try:
        return str(path.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def report_lines(
    args: argparse.Namespace, cfg: dict, seconds: float, total: float, model: Path
) -> list[str]:
    """The header: command, hardware, split, shift, the fine-tune's recipe and time, the tuned settings."""
    post = json.loads((model / "postprocess.json").read_text())
    shipped = json.loads((args.model / "postprocess.json").read_text())
    recipe = {k: v for k, v in cfg.items() if k.startswith("train_") and k != "train_init"}
    return [
        f"command: python -m benchmarks.bench_finetune {' '.join(sys.argv[1:])}".rstrip(),
        f"hardware: {hardware()}",
        f"model: {_rel(args.model)} fine-tuned with --preset {args.preset} "
        f"(train_init {_rel(Path(cfg['train_init']))})",
        f"stain change: {NEW_LAB.describe()}",
        "images: the 15 GlaS val images (never trained on by the shipped models), split by patient:",
        *(f"  {part}: {', '.join(n for n in SPLIT[part][: args.limit or None])}" for part in SPLIT),
        f"recipe: {json.dumps(recipe)}",
        f"fine-tune wall time (fit: training, validation each epoch, post-processing tuning): {seconds:.0f} s; "
        f"whole benchmark {total:.0f} s",
        f"post-processing: shipped {json.dumps(shipped)}; re-tuned on the val part {json.dumps(post)}",
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
