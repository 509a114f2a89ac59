"""Test-time augmentation (TTA) for Mask R-CNN, and a with/without-TTA evaluation report.

:func:`maskrcnn_tta` runs the model on 8 views of the image (identity, horizontal flip, and both rotated by 90,
180 and 270 degrees; or the 4 flips), maps every detected mask back to the image, and groups the detections
of the views into glands by mask IoU. Each gland's mask is the mean of its views' masks (views that missed it
count as zeros, so a gland found by few views fades below the mask threshold) and its score is the mean score
of the views that found it. The U-Net's TTA (mean of the 8 views' probabilities) lives in ``infer.py``.

The final with/without-TTA figures are measured on trained models with::

    python -m glandseg_core evaluate --model trained_models/X --split val testA testB --tta --out ...

or, for both runs and a side-by-side table, ``python -m glandseg_core.tta --model trained_models/X --out DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from .infer import _TTA, Run, load_run, maskrcnn_outputs
from .postprocess import MaskRCNNPost
from .tiling import mask_boxes

log = logging.getLogger(__name__)

VIEWS_8 = tuple(_TTA)  # (horizontal flip first?, then k counter-clockwise 90-degree rotations)
VIEWS_4 = (
    (False, 0),
    (True, 0),
    (False, 2),
    (True, 2),
)  # identity, h-flip, 180 degrees (= both flips), v-flip
MATCH_IOU = 0.5  # detections of two views are the same gland above this mask IoU


def view_image(image: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """The augmented view: horizontal flip (if ``flip``), then ``k`` counter-clockwise quarter turns."""
    return np.ascontiguousarray(np.rot90(image[:, ::-1] if flip else image, k))


def unview(
    box: np.ndarray, crop: np.ndarray, flip: bool, k: int, view_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Map a box-cropped mask from view coordinates back to the image's (the inverse of :func:`view_image`).

    How it works: one clockwise quarter turn of an (h, w) array moves pixel (r, c) to (c, h - 1 - r), so box
    rows [y0, y1) and columns [x0, x1) become rows [x0, x1) and columns [h - y1, h - y0); a horizontal flip of
    width w maps columns [x0, x1) to [w - x1, w - x0).

    Args:
        box: (y0, x0, y1, x1), end-exclusive, in the view. crop: the mask inside the box.
        view_shape: (h, w) of the view.

    Returns:
        (box, crop) in image coordinates.
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = view_shape
    for _ in range(k % 4):
        y0, x0, y1, x1 = x0, h - y1, x1, h - y0
        h, w = w, h
    crop = np.rot90(crop, -k)
    if flip:
        x0, x1 = w - x1, w - x0
        crop = crop[:, ::-1]
    return np.array([y0, x0, y1, x1], np.int64), np.ascontiguousarray(crop)


def _detections(
    run: Run, image: np.ndarray, views: Sequence[tuple[bool, int]], mask_thresh: float
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Every view's detections with a mask above ``mask_thresh``: scores float32[N], boxes int64[N, 4] and
    float mask crops in image coordinates, and the index of the view of each."""
    scores, boxes, crops, view_ids = [], [], [], []
    for v, (flip, k) in enumerate(views):
        s, m = maskrcnn_outputs(run, view_image(image, flip, k))
        keep = np.flatnonzero(m.max(axis=(1, 2), initial=0.0) > mask_thresh)
        if len(keep):
            m = m[keep]
            for b, mask in zip(mask_boxes(m > 0), m):  # pasted masks are exactly 0 outside their box
                box, crop = unview(b, mask[b[0] : b[2], b[1] : b[3]], flip, k, m.shape[1:])
                boxes.append(box)
                crops.append(crop)
            scores.append(s[keep])
            view_ids.append(np.full(len(keep), v))
        del s, m
    if not crops:
        return np.zeros(0, np.float32), np.zeros((0, 4), np.int64), [], np.zeros(0, np.int64)
    return np.concatenate(scores).astype(np.float32), np.stack(boxes), crops, np.concatenate(view_ids)


