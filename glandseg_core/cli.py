"""The ``glandseg`` command (also ``python -m glandseg_core``): one entry point for every verb.

    glandseg train | predict | evaluate | export | card | tta | pack | data

Expected errors (bad files, folders, settings) print one line, ``error: ...``, and exit with code 2; a stopped
training exits with 3.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ._version import __version__
from .config import PRESETS, coerce_overrides, get_preset, load_config, replace_config
from .errors import GlandsegError, TrainingStopped

log = logging.getLogger("glandseg")
SPLITS = ["train", "val", "testA", "testB"]


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model (CUDA when present, else CPU)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe, e.g. poster-maskrcnn")
    src.add_argument("--config", type=Path, help="a config.json to start from instead of a preset")
    t.add_argument("--data", action="append", help="data folder (DATASETS.md); repeat: add its train")
    t.add_argument("--init", type=Path, help="fine-tune from a model/run folder or .pt (train_init)")
    t.add_argument("--out", type=Path, help="run folder (default: runs/<preset>)")
    t.add_argument("--epochs", type=int, help="override train_epochs")
    t.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    t.add_argument(
        "--resume", action="store_true", help="continue the run in --out exactly where it stopped"
    )
    t.add_argument(
        "--set",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field",
    )
    t.add_argument("--no-bar", action="store_true", help="no progress bar")
    t.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that build augmented batches (default 0: in-process)",
    )
    t.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="training budget; the run shortens its schedule to fit it (default: none)",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError(f"{text}: expected micrometres per pixel, e.g. 0.25 or 0.5")
    return value


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="segment images, folders, globs, slides (also under torchrun)")
    pr.add_argument("--model", type=Path, required=True, help="model folder, e.g. trained_models/unet")
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (predictions)")
    pr.add_argument("--tta", action="store_true", help="test-time augmentation (8 flips/rotations)")
    pr.add_argument("--device", choices=["cpu", "cuda"])
    pr.add_argument(
        "--mpp",
        type=_positive,
        metavar="UM",
        help="micrometres per pixel of the inputs (default: TIFF/OME/slide metadata, else the model's)",
    )
    pr.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    pr.add_argument(
        "--memory-budget",
        type=float,
        metavar="MB",
        help="memory one image may need once resampled to the model's pixel size (default: "
        "$GLANDSEG_MEMORY_BUDGET_MB, else 80%% of the memory available); larger images are refused",
    )
    pr.add_argument("--no-bar", action="store_true", help="no progress bar")
    pr.add_argument("images", nargs="+", help="image or slide files, folders, quoted globs ('a/*.svs')")


def _add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="get the official GlaS release: download it or import its zip")
    verbs = d.add_subparsers(dest="data_command", required=True)
    f = verbs.add_parser("fetch", help="download the GlaS release zip, unpack it, check every SHA-256")
    i = verbs.add_parser("import", help="unpack a GlaS release zip you have, check every SHA-256")
    i.add_argument("zip", type=Path, help="warwick_qu_dataset_released_2016_07_08.zip")
    for v in (f, i):
        v.add_argument("--dest", type=Path, default=Path("data/glas"), help="GlaS folder (data/glas)")
        v.add_argument("--no-bar", action="store_true", help="no progress bar")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate", help="score a model or a folder of label maps with the official GlaS metrics"
    )
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="model folder")
    which.add_argument("--predictions", type=Path, help="folder of label maps named <image>.png")
    e.add_argument("--data", help="data folder, any layout (docs/DATASETS.md; default: $GLANDSEG_DATA)")
    e.add_argument(
        "--split",
        nargs="+",
        help="splits of the set, or all (default: GlaS val, other sets all). GlaS testA/testB with --model "
        "are recorded in the folder's test_history.jsonl",
    )
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--tta", action="store_true")
    e.add_argument(
        "--save-predictions", action="store_true", help="also write out/predictions/<image>_labels.png"
    )
    e.add_argument("--device", choices=["cpu", "cuda"])
    e.add_argument(
        "--reason", default="", help="why the test splits are scored (kept in test_history.jsonl)"
    )
    e.add_argument(
        "--relabel-gt",
        action="store_true",
        help="diagnostic only, beside the official figures: ground-truth ids split into connected components",
    )


def _add_model_tools(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="turn a training run's best.pt into a model folder")
    x.add_argument("run", type=Path, help="training run folder (best.pt, config.json, postprocess.json)")
    x.add_argument("model", type=Path, help="model folder to write, e.g. trained_models/mine")
    x.add_argument("--overwrite", action="store_true", help="replace the model the folder already holds")
    x.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store weights in fp16 (default: only when fp32 would exceed 90 MiB)",
    )
    c = sub.add_parser("card", help="write MODEL_CARD.md of a model folder")
    c.add_argument("model_dir", type=Path)
    c.add_argument("--run", type=Path, required=True, help="the training run it came from")
    c.add_argument("--command", required=True, help="the exact train command")
    c.add_argument("--notes", type=Path, help="a Markdown file appended to the card")
    c.add_argument("--data", help="GlaS folder, to flag annotation quirks (default: $GLANDSEG_DATA)")
    c.add_argument("--hardware", default="", help="where the run trained (default: this machine's CPU)")
    a = sub.add_parser(
        "tta", help="evaluate a model without and with test-time augmentation, side by side"
    )
    a.add_argument("--model", type=Path, required=True)
    a.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    a.add_argument("--split", nargs="+", default=["val", "testA", "testB"], choices=SPLITS)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--device", choices=["cpu", "cuda"])


def _add_pack(sub: argparse._SubParsersAction) -> None:
    pk = sub.add_parser(
        "pack", help="write a compact copy of GlaS (lossless WebP / JPEG) to carry to a GPU machine"
    )
    pk.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    pk.add_argument("--out", type=Path, required=True, help="folder for the copy")
    pk.add_argument("--split", nargs="+", default=["train", "val"], choices=SPLITS)
    pk.add_argument(
        "--lossless",
        nargs="*",
        default=["val"],
        choices=SPLITS,
        help="splits kept pixel-exact (default: val)",
    )
    pk.add_argument(
        "--quality", type=int, default=95, help="JPEG quality of the other splits (default 95)"
    )


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of the sub-commands."""
    p = argparse.ArgumentParser(
        prog="glandseg", description="Gland segmentation on GlaS: U-Net and Mask R-CNN."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)
    for add in (_add_train, _add_predict, _add_evaluate, _add_model_tools, _add_pack, _add_data):
        add(sub)
    return p


