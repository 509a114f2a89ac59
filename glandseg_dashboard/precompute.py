"""The bundled samples' results ahead of the first visit: ``python -m glandseg_dashboard.precompute [--ship]``.

For every bundled sample (``samples/*.png``, not the ``*_anno.png`` annotations) and every model role folder
(``$GLANDSEG_MODELS/unet``, ``.../maskrcnn``), the label map the Compare page shows first (no TTA, the model's own
pixel size) is looked up: shipped in the repository and still matching the model's files
(:mod:`glandseg_dashboard.shipped`), else kept in the disk cache (:mod:`glandseg_dashboard.diskcache`); a missing
one is computed on a warm worker (:mod:`glandseg_dashboard.pool`) and kept in the disk cache. Idempotent: a
second run computes nothing. ``scripts/setup.sh`` runs it at install time.

``--ship`` (maintainers, after promoting new shipped models) computes every result again and writes them into
``samples/results/`` with the manifest, to be committed; each result records the engine that computed it (the
dashboard's ``auto``; results stay valid under any engine, see :mod:`glandseg_dashboard.shipped`). Prints one line
per result. No streamlit here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from glandseg_core.checkpoints import WEIGHTS
from glandseg_core.engines.runners import title
from glandseg_core.errors import GlandsegError
from glandseg_core.imaging.io import read_image

from . import diskcache, pool, settings, shipped


def samples(root: Path = settings.SAMPLES_DIR) -> list[Path]:
    """The bundled sample images (their annotations left out)."""
    return sorted(p for p in root.glob("*.png") if not p.stem.endswith("_anno"))


def model_folders(root: Path) -> list[Path]:
    """The role folders (``unet``, ``maskrcnn``) under ``root`` that hold weights."""
    return [root / r for r in settings.ROLES if (root / r / WEIGHTS).is_file()]


def precompute(
    models_root: Path, ship: bool = False, out=print, results: Path = shipped.RESULTS_DIR
) -> int:
    """Look up, compute and keep every sample's result (see the module docstring); returns how many it computed.
    ``results``: the shipped results' folder (``samples/results``)."""
    workers, computed = pool.Pool(), 0
    try:
        for path in samples():
            image = read_image(path)
            image_id = diskcache.digest(image)
            for folder in model_folders(models_root):
                key = diskcache.key(str(folder), False, None, image_id)
                where = f"{path.stem} by {folder.name}"
                if not ship and shipped.load(folder, image_id, root=results) is not None:
                    out(f"{where}: shipped, up to date")
                    continue
                if not ship and diskcache.load(key) is not None:
                    out(f"{where}: in the disk cache")
                    continue
                t0 = time.perf_counter()
                result = pool.run_job(workers, str(folder), image, False, lambda *_: None)
                diskcache.save(key, result.labels, result.seconds)
                if ship:
                    shipped.save(
                        folder,
                        path.stem,
                        image_id,
                        result.labels,
                        result.seconds,
                        results,
                        engine=result.engine,
                    )
                computed += 1
                engine = title(result.engine)
                out(f"{where}: computed in {time.perf_counter() - t0:.1f} s ({engine})")
    finally:
        workers.shutdown()
    return computed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", type=Path, default=None, help="models folder (default: $GLANDSEG_MODELS)"
    )
    ap.add_argument(
        "--ship", action="store_true", help="recompute all into samples/results/ (commit them)"
    )
    args = ap.parse_args(argv)
    root = args.models or settings.models_root()
    if not model_folders(root):
        print(f"precompute: no model folder with {WEIGHTS} under {root}; nothing to do")
        return 0
    try:
        precompute(root, ship=args.ship)
    except (GlandsegError, pool.InferenceFailed, OSError) as e:
        print(f"precompute: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
