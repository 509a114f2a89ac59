"""What each verb of the ``glandseg`` command does (``COMMANDS``: verb -> function of the parsed arguments,
returning the exit code). Heavy modules are imported inside each command, so ``glandseg --help`` stays fast."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from ..config import coerce_overrides, get_preset, load_config, replace_config

log = logging.getLogger("glandseg")


def _cmd_pack(args: argparse.Namespace) -> int:
    from ..datasets.glas.pack import pack_glas

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
        from ..train.starts import init_config

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
    from ..train import fit

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


def _line(text: str, stream: TextIO) -> None:
    """One line in one write, flushed: torchrun's ranks share the terminal, and ``print`` writes the text and
    its newline separately when Python runs unbuffered (``PYTHONUNBUFFERED``), so two ranks' lines could
    interleave into one line and an empty one."""
    stream.write(text + "\n")
    stream.flush()


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..batch import Result, run_batch
    from ..distributed import process_group, world_from_env
    from ..engines import engine_of
    from ..engines.runners import title
    from ..memory import current_budget
    from ..segmenters import load_segmenter

    world = world_from_env()
    tag = f"[rank {world.rank}] " if world.distributed else ""

    def report(r: Result) -> None:
        if r.error:
            _line(f"{tag}error: {r.error}", sys.stderr)
            return
        area = f", {r.area_um2:,.0f} um^2" if r.area_um2 is not None else ""
        done = "skipped, done before: " if r.skipped else ""
        _line(f"{tag}{r.path.name}: {done}{r.glands} glands{area} -> {r.output}", sys.stdout)

    budget = current_budget(args.memory_budget)
    with process_group(world):
        segmenter = load_segmenter(
            args.model, device=world.device(args.device), tta=args.tta, engine=args.engine
        )
        # which engine runs, once, on stderr (auto may mean PyTorch, ONNX Runtime or OpenVINO, or a fallback)
        engine = engine_of(segmenter.model)
        log.info("%sengine: %s", tag, title(engine))
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
        _line(
            f"{tag}interrupted after {len(outcome.results)} input(s), listed in {outcome.part}; run the "
            "same command again to finish (done inputs are skipped)",
            sys.stderr,
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
    from ..datasets import as_dataset, eval_splits
    from ..evaluation import evaluate, format_summary, read_relabel_summary
    from ..segmenters import load_segmenter

    data = as_dataset(args.data)
    splits = eval_splits(data, args.split)
    segmenter = None
    if args.model:
        segmenter = load_segmenter(args.model, device=args.device, tta=args.tta, engine=args.engine)
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
    from ..checkpoints import export_model

    out = export_model(args.run, args.model, overwrite=args.overwrite, fp16=args.fp16)
    print(f"exported {args.run} -> {out}")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from ..modelcard import write_card

    notes = args.notes.read_text() if args.notes else ""
    path = write_card(
        args.model_dir, args.run, args.command, notes=notes, data=args.data, hardware=args.hardware
    )
    print(f"wrote {path}")
    return 0


def _cmd_tta(args: argparse.Namespace) -> int:
    from ..evaluation import compare_tta

    report = compare_tta(args.model, args.data, args.split, args.out, args.device, record_history=True)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out / 'tta_report.csv'}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from ..datasets.glas import release as glas_release

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
