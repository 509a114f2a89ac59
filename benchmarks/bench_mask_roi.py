"""What a finer Mask R-CNN mask head costs on the CPU: the mask RoIAlign at 14 × 14 (torchvision's, 28 × 28 masks)
against 28 × 28 (``maskrcnn_mask_roi_size=28``, 56 × 56 masks), forward and forward + backward.

    .venv/bin/python -m benchmarks.bench_mask_roi [--threads 2] [--rois 40] [--repeats 3]

Inputs are shaped as in a training step of `runs/maskrcnn-crops*` (4 crops of 261 px at the model's scale, FPN
levels of 256 channels at strides 4–32, ``--rois`` boxes per crop of 10–70 px), random, seed 0. The 14 × 14 row
is the reference; the ratio is what docs/EXPERIMENTS.md (row 21) quotes.
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict

import torch
from torchvision.ops import MultiScaleRoIAlign

LEVELS = ("0", "1", "2", "3")
CROP = 261


def _inputs(rois: int) -> tuple[OrderedDict[str, torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    sides = [-(-CROP // s) for s in (4, 8, 16, 32)]
    feats = OrderedDict(
        (k, torch.randn(4, 256, s, s, generator=g, requires_grad=True))
        for k, s in zip(LEVELS, sides, strict=True)
    )
    boxes = []
    for _ in range(4):
        xy = torch.rand(rois, 2, generator=g) * (CROP - 70)
        boxes.append(torch.cat([xy, xy + torch.rand(rois, 2, generator=g) * 60 + 10], 1))
    return feats, boxes


def measure(side: int, rois: int, repeats: int) -> tuple[float, float]:
    """(forward, forward + backward) seconds, mean of ``repeats``, for a RoIAlign of output ``side``."""
    feats, boxes = _inputs(rois)
    pool = MultiScaleRoIAlign(list(LEVELS), output_size=side, sampling_ratio=2)
    sizes = [(CROP, CROP)] * 4
    with torch.no_grad():
        pool(feats, boxes, sizes)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            pool(feats, boxes, sizes)
        forward = (time.perf_counter() - t) / repeats
    t = time.perf_counter()
    for _ in range(repeats):
        pool(feats, boxes, sizes).sum().backward()
    return forward, (time.perf_counter() - t) / repeats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_mask_roi", description=__doc__.split("\n")[0]
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rois", type=int, default=40, help="boxes per crop (4 crops)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = measure(14, args.rois, args.repeats)
    print(
        f"{4 * args.rois} RoIs of 256 channels, {args.threads} thread{'s' if args.threads != 1 else ''}"
    )
    for side in (14, 28):
        f, fb = ref if side == 14 else measure(side, args.rois, args.repeats)
        print(f"RoIAlign {side}x{side}: forward {f:.3f} s ({f / ref[0]:.2f}x), "
              f"forward+backward {fb:.3f} s ({fb / ref[1]:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