def mask_iou(boxes: np.ndarray, masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pairwise IoU of N box-cropped binary masks in an image of ``shape``.

    How it works: the masks become the rows of a sparse N x (H*W) 0/1 matrix B; ``B @ B.T`` holds every pairwise
    intersection (its diagonal the areas) at a cost proportional to the overlapping pixels, not N^2 * H * W.

    Returns:
        float64[N, N].
    """
    n, w = len(masks), shape[1]
    if n == 0:
        return np.zeros((0, 0))
    rows, cols = [], []
    for i, (b, m) in enumerate(zip(boxes, masks)):
        yy, xx = np.nonzero(m)
        rows.append(np.full(yy.size, i, np.int64))
        cols.append((yy + b[0]) * w + (xx + b[1]))
    r, c = np.concatenate(rows), np.concatenate(cols)
    mat = sparse.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n, shape[0] * w))
    inter = (mat @ mat.T).toarray().astype(np.float64)
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def cluster(
    scores: np.ndarray, view_ids: np.ndarray, iou: np.ndarray, n_views: int, thresh: float = MATCH_IOU
) -> np.ndarray:
    """Group detections into glands: by decreasing score, each joins the cluster whose seed (its best-scoring
    member) it overlaps most with IoU > ``thresh``, unless that cluster already holds a detection of its view.

    Returns:
        int64[N] cluster index of each detection (0..C-1, in order of the seeds' scores).
    """
    out = np.full(len(scores), -1, np.int64)
    seeds: list[int] = []
    has_view = np.zeros((0, n_views), bool)
    for d in np.argsort(-scores, kind="stable"):
        if seeds:
            ious = iou[d, seeds]
            ok = (ious > thresh) & ~has_view[:, view_ids[d]]
            if ok.any():
                c = int(np.argmax(np.where(ok, ious, -1.0)))
                out[d] = c
                has_view[c, view_ids[d]] = True
                continue
        out[d] = len(seeds)
        seeds.append(int(d))
        has_view = np.vstack([has_view, np.eye(1, n_views, int(view_ids[d]), dtype=bool)])
    return out


def maskrcnn_tta(
    run: Run,
    image: np.ndarray,
    views: Sequence[tuple[bool, int]] = VIEWS_8,
    min_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask R-CNN detections merged over flipped and rotated views of the image.

    Args:
        run: a loaded Mask R-CNN (:func:`infer.load_run`).
        image: uint8[H, W, 3] RGB.
        views: (flip, quarter turns) pairs, :data:`VIEWS_8` (default) or :data:`VIEWS_4`.
        min_score: glands scoring below this are left out (default ``run.post.score_thresh``: painting would
            skip them anyway); pass 0 to keep every gland, e.g. to tune thresholds.

    Returns:
        scores float32[N] (mean over the views that found the gland, decreasing), masks float32[N, H, W]
        (mean over all views, missed views counting as 0). Glands whose mean mask never exceeds the mask
        threshold (``run.post.mask_thresh``) are left out. A run from :func:`infer.load_run` reports only
        detections scoring at least ``run.post.score_thresh``, so a view that scores a gland lower counts as
        having missed it.
    """
    post = run.post if isinstance(run.post, MaskRCNNPost) else MaskRCNNPost()
    min_score = post.score_thresh if min_score is None else min_score
    h, w = image.shape[:2]
    scores, boxes, crops, view_ids = _detections(run, image, views, post.mask_thresh)
    if not crops:
        return np.zeros(0, np.float32), np.zeros((0, h, w), np.float32)
    iou = mask_iou(boxes, [c > post.mask_thresh for c in crops], (h, w))
    labels = cluster(scores, view_ids, iou, len(views))
    n = int(labels.max()) + 1
    mean_score = (
        np.bincount(labels, weights=scores, minlength=n) / np.bincount(labels, minlength=n)
    ).astype(np.float32)
    keep = [c for c in np.argsort(-mean_score, kind="stable") if mean_score[c] >= min_score]
    masks = np.zeros((len(keep), h, w), np.float32)
    for out_i, c in enumerate(keep):
        for d in np.flatnonzero(labels == c):
            y0, x0, y1, x1 = boxes[d]
            masks[out_i, y0:y1, x0:x1] += crops[d]
    masks /= len(views)
    visible = masks.max(axis=(1, 2), initial=0.0) > post.mask_thresh
    return mean_score[keep][visible], masks[visible]


def tta_report(
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None,
    splits: Sequence[str],
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Evaluate a model folder without and with TTA on ``splits``, side by side.

    Args:
        model_dir: e.g. ``trained_models/unet``. data: the GlaS folder (else ``$GLANDSEG_DATA``).
        splits: e.g. ``["val", "testA", "testB"]``.
        out_dir: where ``plain/`` and ``tta/`` (each ``per_image.csv``, ``summary.json``) and ``tta_report.csv``
            go; a temporary folder when None.
        device: ``cpu``, ``cuda`` or None for automatic.

    Returns:
        One row per split (and ``all``): pooled F1, object Dice and object Hausdorff without and with TTA, their
        differences (``d_*``; higher is better for F1 and Dice, lower for Hausdorff) and seconds per image.
    """
    from .evaluate import evaluate

    run = load_run(model_dir, device=device)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="glandseg-tta-"))
    results = {}
    for name, flag in (("plain", False), ("tta", True)):
        t0 = time.perf_counter()
        table, summary = evaluate(data, list(splits), out / name, run=run, tta=flag)
        log.info("%s: %d images in %.1f s", name, len(table), time.perf_counter() - t0)
        results[name] = (table, summary)
    rows = []
    for split, plain in results["plain"][1].items():
        tta = results["tta"][1][split]
        row: dict[str, object] = {"split": split, "n_images": plain["n_images"]}
        for key, short in (
            ("pooled_f1", "f1"),
            ("pooled_object_dice", "object_dice"),
            ("pooled_object_hausdorff", "object_hausdorff"),
        ):
            row[short], row[f"{short}_tta"], row[f"d_{short}"] = (
                plain[key],
                tta[key],
                tta[key] - plain[key],
            )
        for name in ("plain", "tta"):
            t = results[name][0]
            sel = t if split == "all" else t[t["split"] == split]
            row[f"sec_per_image_{name}"] = float(sel["seconds"].mean())
        rows.append(row)
    report = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    report.to_csv(out / "tta_report.csv", index=False, float_format="%.4f")
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m glandseg_core.tta --model DIR [--data DIR] [--split ...] --out DIR``: the TTA report."""
    p = argparse.ArgumentParser(
        prog="python -m glandseg_core.tta", description="Evaluate a model without and with TTA."
    )
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data")
    p.add_argument("--split", nargs="+", default=["val", "testA", "testB"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = tta_report(args.model, args.data, args.split, args.out, args.device)
    print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out / 'tta_report.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
