"""How long does post-processing tuning take at the end of a run, and is it still the same search?

    .venv/bin/python -m benchmarks.bench_tuning            # both shipped models on GlaS val (~10 min, 2 cores)
    .venv/bin/python -m benchmarks.bench_tuning --models unet --skip-reference   # the new search only

For each shipped model (``trained_models/unet``, ``trained_models/maskrcnn``) on the 15 GlaS ``val`` images at the
model's pixel size (as the trainer loads them), with the kind's tuning segmenter (``tune.base_post``):

* the network pass: one ``segmenter.raw`` per image (the same for both searches, timed once);
* the reference: the straightforward loop the trainer ran before, ``segmenter.labels(raw, post)`` then
  ``metrics.score_image`` for every (grid point, image), measured in the same run;
* the new search (``train.tune.tune`` on the cached raws: shared post-processing stages, one ``ImageScorer`` per
  image, the images split between worker processes, one per CPU).

Both searches must choose the same grid point and report the same figures to the last bit (the script fails
otherwise), and the chosen settings are compared with the shipped ``postprocess.json``. Writes ``--out``
(default benchmarks/results_tuning.txt) and prints the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glandseg_core.checkpoints import model_from_state, read_checkpoint, weights_file
from glandseg_core.config import load_config
from glandseg_core.metrics import pool_scores, score_image
from glandseg_core.segmenters import Segmenter, make_segmenter
from glandseg_core.thresholds import load_post
from glandseg_core.train.setup import load_data
from glandseg_core.train.tune import base_post, best_point, tune

ROOT = Path(__file__).resolve().parents[1]


def reference_tune(
    segmenter: Segmenter, raws: list[Any], gts: list[np.ndarray]
) -> tuple[Any, dict[str, Any]]:
    """The search as it was: every grid point's label maps from ``segmenter.labels`` and ``score_image``."""
    base = segmenter.post
    _, grid = base_post(segmenter.cfg)
    records = []
    for params in grid:
        post = dataclasses.replace(base, **params)
        s = pool_scores(
            [score_image(segmenter.labels(r, post=post), g) for r, g in zip(raws, gts, strict=True)]
        )
        records.append(
            {
                "objective": s.pooled_f1 + s.pooled_object_dice,
                "val_f1": s.pooled_f1,
                "val_object_dice": s.pooled_object_dice,
                "val_object_hausdorff": s.pooled_object_hausdorff,
            }
        )
    best = best_point(records)
    return dataclasses.replace(base, **grid[best]), {**records[best], "grid_size": len(grid)}


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the tuning's worker processes)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


class _Clock:
    """Wall and CPU seconds (this process and its workers) of a block: on a shared machine the CPU time is the
    stable one."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu

    def __str__(self) -> str:
        return f"{self.wall:7.1f} s wall {self.cpu:7.1f} s CPU"


def bench_model(model_dir: Path, glas: Path, reference: bool) -> list[str]:
    """The rows of one model: network pass, reference search, new search, ratio, settings check."""
    cfg = load_config(model_dir / "config.json")
    post, grid = base_post(cfg)
    model = model_from_state(cfg, read_checkpoint(weights_file(model_dir))["model"], torch.device("cpu"))
    segmenter = make_segmenter(model, cfg, post, torch.device("cpu"), path=model_dir)
    val = load_data(cfg, glas, 0)[1]
    with torch.inference_mode(), _Clock() as t_raw:
        raws = [segmenter.raw(img) for img, _ in val]
    with _Clock() as t_new:
        new_post, new = tune(segmenter, val, raws=raws)
    name = model_dir.name
    rows = [
        f"{name}: {len(val)} val images, {len(grid)} grid points",
        f"  network pass (raw outputs, once)      {t_raw}",
        f"  new search on the cached outputs      {t_new}",
        f"  tuning in all (network + new search)  {t_raw.wall + t_new.wall:7.1f} s wall",
    ]
    if reference:
        with _Clock() as t_ref:
            ref_post, ref = reference_tune(segmenter, raws, [g for _, g in val])
        if (ref_post, ref) != (new_post, new):
            raise SystemExit(
                f"{name}: the searches differ:\n  reference {ref_post} {ref}\n  new {new_post} {new}"
            )
        rows += [
            f"  reference loop on the cached outputs  {t_ref}",
            f"  new / reference                       {t_new.wall / t_ref.wall:7.3f} wall {t_new.cpu / t_ref.cpu:7.3f} CPU"
            f"   (speed-up {t_ref.cpu / t_new.cpu:.1f}x CPU)",
            "  same settings and figures as the reference: yes",
        ]
    shipped = load_post(model_dir / "postprocess.json", cfg.model)
    rows += [
        f"  chosen: {json.dumps(dataclasses.asdict(new_post))}",
        f"  figures: val F1 {new['val_f1']!r}, object Dice {new['val_object_dice']!r}, "
        f"object Hausdorff {new['val_object_hausdorff']!r}",
        f"  shipped postprocess.json reproduced: {'yes' if shipped == new_post else 'NO: ' + str(shipped)}",
    ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", nargs="+", default=["unet", "maskrcnn"], help="folders under trained_models/"
    )
    ap.add_argument("--skip-reference", action="store_true", help="time the new search only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_tuning.txt")
    args = ap.parse_args()
    glas = Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))
    lines = [
        f"bench_tuning: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M')}",
    ]
    for name in args.models:
        lines += bench_model(ROOT / "trained_models" / name, glas, not args.skip_reference)
        print("\n".join(lines[-10:]), flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
