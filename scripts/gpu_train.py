"""Train the U-Net recipe on one GPU in about 7 minutes (``glandseg_core.train.gpu_run``).

    python -m scripts.gpu_train --data DIR --out "$OUT/unet-gpu"                  # glandseg-unet-gpu at scale 0.75
    python -m scripts.gpu_train --data DIR --out OUT --scale 1.0 --minutes 5.5 --set train_batch_size=16
    python -m scripts.gpu_train --data DIR --out OUT --device cpu --minutes 0.2 --set unet_base=4 unet_depth=2 \\
        train_crop_size=64 train_amp=false                                          # a CPU dry run

Writes ``OUT/checkpoint.pt``, ``OUT/model/`` (fp16 weights, config, post-processing: a model folder), ``OUT/log.jsonl``
and at the end ``OUT/val.json`` (official GlaS figures on the 15 ``val`` images). The model folder is rewritten every
``--save-every`` seconds, so a run killed early still leaves a usable model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from glandseg_core.config import coerce_overrides, get_preset, replace_config
from glandseg_core.errors import GlandsegError
from glandseg_core.train.gpu_run import GpuRun, train_on_gpu


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="GlaS folder (default: $GLANDSEG_DATA)")
    ap.add_argument(
        "--out", type=Path, required=True, help="output folder (e.g. $OUT/unet-gpu on the device)"
    )
    ap.add_argument("--preset", default="glandseg-unet-gpu")
    ap.add_argument("--scale", type=float, default=0.75, help="unet_scale (0.75-1.0 for this recipe)")
    ap.add_argument(
        "--minutes", type=float, default=6.0, help="training time; validation and tuning follow"
    )
    ap.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (0: the schedule's)"
    )
    ap.add_argument("--save-every", type=float, default=60.0, help="seconds between checkpoints")
    ap.add_argument("--device", default=None, help="cuda, cpu (default: cuda when present)")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config fields, as glandseg train"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        print(f"--set takes KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    try:
        overrides = coerce_overrides(dict(kv.split("=", 1) for kv in args.set))
        cfg = replace_config(get_preset(args.preset), unet_scale=args.scale, **overrides)
        spec = GpuRun(minutes=args.minutes, max_steps=args.max_steps, save_every=args.save_every)
        result = train_on_gpu(cfg, args.data, args.out, spec, args.device)
    except (GlandsegError, KeyError, ValueError, OSError) as e:
        print(f"gpu_train: {e}", file=sys.stderr)
        return 1
    summary = {k: result[k] for k in ("steps", "train_seconds", "val_seconds", "device_name")}
    print(
        json.dumps(
            {**summary, "default": result["default"], "tuned_on_val": result["tuned_on_val"]}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
