"""Mirror the image's borders before segmenting (the U-Net paper's overlap-tile extrapolation), scored on `val`.

    GLANDSEG_DATA=<GlaS folder> .venv/bin/python -m experiments.border_pad MODEL OUT [--margins 0 32 64 128]

Both shipped models miss glands cut by the image edge more than any others (on `val`: 5 of the U-Net's 6 and 8
of the Mask R-CNN's 10 outright misses touch the border). A gland cut by the edge lacks the context a whole one
has; mirroring the image by ``margin`` pixels on each side gives it a mirrored half. For each margin the script
pads each `val` image (``numpy.pad``, ``reflect``), segments it, crops the label map back, drops objects below
the model's ``min_area`` that the crop left, and scores it. It writes ``OUT/search.json`` (pooled figures per
margin) and a scored folder ``OUT/margin-<m>`` per margin (``per_image.csv``, ``predictions/``) for
``experiments.decide``: ``python -m experiments.decide OUT/margin-0 OUT/margin-64``.

The Mask R-CNN's images go through :func:`glandseg_core.segmenters.native.maskrcnn_instances`, which keeps the
training scale whatever the padded size (torchvision's own resize would shrink a padded image to 522 x 775); an
image of another size is first resized by the factor torchvision gives it, so every margin sees the same scale.
Margin 0 goes through the same path, so it is the reference of the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glandseg_core.api import Segmenter, load_segmenter
from glandseg_core.datasets import as_dataset
from glandseg_core.imaging.io import write_label_png
from glandseg_core.metrics import ImageScorer, pool_scores
from glandseg_core.segmenters.native import maskrcnn_instances
from glandseg_core.segmenters.scale import at_model_scale
from glandseg_core.segmenters.tiling import MASKRCNN_TILE
from glandseg_core.segmenters.unet import number_kept
from glandseg_core.transforms import _BACKGROUND_RGB

MARGINS = (0, 32, 64, 128)


def _torchvision_factor(segmenter: Segmenter, shape: tuple[int, ...]) -> float:
    """The factor torchvision's transform resizes an image of ``shape`` by, over the training images' one."""
    p = segmenter.cfg.params
    own = min(p.min_size / min(shape), p.max_size / max(shape))
    train = min(p.min_size / MASKRCNN_TILE[0], p.max_size / MASKRCNN_TILE[1])
    return own / train


def mostly_inside(full: np.ndarray, crop: np.ndarray, min_inside: float) -> np.ndarray:
    """``crop`` without the objects of ``full`` (the padded label map it was cut from) that have less than
    ``min_inside`` of their pixels in the crop: the detections of a mirrored gland rather than of the image's."""
    if min_inside <= 0:
        return crop
    total = np.bincount(full.ravel())
    inside = np.bincount(crop.ravel(), minlength=total.size)
    mirror = inside < min_inside * total
    mirror[0] = False
    return np.where(mirror[crop], 0, crop).astype(np.int32)


def padded(image: np.ndarray, m: int, mode: str) -> np.ndarray:
    """``image`` with ``m`` pixels on each side: mirrored (``reflect``), or of the flat colour the training
    augmentation fills the outside of an image with (``constant``, ``transforms._BACKGROUND_RGB``)."""
    if not m:
        return image
    if mode == "constant":
        out = np.empty((image.shape[0] + 2 * m, image.shape[1] + 2 * m, 3), np.uint8)
        out[:] = np.asarray(_BACKGROUND_RGB, np.uint8)
        out[m:-m, m:-m] = image
        return out
    return np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")


def padded_labels(
    segmenter: Segmenter, image: np.ndarray, margin: int, min_inside: float = 0.0, mode: str = "reflect"
) -> np.ndarray:
    """int32[H, W] label map of ``image`` segmented with ``margin`` pixels on each side (:func:`padded`), cropped
    back; objects with less than ``min_inside`` of their pixels inside the image are dropped
    (:func:`mostly_inside`), then those under the model's ``min_area`` (the crop may leave slivers)."""
    maskrcnn = segmenter.kind == "maskrcnn"
    factor = _torchvision_factor(segmenter, image.shape[:2]) if maskrcnn else 1.0
    m = round(margin * factor)

    def segment(work: np.ndarray) -> np.ndarray:
        big = padded(work, m, mode)
        if maskrcnn:
            full = segmenter.labels(
                dataclasses.replace(maskrcnn_instances(segmenter, big), shape=big.shape[:2])
            )
        else:
            full = segmenter.labels(segmenter.raw(big))
        return mostly_inside(full, full[m : m + work.shape[0], m : m + work.shape[1]], min_inside)

    # the product's resampling to a pixel size and back (factor model pixels per image pixel)
    data_mpp = float(segmenter.cfg.data_mpp)
    labels = at_model_scale(segment, image, factor * data_mpp, data_mpp)
    return number_kept(labels, int(getattr(segmenter.post, "min_area", 0)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m experiments.border_pad", description=__doc__.split("\n")[0]
    )
    p.add_argument("model", help="a model folder (trained_models/unet, trained_models/maskrcnn)")
    p.add_argument("out")
    p.add_argument("--margins", type=int, nargs="+", default=list(MARGINS))
    p.add_argument("--mode", choices=("reflect", "constant"), default="reflect")
    p.add_argument("--min-inside", type=float, default=0.0, help="drop objects with less of them inside")
    p.add_argument("--data", default=None, help="data folder (default: $GLANDSEG_DATA)")
    args = p.parse_args(argv)
    segmenter = load_segmenter(args.model, engine="torch")
    items = as_dataset(args.data).items(["val"])
    pairs = [item.load_annotated() for item in items]
    out = Path(args.out)
    report: dict[str, Any] = {
        "model": args.model,
        "min_inside": args.min_inside,
        "mode": args.mode,
        "margins": {},
    }
    for margin in args.margins:
        folder = out / f"margin-{margin}"
        (folder / "predictions").mkdir(parents=True, exist_ok=True)
        rows, scores = [], []
        for item, (image, gt) in zip(items, pairs, strict=True):
            labels = padded_labels(segmenter, image, margin, args.min_inside, args.mode)
            write_label_png(folder / "predictions" / f"{item.name}_labels.png", labels)
            s = ImageScorer(gt)(labels)
            scores.append(s)
            rows.append({"image": item.name, "split": "val", **dataclasses.asdict(s)})
        pd.DataFrame(rows).to_csv(folder / "per_image.csv", index=False)
        pooled = pool_scores(scores)
        report["margins"][str(margin)] = {
            "val_f1": pooled.pooled_f1,
            "val_object_dice": pooled.pooled_object_dice,
            "val_object_hausdorff": pooled.pooled_object_hausdorff,
        }
        print(f"margin {margin}: {report['margins'][str(margin)]}", flush=True)
    (out / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
