"""The dashboard's peak memory for the largest image it accepts (issue #15, item 4).

Builds an H&E mosaic (tiles of ``samples/testA_1.png``) of exactly the largest size the Compare page accepts under
a memory budget (:func:`glandseg_dashboard.pickers.page_limit` with TTA, as the page asks), then does in this process what the
Compare page does for it: both models segment it in their warm worker processes (:func:`glandseg_dashboard.pool.run_job`), and
the overlays, the disagreement map and the downloads (label map PNG, overlay PNG, gland CSV, GeoJSON) are made
here. This process stands for the dashboard server; it reports:

- the dashboard process: resident memory before, its peak, and after the work (the image and results dropped);
- the segmentation workers (child processes, one per model, kept warm): what they hold after the work, and
  their largest peak (read once they are shut down, as the server does at its exit);
- each model's time in its worker.

Usage: ``python benchmarks/bench_dashboard_memory.py [--budget-mb 2048] [--models unet maskrcnn]``
(``--budget-mb 0`` uses the machine's budget: ``GLANDSEG_MEMORY_FRACTION`` of the available memory).
Prints one JSON object; see benchmarks/README.md for the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import time
from pathlib import Path

import numpy as np
import psutil

from glandseg_core.imaging.io import read_image

REPO = Path(__file__).resolve().parents[1]


def mosaic(pixels: int, aspect: float = 11000 / 9000) -> np.ndarray:
    """uint8[h, w, 3] tiles of a bundled GlaS sample with h * w <= ``pixels``."""
    tile = read_image(REPO / "samples" / "testA_1.png")
    h = int(math.sqrt(pixels / aspect))
    w = int(pixels // h)
    reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:h, :w])


def largest_image(args: argparse.Namespace) -> tuple[int, np.ndarray]:
    """(page limit in pixels, the mosaic of that size) under the budget of ``args``."""
    if args.budget_mb:
        os.environ["GLANDSEG_MEMORY_BUDGET_MB"] = str(args.budget_mb)
    from glandseg_dashboard import pickers, settings

    limit = pickers.page_limit(list(settings.ROLES), tta=True)  # as the Compare page asks
    return limit, mosaic(limit)


def dashboard_work(image: np.ndarray, models: list[str]) -> dict[str, object]:
    """Both segmentations in workers, then the Compare page's drawings and downloads in this process."""
    from glandseg_core.imaging.io import label_png_bytes, png_bytes
    from glandseg_core.outputs import export
    from glandseg_dashboard import pool

    labels, seconds = {}, {}
    workers = pool.Pool()
    for name in models:
        result = pool.run_job(
            workers, str(REPO / "trained_models" / name), image, False, lambda *progress: None
        )
        labels[name], seconds[name] = result.labels, round(result.seconds, 1)
    for lab in labels.values():
        view = export.overlay(image, lab, alpha=0.4, outlines=True)
        png_bytes(view), label_png_bytes(lab)
        export.gland_table(lab).to_csv(index=False), json.dumps(export.to_geojson(lab))
    if len(labels) == 2:
        png_bytes(export.disagreement_map(image, *labels.values()))
    kept = [psutil.Process(pid).memory_info().rss for pid in workers.pids().values()]
    workers.shutdown()  # their peak (ru_maxrss of the children) is known once they are reaped
    return {
        "glands": {k: int(np.count_nonzero(np.unique(v))) for k, v in labels.items()},
        "model_s": seconds,
        "workers_kept": len(kept),
        "workers_kept_rss_mib": round(sum(kept) / 2**20),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-mb", type=float, default=2048, help="fixed budget (0: the machine's)")
    ap.add_argument("--models", nargs="+", default=["unet", "maskrcnn"], choices=["unet", "maskrcnn"])
    args = ap.parse_args()
    me = psutil.Process()
    before = me.memory_info().rss
    limit, image = largest_image(args)
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    work = dashboard_work(image, args.models)
    wall = time.perf_counter() - t0
    del image
    gc.collect()
    result = {
        "budget_mb": args.budget_mb, "page_limit_px": limit, "image": f"{w}x{h}", "megapixels": round(h * w / 1e6, 2),
        **work, "wall_s": round(wall, 1),
        "dashboard_rss_before_mib": round(before / 2**20),
        "dashboard_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dashboard_rss_after_mib": round(me.memory_info().rss / 2**20),
        "worker_peak_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