def _cmd_pack(args: argparse.Namespace) -> int:
    from .datasets.glas.pack import pack_glas

    manifest = pack_glas(args.data, args.out, tuple(args.split), tuple(args.lossless), args.quality)
    for split, e in manifest["splits"].items():
        print(f"{split}: {e['images']} images, {e['encoding']}, {e['bytes'] / 2**20:.1f} MiB")
    return 0


def _train_config(args: argparse.Namespace):
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out RUN_DIR")
        if args.set or args.epochs is not None or args.config or args.preset or args.init:
            raise ValueError(
                "--resume continues the run's saved config.json; drop --set/--epochs/--config/--preset/--init"
            )
        return load_config(args.out / "config.json")
    base = load_config(args.config) if args.config else get_preset(args.preset or "glandseg-unet")
    if args.init:  # fine-tune: the folder's own config.json, a --preset on its section, or --config
        from .train.starts import init_config

        chosen = base if args.config or args.preset else None
        base = init_config(args.init, chosen, own_section=bool(args.preset))
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        raise ValueError(f"--set takes KEY=VALUE, got {bad[0]!r}")
    overrides = coerce_overrides(dict(kv.split("=", 1) for kv in args.set))
    if args.epochs is not None:
        overrides["train_epochs"] = args.epochs
    return replace_config(base, **overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import fit

    cfg = _train_config(args)
    out = args.out or Path("runs") / cfg.name
    best = fit(
        cfg,
        args.data,  # None, one folder, or several: the first set's splits, the others' train
        out,
        machine_lock=True,  # one training per machine; a library caller of fit chooses
        resume=args.resume,
        device=args.device,
        show_bar=not args.no_bar,
        workers=args.workers,
        time_limit=60 * args.time_limit,
    )
    print(f"done: {out} (best epoch {best.get('epoch')}: val F1 {best.get('val_f1', float('nan')):.3f})")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .batch import Result, run_batch
    from .distributed import process_group, world_from_env
    from .memory import current_budget
    from .segmenters import load_segmenter

    world = world_from_env()
    tag = f"[rank {world.rank}] " if world.distributed else ""

    def report(r: Result) -> None:
        if r.error:
            print(f"{tag}error: {r.error}", file=sys.stderr)
            return
        area = f", {r.area_um2:,.0f} um^2" if r.area_um2 is not None else ""
        done = "skipped, done before: " if r.skipped else ""
        print(f"{tag}{r.path.name}: {done}{r.glands} glands{area} -> {r.output}")

    budget = current_budget(args.memory_budget)
    with process_group(world):
        segmenter = load_segmenter(args.model, device=world.device(args.device), tta=args.tta)
        outcome = run_batch(
            segmenter,
            args.images,
            args.out,
            overwrite=args.overwrite,
            mpp=args.mpp,
            world=world,
            report=report,
            show_bar=not args.no_bar,
            budget=budget,
        )
    if outcome.interrupted:
        print(
            f"{tag}interrupted after {len(outcome.results)} input(s), listed in {outcome.part}; run the "
            "same command again to finish (done inputs are skipped)",
            file=sys.stderr,
        )
        return 130
    if outcome.summary is None:  # a torchrun rank other than 0: rank 0 reports for the batch
        return 0
    c = outcome.counts
    print(
        f"{outcome.total} inputs: {c['ok']} ok, {c['skipped']} skipped, {c['error']} failed; "
        f"summary: {outcome.summary}"
    )
    return 1 if c["error"] else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import as_dataset, eval_splits
    from .evaluation import evaluate, format_summary, read_relabel_summary
    from .segmenters import load_segmenter

    data = as_dataset(args.data)
    splits = eval_splits(data, args.split)
    segmenter = load_segmenter(args.model, device=args.device, tta=args.tta) if args.model else None
    _, summary = evaluate(
        data,
        splits,
        args.out,
        segmenter=segmenter,
        predictions=args.predictions,
        save_predictions=args.save_predictions,
        relabel_gt=args.relabel_gt,
        record_history=True,  # scoring a model folder on a test split is recorded in its history
        reason=args.reason,
    )
    print("official GlaS figures:")
    print(format_summary(summary))
    print(f"wrote {args.out / 'per_image.csv'} and {args.out / 'summary.json'}")
    if args.relabel_gt:
        print("DIAGNOSTIC, not the official figures: ground-truth ids split into connected components")
        print(format_summary(read_relabel_summary(args.out)))
        print(
            f"wrote {args.out / 'per_image_relabel_gt.csv'} and {args.out / 'summary_relabel_gt.json'}"
        )
    if args.model and {"testA", "testB"} & set(splits):
        print(f"recorded in {args.model / 'test_history.jsonl'} (test splits scored)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .checkpoints import export_model

    out = export_model(args.run, args.model, overwrite=args.overwrite, fp16=args.fp16)
    print(f"exported {args.run} -> {out}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from .modelcard import write_card

    notes = args.notes.read_text() if args.notes else ""
    path = write_card(
        args.model_dir, args.run, args.command, notes=notes, data=args.data, hardware=args.hardware
    )
    print(f"wrote {path}")
    return 0


def _cmd_tta(args: argparse.Namespace) -> int:
    from .evaluation import compare_tta

    report = compare_tta(args.model, args.data, args.split, args.out, args.device, record_history=True)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out / 'tta_report.csv'}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .datasets.glas import release as glas_release

    bar = not args.no_bar
    if args.data_command == "fetch":
        report = glas_release.fetch(args.dest, show_bar=bar, log=print)
    else:
        report = glas_release.import_zip(args.zip, args.dest, show_bar=bar)
    if report.written == 0:
        print(f"{report.dest}: all {report.files} files of the GlaS release there, SHA-256 checked")
    else:
        print(
            f"{report.dest}: {report.written} files written, {report.present} already there; "
            f"all {report.files} match their SHA-256"
        )
    if report.ignored:
        print(f"ignored {len(report.ignored)} zip entries that are not part of the release")
    print(f"use it with: export GLANDSEG_DATA={report.dest.resolve()}")
    return 0


COMMANDS = {
    "train": _cmd_train, "predict": _cmd_predict, "evaluate": _cmd_evaluate, "export": _cmd_export,
    "card": _cmd_card, "tta": _cmd_tta, "pack": _cmd_pack, "data": _cmd_data,
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. Expected errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except (GlandsegError, FileExistsError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or vanished folder
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a command could set up its own handling (imports, model loading)
        print("interrupted", file=sys.stderr)
        return 130
