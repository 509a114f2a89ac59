"""The dashboard's peak memory for the largest image it accepts (issue #15, item 4).

Builds an H&E mosaic (tiles of ``samples/testA_1.png``) of exactly the largest size the Compare page accepts under
a memory budget, offers it as a GlaS image, runs the Compare page on it (Streamlit's AppTest, in this process,
so this process stands for the dashboard server) and reports:

- the dashboard process: resident memory before, its peak, and after the page finished;
- the segmentation workers (child processes): the largest peak, and whether any is left running;
- the worker's own measurements for each model (peak, seconds).

Usage: ``python benchmarks/bench_dashboard_memory.py [--budget-mb 2048] [--models unet maskrcnn]``
(``--budget-mb 0`` uses the machine's budget: ``GLANDSEG_MEMORY_FRACTION`` of the available memory).
Prints one JSON object; see benchmarks/README.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from glandseg_core.io import read_image

REPO = Path(__file__).resolve().parents[1]


def mosaic(pixels: int, aspect: float = 11000 / 9000) -> np.ndarray:
    """uint8[h, w, 3] tiles of a bundled GlaS sample with h * w <= ``pixels``."""
    tile = read_image(REPO / "samples" / "testA_1.png")
    h = int(math.sqrt(pixels / aspect))
    w = int(pixels // h)
    reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:h, :w])


def prepare(tmp: Path, args: argparse.Namespace) -> tuple[int, tuple[int, int]]:
    """Environment, models root and data folder for the page; returns (page limit, image shape)."""
    if args.budget_mb:
        os.environ["GLANDSEG_MEMORY_BUDGET_MB"] = str(args.budget_mb)
    from ui import pickers, settings

    limit = pickers.page_limit(list(settings.ROLES), tta=False)
    models = tmp / "models"
    models.mkdir()
    for name in args.models:
        (models / name).symlink_to((REPO / "trained_models" / name).resolve())
    data = tmp / "glas"
    data.mkdir()
    image = mosaic(limit)
    Image.fromarray(image).save(data / "testA_1.png")
    Image.fromarray(np.zeros(image.shape[:2], np.uint8)).save(data / "testA_1_anno.png")
    os.environ.update(GLANDSEG_MODELS=str(models), GLANDSEG_DATA=str(data))
    return limit, image.shape[:2]


def run_page() -> dict[str, object]:
    """Run the Compare page on the GlaS image; the figures of this process and its workers."""
    from streamlit.testing.v1 import AppTest

    me = psutil.Process()
    before = me.memory_info().rss
    t0 = time.perf_counter()
    at = AppTest.from_file(str(REPO / "pages" / "compare.py"), default_timeout=24 * 3600)
    at.run()
    at.sidebar.radio(key="cmp_kind").set_value("GlaS dataset").run()
    at.sidebar.selectbox(key="cmp_gt_glas:testA_1").set_value("none").run()
    seconds = time.perf_counter() - t0
    errors = [str(e.value) for e in at.error] + [str(e.value) for e in at.exception]
    workers = [p for p in me.children(recursive=True) if "ui.worker" in " ".join(p.cmdline())]
    return {
        "page_seconds": round(seconds, 1),
        "glands": [m.value for m in at.metric if m.label == "Glands"],
        "inference_s": [m.value for m in at.metric if m.label == "Inference"],
        "errors": errors,
        "dashboard_rss_before_mib": round(before / 2**20),
        "dashboard_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dashboard_rss_after_mib": round(me.memory_info().rss / 2**20),
        "worker_peak_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "workers_left": len(workers),  # the one spare, waiting with its imports done
        "workers_left_rss_mib": round(sum(p.memory_info().rss for p in workers) / 2**20),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-mb", type=float, default=2048, help="fixed budget (0: the machine's)")
    ap.add_argument("--models", nargs="+", default=["unet", "maskrcnn"], choices=["unet", "maskrcnn"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="glandseg-bench-") as tmp:
        limit, shape = prepare(Path(tmp), args)
        result = {"budget_mb": args.budget_mb, "page_limit_px": limit, "image": f"{shape[1]}x{shape[0]}",
                  "megapixels": round(shape[0] * shape[1] / 1e6, 2), "models": args.models, **run_page()}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
