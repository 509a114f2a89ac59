"""How well ``imaging.scale_estimate`` recovers the pixel size of GlaS images resized to other magnifications.

    .venv/bin/python -m benchmarks.bench_scale_estimate               # all 165 images, 5 scales (~10 min, 1 core)
    .venv/bin/python -m benchmarks.bench_scale_estimate --calibrate   # the reference scale from the train split
    .venv/bin/python -m benchmarks.bench_scale_estimate --limit 10    # the first 10 images of each split

Each GlaS image (0.62 µm/px) is resized by Pillow (Lanczos) by each factor s, so its true pixel size is
0.62 / s (2x: enlarged twice, 0.31 µm/px). The estimator's constant ``NUCLEUS_SIGMA_PX`` comes from the
85 train images at 1x only (``--calibrate``); Test A and Test B are reported apart as held-out images.
Writes benchmarks/results_scale_estimate.txt (``--out``) and prints the same. See docs/SCALE.md.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from glandseg_core.imaging import scale_estimate as se
from glandseg_core.imaging.io import read_image

ROOT = Path(__file__).resolve().parents[1]
SCALES = (0.5, 0.75, 1.0, 1.5, 2.0)
SPLITS = ("train", "testA", "testB")


@dataclass(frozen=True)
class Row:
    name: str
    split: str
    scale: float
    est: se.MppEstimate
    warned: bool
    seconds: float  # CPU seconds of estimate_mpp

    @property
    def rel_error(self) -> float:
        """|estimate - true| / true (NaN when unreliable)."""
        true = se.GLAS_MPP / self.scale
        return abs(self.est.mpp - true) / true if self.est.reliable else float("nan")


def glas_dir() -> Path:
    return Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))


def images(split: str, limit: int | None) -> list[Path]:
    paths = [p for p in glas_dir().glob(f"{split}_*.bmp") if not p.stem.endswith("_anno")]
    paths.sort(key=lambda p: int(p.stem.split("_")[1]))
    return paths[:limit]


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    pil = Image.fromarray(image)
    size = (round(pil.width * scale), round(pil.height * scale))
    return np.asarray(pil.resize(size, Image.Resampling.LANCZOS))


def measure(paths: list[Path], split: str, scales: tuple[float, ...]) -> list[Row]:
    rows = []
    for p in paths:
        image = read_image(p)
        for s in scales:
            im = resized(image, s)
            t = time.process_time()
            est = se.estimate_mpp(im)
            dt = time.process_time() - t
            warned = se.check_mpp(im, se.GLAS_MPP, estimate=est) is not None
            rows.append(Row(p.stem, split, s, est, warned, dt))
    return rows


def calibrate(limit: int | None) -> None:
    """Print the median peak scale (px) of the train images at 0.62 µm/px: ``NUCLEUS_SIGMA_PX``."""
    sigmas = []
    for p in images("train", limit):
        est = se.estimate_mpp(read_image(p), reference_mpp=1.0, reference_sigma=1.0)
        if est.reliable:
            sigmas.append(1.0 / est.mpp)
    q = np.percentile(sigmas, [10, 50, 90])
    print(
        f"train at 1x: {len(sigmas)} reliable; peak scale p10 {q[0]:.3f}, median {q[1]:.3f}, p90 {q[2]:.3f} px"
    )
    print(f"NUCLEUS_SIGMA_PX = {q[1]:.2f}  (now {se.NUCLEUS_SIGMA_PX})")


def summary(rows: list[Row], scales: tuple[float, ...]) -> list[str]:
    """One line per (split group, scale): error, bias, unreliable and warning counts."""
    out = [
        f"{'images':<12}{'scale':>6}{'true mpp':>9}{'n':>5}{'unrel.':>7}{'median err':>11}{'p90 err':>8}"
        f"{'bias':>7}{'warned':>7}"
    ]
    groups = {"train": ("train",), "test A+B": ("testA", "testB"), "all": SPLITS}
    for label, splits in groups.items():
        for s in scales:
            sel = [r for r in rows if r.split in splits and r.scale == s]
            if not sel:
                continue
            err = np.array([r.rel_error for r in sel if r.est.reliable])
            ratio = np.array([r.est.mpp * s / se.GLAS_MPP for r in sel if r.est.reliable])
            med, p90 = np.percentile(err, [50, 90]) if err.size else (np.nan, np.nan)
            bias = np.exp(np.median(np.log(ratio))) - 1 if ratio.size else np.nan
            out.append(
                f"{label:<12}{s:>5g}x{se.GLAS_MPP / s:>9.3f}{len(sel):>5}{sum(not r.est.reliable for r in sel):>7}"
                f"{med:>10.1%}{p90:>9.1%}{bias:>+7.1%}{sum(r.warned for r in sel):>7}"
            )
    return out


def verdicts(rows: list[Row]) -> list[str]:
    """False alarms at 1x and misses at 0.5x and 2x, for check_mpp(image, 0.62)."""
    out = []
    for s, what in (
        (1.0, "false alarms (warned at the right pixel size)"),
        (2.0, "misses (silent)"),
        (0.5, "misses (silent)"),
    ):
        sel = [r for r in rows if r.scale == s]
        if not sel:
            continue
        bad = [r for r in sel if r.warned == (s == 1.0)]
        names = ", ".join(r.name for r in bad[:8]) + (" ..." if len(bad) > 8 else "")
        out.append(
            f"{s:g}x given as 0.62: {what}: {len(bad)} of {len(sel)}" + (f" ({names})" if bad else "")
        )
    t = np.array([r.seconds for r in rows if r.scale == 1.0])
    if t.size:
        out.append(
            f"CPU time per estimate at 1x (775x522): median {np.median(t):.3f} s, max {t.max():.3f} s"
        )
    return out


def unreliable(rows: list[Row]) -> list[str]:
    reasons: dict[str, int] = {}
    for r in rows:
        if r.est.reason:
            key = f"{r.scale:g}x: {r.est.reason.split(' (')[0]}"
            reasons[key] = reasons.get(key, 0) + 1
    return [f"unreliable {k}: {v}" for k, v in sorted(reasons.items())]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--calibrate", action="store_true", help="print NUCLEUS_SIGMA_PX from the train split"
    )
    ap.add_argument("--limit", type=int, default=None, help="first N images of each split")
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_scale_estimate.txt")
    args = ap.parse_args(argv)
    if args.calibrate:
        calibrate(args.limit)
        return
    scales = tuple(args.scales)
    rows = [r for split in SPLITS for r in measure(images(split, args.limit), split, scales)]
    cmd = "python -m benchmarks.bench_scale_estimate" + (f" --limit {args.limit}" if args.limit else "")
    lines = [
        f"# {cmd}",
        f"# GlaS ({glas_dir().name}) resized by Pillow Lanczos; true mpp = 0.62 / scale; "
        f"NUCLEUS_SIGMA_PX = {se.NUCLEUS_SIGMA_PX} (train, 1x); err = |est - true| / true over reliable estimates;",
        "# bias = median est/true - 1; warned = check_mpp(image, 0.62) warned",
        *summary(rows, scales),
        "",
        *verdicts(rows),
        *unreliable(rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.limit is None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
