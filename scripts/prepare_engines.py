"""Build the engine cache of model folders ahead of time, so their first use loads in seconds:

python -m scripts.prepare_engines trained_models/unet trained_models/maskrcnn [--engine auto]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from glandseg_core.engines import ENGINES, cache_root, engine_of
from glandseg_core.errors import GlandsegError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(
        prog="python -m scripts.prepare_engines", description=__doc__.splitlines()[0]
    )
    p.add_argument("models", nargs="+", help="model folders")
    p.add_argument("--engine", choices=ENGINES, default="auto")
    args = p.parse_args(argv)
    from glandseg_core.segmenters import load_segmenter

    for model in args.models:
        t = time.perf_counter()
        try:
            seg = load_segmenter(model, device="cpu", engine=args.engine)
        except GlandsegError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(
            f"{model}: {engine_of(seg.model)} ready in {time.perf_counter() - t:.1f} s ({cache_root()})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
