"""Compare two variants on `val` under the keep/drop rule of docs/EXPERIMENTS.md.

    GLANDSEG_DATA=<GlaS folder> .venv/bin/python -m experiments.decide A B [--tta-a] [--tta-b] [--split val]

A and B are model folders (``trained_models/unet``), training run folders (``runs/unet-sep``, its ``best.pt`` with
its tuned ``postprocess.json``), fusion folders (a ``fusion.json``, loaded by
:func:`experiments.fusion.load_fusion`) or folders scored already on the split (``per_image.csv`` and
``predictions/``, e.g. ``experiments.marker_search``'s). Each model is scored once on the split (predictions
and ``per_image.csv`` cached under ``cache/decide/<variant>``, git-ignored; a rerun reuses them unless
``--fresh``), then the script prints the pooled F1 of each, the paired bootstrap 95% interval of the difference
B − A, the verdict, the per-image mean object Dice and Hausdorff differences, and the mechanism counts (merged,
missed, partial glands) of each.
Only `val` (or another non-test split) may be compared here: Test A / Test B are refused.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import cast

import pandas as pd

from experiments.fusion import FUSION_FILE, load_fusion
from glandseg_core.api import Segmenter, load_segmenter
from glandseg_core.datasets import as_dataset
from glandseg_core.evaluation import evaluate
from glandseg_core.evaluation.decide import pooled_f1_difference
from glandseg_core.evaluation.failures import Failures, total_failures
from glandseg_core.imaging.io import read_label_map
from glandseg_core.stats import paired_comparison

TEST_SPLITS = ("testA", "testB", "test")


def _scored(model: str, tta: bool, split: str, data: str | None, fresh: bool) -> Path:
    if is_scored_folder(Path(model)):
        return _checked(Path(model), tta, split)
    key = hashlib.sha1(f"{Path(model).resolve()}|{tta}|{split}|{data}".encode()).hexdigest()[:10]
    out = Path("cache/decide") / f"{Path(model).name}{'-tta' if tta else ''}-{split}-{key}"
    if fresh or not (out / "per_image.csv").is_file():
        segmenter = _load(model, tta)
        evaluate(data, [split], out, segmenter=segmenter, save_predictions=True)
    return out


def is_scored_folder(folder: Path) -> bool:
    """A folder scored already (``per_image.csv`` and ``predictions/``, as ``glandseg evaluate`` or
    ``experiments.marker_search`` write them) rather than a model (a model folder may hold its test scores, but it
    has a ``config.json``; a fusion folder has a ``fusion.json``)."""
    return (
        (folder / "per_image.csv").is_file()
        and (folder / "predictions").is_dir()
        and not (folder / "config.json").exists()
        and not (folder / FUSION_FILE).exists()
    )


def _checked(folder: Path, tta: bool, split: str) -> Path:
    """``folder`` if it holds exactly ``split``'s images (TTA cannot be added to scores already made)."""
    if tta:
        raise SystemExit(f"{folder} is scored already: --tta does not apply to it")
    splits = set(pd.read_csv(folder / "per_image.csv")["split"])
    if splits != {split}:
        raise SystemExit(f"{folder} holds {', '.join(sorted(map(str, splits)))}, not {split}")
    return folder


def _load(model: str, tta: bool) -> Segmenter:
    if (Path(model) / FUSION_FILE).is_file():
        # a FusionSegmenter segments as a Segmenter does; its ``tiling`` is read-only (both members hold one)
        return cast(Segmenter, load_fusion(model, tta=tta))
    return load_segmenter(model, tta=tta)


def _failures(out: Path, split: str, data: str | None) -> Failures:
    pairs = []
    for item in as_dataset(data).items([split]):
        _, gt = item.load_annotated()
        pred = read_label_map(out / "predictions" / f"{item.name}_labels.png", shape=gt.shape)
        pairs.append((pred, gt))
    return total_failures(pairs)


def _line(name: str, f: Failures) -> str:
    return (
        f"{name}: FN {f.missed_total} of {f.n_gt} glands = merged {f.merged} + missed {f.missed} "
        f"(at the border {f.missed_at_border}, small {f.missed_small}) + partial {f.partial}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.decide", description=__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tta-a", action="store_true")
    p.add_argument("--tta-b", action="store_true")
    p.add_argument("--split", default="val")
    p.add_argument("--data", default=None, help="data folder (default: $GLANDSEG_DATA)")
    p.add_argument("--fresh", action="store_true", help="score again instead of reusing cache/decide")
    args = p.parse_args(argv)
    if args.split in TEST_SPLITS:
        p.error(f"{args.split} is a test split: variants are chosen on val only")
    outs = [
        _scored(m, t, args.split, args.data, args.fresh)
        for m, t in ((args.a, args.tta_a), (args.b, args.tta_b))
    ]
    ta, tb = (pd.read_csv(o / "per_image.csv") for o in outs)
    d = pooled_f1_difference(ta, tb)
    print(f"{args.split}, {d.n} images. A = {args.a}{' +TTA' if args.tta_a else ''}; "
          f"B = {args.b}{' +TTA' if args.tta_b else ''}")  # fmt: skip
    print(f"pooled F1: A {d.f1_a:.3f}, B {d.f1_b:.3f}; B - A {d.diff:+.3f}, "
          f"95% CI [{d.ci_low:+.3f}, {d.ci_high:+.3f}], B higher in {d.share_b_better:.0%} of resamples: "
          f"{d.verdict}")  # fmt: skip
    for col in ("object_dice", "object_hausdorff"):
        r = paired_comparison(ta.set_index("image")[col], tb.set_index("image")[col])
        print(
            f"per-image mean {col}: B - A {r.mean_diff:+.3f}, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        )
    for name, o in zip(("A", "B"), outs, strict=True):
        print(_line(name, _failures(o, args.split, args.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
