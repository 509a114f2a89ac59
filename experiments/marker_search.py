"""Finer markers for the U-Net separation head (row 19's next step), scored on `val` only.

    GLANDSEG_DATA=<GlaS folder> .venv/bin/python -m experiments.marker_search runs/unet-sep OUT

Row 19's tuned ``marker_dist`` (0.1) sat at the lowest point of the kind's grid. This script scores two seed
families over the run's ``best.pt`` on `val`, the probabilities computed once:

``dist``
    the product's markers (distance > ``marker_dist`` inside the mask), ``marker_dist`` 0.02-0.1 and the
    grid's other settings;
``dist+contour``
    the distance cores with the contour band cut out too (distance > ``marker_dist`` and contour probability
    < ``contour_thresh``), the "markers from the distance and the contour together" of row 19.

It writes ``OUT/search.json`` (every point's pooled figures, the best of each family by the tuning objective,
F1 + object Dice, as the kind's tuning picks) and, for each family's best, a scored folder ``OUT/<family>``
(``per_image.csv``, ``predictions/<name>_labels.png``, ``post.json``), which ``experiments.decide`` compares
with the shipped U-Net under rule 1: ``python -m experiments.decide trained_models/unet OUT/<family>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from glandseg_core.api import load_segmenter
from glandseg_core.datasets import as_dataset
from glandseg_core.imaging.io import write_label_png
from glandseg_core.metrics import ImageScorer, ImageScores
from glandseg_core.segmenters.unet import (
    flood_surface,
    gland_mask,
    grow,
    number_kept,
    probs_to_labels,
    remove_small,
)
from glandseg_core.thresholds import UNetPost
from glandseg_core.train.tune import best_point, point_record

FG = (0.4, 0.5, 0.6)
MARKER_DIST = (0.02, 0.04, 0.06, 0.08, 0.1)
CONTOUR = (0.3, 0.5, 0.7)
MIN_MARKER_AREA = (20, 80)
MIN_AREA = (300, 600)


def dist_contour_labels(prob: np.ndarray, post: UNetPost) -> np.ndarray:
    """int32[H, W]: as ``probs_to_labels`` with the separation head, but seeds also need contour < threshold."""
    mask = gland_mask(prob, post.fg_thresh)
    seeds = mask & (prob[2] > post.marker_dist) & (prob[1] < post.contour_thresh)
    markers = remove_small(ndi.label(seeds)[0].astype(np.int32), post.min_marker_area)
    return number_kept(grow(flood_surface(prob), markers, mask), post.min_area)


FAMILIES: dict[str, tuple[Callable[[np.ndarray, UNetPost], np.ndarray], tuple[str, ...]]] = {
    "dist": (probs_to_labels, ("fg_thresh", "marker_dist", "min_marker_area", "min_area")),
    "dist+contour": (
        dist_contour_labels,
        ("fg_thresh", "marker_dist", "contour_thresh", "min_marker_area", "min_area"),
    ),
}
VALUES = {
    "fg_thresh": FG,
    "marker_dist": MARKER_DIST,
    "contour_thresh": CONTOUR,
    "min_marker_area": MIN_MARKER_AREA,
    "min_area": MIN_AREA,
}


def grid(names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Every combination of ``names``' values, the last varying fastest."""
    for values in itertools.product(*(VALUES[n] for n in names)):
        yield dict(zip(names, values, strict=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.marker_search", description=__doc__.split("\n")[0]
    )
    p.add_argument("run", help="a U-Net run folder trained with unet_separation=true")
    p.add_argument("out")
    p.add_argument("--data", default=None, help="data folder (default: $GLANDSEG_DATA)")
    args = p.parse_args(argv)
    segmenter = load_segmenter(args.run, engine="torch")
    base: UNetPost = segmenter.post
    items = as_dataset(args.data).items(["val"])
    pairs = [item.load_annotated() for item in items]
    probs = [segmenter.raw(image) for image, _ in pairs]
    if probs[0].shape[0] != 3:
        p.error(f"{args.run} has no separation head (its outputs have {probs[0].shape[0]} channels)")
    scorers = [ImageScorer(gt) for _, gt in pairs]
    out = Path(args.out)
    report: dict[str, Any] = {"run": args.run, "base": dataclasses.asdict(base), "families": {}}
    for family, (labels_of, names) in FAMILIES.items():
        score_all = partial(_scores, scorers, probs, labels_of)
        records = [
            {**point, **point_record(score_all, dataclasses.replace(base, **point))}
            for point in grid(names)
        ]
        best = best_point(records)  # the kind's tuning rule: the best objective, ties keep the earlier
        report["families"][family] = {"best": records[best], "points": records}
        print(f"{family}: {len(records)} points; best {records[best]}", flush=True)
        post = dataclasses.replace(base, **{n: records[best][n] for n in names})
        _write_predictions(out / family, items, probs, scorers, labels_of, post)
    (out / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _scores(
    scorers: list[ImageScorer],
    probs: list[np.ndarray],
    labels_of: Callable[[np.ndarray, UNetPost], np.ndarray],
    post: UNetPost,
) -> list[ImageScores]:
    """Each val image's scores with ``post``."""
    return [sc(labels_of(prob, post)) for sc, prob in zip(scorers, probs, strict=True)]


def _write_predictions(
    folder: Path,
    items: list[Any],
    probs: list[np.ndarray],
    scorers: list[ImageScorer],
    labels_of: Callable[[np.ndarray, UNetPost], np.ndarray],
    post: UNetPost,
) -> None:
    """``per_image.csv`` and ``predictions/<name>_labels.png`` of one setting, as ``evaluate`` writes them."""
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    rows = []
    for item, prob, scorer in zip(items, probs, scorers, strict=True):
        labels = labels_of(prob, post)
        write_label_png(folder / "predictions" / f"{item.name}_labels.png", labels)
        s = scorer(labels)
        rows.append({"image": item.name, "split": "val", **dataclasses.asdict(s)})
    pd.DataFrame(rows).to_csv(folder / "per_image.csv", index=False)
    (folder / "post.json").write_text(json.dumps(dataclasses.asdict(post), indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
