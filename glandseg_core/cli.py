"""Command line: ``python -m glandseg_core train|predict|evaluate|pack``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from .config import PRESETS, coerce_overrides, get_preset, load_config

log = logging.getLogger("glandseg")


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of the sub-commands."""
    p = argparse.ArgumentParser(prog="python -m glandseg_core", description="Gland segmentation on GlaS: U-Net and Mask R-CNN.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (CUDA when present, else CPU)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe, e.g. poster-maskrcnn")
    src.add_argument("--config", type=Path, help="a config.json to start from instead of a preset")
    t.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    t.add_argument("--out", type=Path, help="run folder (default: runs/<preset>)")
    t.add_argument("--epochs", type=int, help="override train_epochs")
    t.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help="override any config field")
    t.add_argument("--no-bar", action="store_true", help="no progress bar")
    t.add_argument("--workers", type=int, default=0, help="processes that build augmented batches (default 0: in-process)")
    t.add_argument(
        "--time-limit", type=float, default=0.0, metavar="MINUTES",
        help="training budget; the run shortens its schedule to fit it (default: none)",
    )

    pr = sub.add_parser("predict", help="segment images with a model folder")
    pr.add_argument("--model", type=Path, required=True, help="model folder, e.g. trained_models/unet")
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    pr.add_argument("--tta", action="store_true", help="test-time augmentation (8 flips/rotations)")
    pr.add_argument("--device", choices=["cpu", "cuda"])
    pr.add_argument("images", nargs="+", type=Path)

    e = sub.add_parser("evaluate", help="score a model or a folder of label maps with the official GlaS metrics")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="model folder")
    which.add_argument("--predictions", type=Path, help="folder of label maps named <image>.png")
    e.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    e.add_argument("--split", nargs="+", default=["testA", "testB"], choices=["train", "val", "testA", "testB", "all"])
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--tta", action="store_true")
    e.add_argument("--save-predictions", action="store_true", help="also write out/predictions/<image>_labels.png")
    e.add_argument("--device", choices=["cpu", "cuda"])

    pk = sub.add_parser("pack", help="write a compact copy of GlaS (lossless WebP / JPEG) to carry to a GPU machine")
    pk.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    pk.add_argument("--out", type=Path, required=True, help="folder for the copy")
    pk.add_argument("--split", nargs="+", default=["train", "val"], choices=["train", "val", "testA", "testB"])
    pk.add_argument("--lossless", nargs="*", default=["val"], choices=["train", "val", "testA", "testB"], help="splits kept pixel-exact (default: val)")
    pk.add_argument("--quality", type=int, default=95, help="JPEG quality of the other splits (default 95)")
    return p


def _cmd_pack(args: argparse.Namespace) -> int:
    from .pack import pack_glas

    manifest = pack_glas(args.data, args.out, tuple(args.split), tuple(args.lossless), args.quality)
    for split, e in manifest["splits"].items():
        print(f"{split}: {e['images']} images, {e['encoding']}, {e['bytes'] / 2**20:.1f} MiB")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import fit

    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out RUN_DIR")
        if args.set or args.epochs is not None or args.config or args.preset:
            raise ValueError("--resume continues the run's saved config.json; drop --set/--epochs/--config/--preset")
        cfg = load_config(args.out / "config.json")
    else:
        base = load_config(args.config) if args.config else get_preset(args.preset or "glandseg-unet")
        overrides = coerce_overrides(dict(kv.split("=", 1) for kv in args.set if "=" in kv))
        bad = [kv for kv in args.set if "=" not in kv]
        if bad:
            raise ValueError(f"--set takes KEY=VALUE, got {bad[0]!r}")
        if args.epochs is not None:
            overrides["train_epochs"] = args.epochs
        cfg = dataclasses.replace(base, **overrides)
    out = args.out or Path("runs") / cfg.name
    best = fit(
        cfg, args.data, out, resume=args.resume, device=args.device, show_bar=not args.no_bar,
        workers=args.workers, time_limit=60 * args.time_limit,
    )
    print(f"done: {out} (best epoch {best.get('epoch')}: val F1 {best.get('val_f1', float('nan')):.3f})")
    return 0


def _output_stems(paths: list[Path]) -> list[str]:
    """One output name per input: the file's stem, made unique when two inputs share it (``a.bmp``, ``x/a.png``)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, n = path.stem, 1
        while name in used:
            n += 1
            name = f"{path.stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def _cmd_predict(args: argparse.Namespace) -> int:
    from .export import gland_table, overlay, to_geojson
    from .infer import load_run, predict
    from .io import ImageError, atomic_write_text, read_image, write_label_png, write_png

    run = load_run(args.model, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path, name in zip(args.images, _output_stems(args.images)):
        try:
            image = read_image(path)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        labels = predict(run, image, tta=args.tta)
        write_label_png(args.out / f"{name}.png", labels)
        write_png(args.out / f"{name}_overlay.png", overlay(image, labels, ids=True))
        atomic_write_text(args.out / f"{name}_glands.csv", gland_table(labels).to_csv(index=False, float_format="%.4g"))
        atomic_write_text(args.out / f"{name}.geojson", json.dumps(to_geojson(labels)))
        n = int(np.count_nonzero(np.unique(labels)))
        print(f"{path.name}: {n} glands -> {args.out / name}.png")
    return 1 if failures else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, format_summary
    from .infer import load_run

    run = load_run(args.model, device=args.device) if args.model else None
    _, summary = evaluate(
        args.data, args.split, args.out, run=run, predictions=args.predictions, tta=args.tta, save_predictions=args.save_predictions
    )
    print(format_summary(summary))
    print(f"wrote {args.out / 'per_image.csv'} and {args.out / 'summary.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. Expected errors become one line on stderr and exit code 2."""
    from .data import DatasetError
    from .infer import ModelError
    from .io import ImageError
    from .locks import TrainingBusy
    from .train import TrainingStopped

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_args_parser().parse_args(argv)
    commands = {"train": _cmd_train, "predict": _cmd_predict, "evaluate": _cmd_evaluate, "pack": _cmd_pack}
    try:
        return commands[args.command](args)
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except (DatasetError, ModelError, ImageError, TrainingBusy, FileExistsError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or vanished folder
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
