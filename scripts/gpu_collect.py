"""After scripts/gpu_train.sh: put back through OUT what fits its limits (8 files, 16 MiB each, 64 MiB in all).

Always: ``runs.tar.gz`` with every run's config, log, tuning and post-processing and the poster run's test
scores. Then fp16 weights, split in 15 MiB parts: first the runs whose tuned ``val`` F1 beats the shipped model's,
largest gain first, then the others, as long as they fit.
Usage (from the repository root, or anywhere with glandseg installed):
       python -m scripts.gpu_collect RUNS_DIR OUT_DIR          (on the GPU machine)
       python -m scripts.gpu_collect --unpack FILES_DIR PARENT  (here: runs back under PARENT, best.pt rebuilt)
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
from pathlib import Path

from glandseg_core.checkpoints import export_model

PART = 15 * 2**20
BUDGET = 62 * 2**20
MAX_FILES = 8
OURS = {"unet": "trained_models/unet", "maskrcnn": "trained_models/maskrcnn"}


def shipped_val_f1(model_dir: str) -> float:
    path = Path(model_dir) / "val" / "summary.json"
    return float(json.loads(path.read_text())["val"]["pooled_f1"]) if path.is_file() else -1.0


def main(runs: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for f in sorted(runs.rglob("*")):
            if f.is_file() and f.suffix not in (".pt", ".tmp"):
                tar.add(f, arcname=str(f.relative_to(runs.parent)))
    candidates = []
    for name, shipped in OURS.items():
        tuning = runs / name / "tuning.json"
        if tuning.is_file():
            val, before = float(json.loads(tuning.read_text())["val_f1"]), shipped_val_f1(shipped)
            gain = val - before
            candidates.append((gain > 0, gain, name, val))
            print(f"{name}: tuned val F1 {val:.4f}, shipped {before:.4f}, gain {gain:+.4f}")
    used, files = (out / "runs.tar.gz").stat().st_size, 1
    for _, gain, name, _ in sorted(candidates, reverse=True):
        with tempfile.TemporaryDirectory() as tmp:
            weights = export_model(runs / name, tmp, overwrite=True, fp16=True) / "weights.pt"
            blob = weights.read_bytes()
        parts = [blob[i : i + PART] for i in range(0, len(blob), PART)]
        if used + len(blob) > BUDGET or files + len(parts) > MAX_FILES:
            print(f"{name}: {len(blob) / 2**20:.1f} MiB of weights do not fit what is left; left behind")
            continue
        for i, part in enumerate(parts):
            (out / f"{name}.weights.part{i}").write_bytes(part)
        used, files = used + len(blob), files + len(parts)
        print(
            f"{name}: weights back in {len(parts)} parts ({len(blob) / 2**20:.1f} MiB, val gain {gain:+.4f})"
        )


def unpack(files: Path, parent: Path) -> None:
    with tarfile.open(files / "runs.tar.gz") as tar:
        tar.extractall(parent, filter="data")
        runs = parent / Path(tar.getnames()[0]).parts[0]
    for first in sorted(files.glob("*.weights.part0")):
        name = first.name.split(".")[0]
        parts = sorted(
            files.glob(f"{name}.weights.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1])
        )
        (runs / name / "best.pt").write_bytes(b"".join(p.read_bytes() for p in parts))
        print(f"{runs / name / 'best.pt'}: rebuilt from {len(parts)} parts")


if __name__ == "__main__":
    if sys.argv[1] == "--unpack":
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
