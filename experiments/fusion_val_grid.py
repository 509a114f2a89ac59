"""Reproduce docs/EXPERIMENTS.md row 14: the fusion's thresholds searched on `val` from cached raw outputs.

    GLANDSEG_DATA=<GlaS folder> .venv/bin/python -m experiments.fusion_val_grid [CACHE_DIR]

Runs both shipped models once per `val` image (U-Net probabilities; Mask R-CNN instances scoring >= 0.1), caches
them in CACHE_DIR (default cache/fusion in the repository, git-ignored), then scores every setting with the
official metrics and prints one JSON line per setting (the committed results: docs/cards/fusion/val_grid.jsonl).
Never touches Test A / Test B.
"""

from __future__ import annotations

import itertools
import json
import pickle
import sys
from dataclasses import asdict, replace
from pathlib import Path

from experiments.fusion import FusionPost, fuse
from glandseg_core.datasets.glas import find_items, load_item
from glandseg_core.metrics import pool_scores, score_image
from glandseg_core.segmenters import load_segmenter, make_segmenter
from glandseg_core.thresholds import UNetPost


def cached_outputs(cache: Path) -> list[dict]:
    cache.mkdir(parents=True, exist_ok=True)
    unet, mr = load_segmenter("trained_models/unet"), load_segmenter("trained_models/maskrcnn")
    mr.model.roi_heads.score_thresh = 0.05
    mr = make_segmenter(mr.model, mr.cfg, replace(mr.post, score_thresh=0.1), mr.device)
    out = []
    for item in find_items(None, ["val"]):
        f = cache / f"{item.name}.pkl"
        if not f.exists():
            image, gt = load_item(item)
            f.write_bytes(pickle.dumps({"gt": gt, "prob": unet.raw(image), "inst": mr.raw(image)}))
        out.append(pickle.loads(f.read_bytes()))
    return out


def main() -> None:
    items = cached_outputs(Path(sys.argv[1] if len(sys.argv) > 1 else "cache/fusion"))
    base = UNetPost(0.4, 0.3, 20, 600, True)  # the shipped U-Net's tuned thresholds
    grid = [
        (base, FusionPost(split_score=s, piece_frac=f, boundary=b))
        for s, f, b in itertools.product(
            (0.5, 0.7, 0.9), (0.0, 0.15, 0.3), (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
        )
    ]
    grid += [
        (UNetPost(fg, ct, 20, 600, True), FusionPost(split_score=s, boundary=b))
        for fg, ct in ((0.4, 0.45), (0.5, 0.3))
        for s in (0.5, 0.8)
        for b in (0.2, 0.3, 0.4)
    ]
    grid += [(base, FusionPost(boundary=b, add=True, add_score=0.8)) for b in (0.0, 0.1, 0.2, 0.3, 0.4)]
    for up, post in grid:
        s = pool_scores(
            [score_image(fuse(d["prob"].astype("float32"), d["inst"], up, post), d["gt"]) for d in items]
        )
        figures = {
            "f1": s.pooled_f1,
            "dice": s.pooled_object_dice,
            "haus": s.pooled_object_hausdorff,
            "tp": s.tp,
            "fp": s.fp,
            "fn": s.fn,
        }
        print(json.dumps({"unet": asdict(up), "post": asdict(post), **figures}), flush=True)


if __name__ == "__main__":
    main()
