"""Whole-slide benchmark: `glandseg predict` on a generated slide of at least 20,000 x 20,000 pixels.

    .venv/bin/python -m benchmarks.bench_slides make cache/bench/big.svs        # the slide (once)
    .venv/bin/python -m benchmarks.bench_slides run cache/bench/big.svs         # both models
    .venv/bin/python -m benchmarks.bench_slides run cache/bench/big.svs --engines torch openvino  # engine column
    .venv/bin/python -m benchmarks.bench_slides compare cache/bench/big.svs   # 5b45ca3 (torch) vs now (auto)

See benchmarks/README.md ("Whole slides") for what each figure means.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers_slides import Mosaic, write_slide

ROOT = Path(__file__).resolve().parents[1]

SLIDE_MPP = 0.25  # an Aperio 40x scan: the pipeline reads level 0 and shrinks it by 0.62 / 0.25 = 2.48
MARGIN = 4000  # level-0 pixels of glass around the tissue, as around a section on a slide
REFERENCE = "5b45ca3"  # "today's" code of issue #22's slide target (before the engine and lane changes)


def glas_dir() -> Path:
    import os

    return Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))


def make(path: Path, side: int, margin: int = MARGIN) -> None:
    """A mosaic of the 60 Test A images, each enlarged to 0.25 um/px, on white (``margin`` around), at least
    side x side."""
    images = [np.asarray(Image.open(glas_dir() / f"testA_{i}.bmp").convert("RGB")) for i in range(1, 61)]
    scale = 0.62 / SLIDE_MPP
    ch, cw = Mosaic(images, (1, 1), scale=scale).cell
    rows = -(-(side - 2 * margin + 128) // (ch + 128))
    cols = -(-(side - 2 * margin + 128) // (cw + 128))
    mosaic = Mosaic(images, (rows, cols), scale=scale, margin=margin, gap=128)
    t = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_slide(path, mosaic, mpp=SLIDE_MPP, levels=3, kind="svs")
    h, w = mosaic.shape
    print(
        f"wrote {path}: {w} x {h} pixels ({w * h / 1e6:.0f} MP), {rows} x {cols} GlaS images, "
        f"{SLIDE_MPP} um/px, {path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s"
    )


def untiled(model: Path, repeats: int, engine: str = "auto") -> dict:
    """Seconds (wall, CPU) per megapixel of one whole GlaS image (testA_1, 775x522, no tiling), median of
    ``repeats`` after a warm-up call, in this process."""
    from glandseg_core.imaging.io import read_image
    from glandseg_core.segmenters import load_segmenter

    seg = load_segmenter(model, engine=engine)
    image = read_image(glas_dir() / "testA_1.bmp")
    seg(image)
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        seg(image)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    mp = image.shape[0] * image.shape[1] / 1e6
    return {"mp": mp, "wall_s": float(np.median(walls)), "cpu_s": float(np.median(cpus))}


def slide_run(model: Path, slide: Path, out: Path, engine: str = "auto", code: Path = ROOT) -> dict:
    """`glandseg predict` on the slide in a fresh process under /usr/bin/time -v: wall, CPU, peak RSS.
    ``code``: the source tree whose glandseg_core runs (a worktree of an earlier commit for ``compare``)."""
    import json
    import os
    import re
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "glandseg_core",
        "predict",
        "--model",
        str(model),
    ]
    cmd += ["--engine", engine, "--out", str(out), "--no-bar", str(slide)]
    env = dict(os.environ, PYTHONPATH=str(code))
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    err = proc.stderr

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([0-9.:]+)", err).group(1))

    if proc.returncode != 0:
        raise SystemExit(f"glandseg predict failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads((out / f"{slide.stem}_summary.json").read_text())
    return {
        "cmd": " ".join(os.path.relpath(c, ROOT) if c.startswith(f"{ROOT}/") else c for c in cmd[2:]),
        "wall_s": wall,
        "cpu_s": field("User time (seconds)") + field("System time (seconds)"),
        "peak_rss_mb": field("Maximum resident set size (kbytes)") / 1024,
        "summary": summary,
        "geojson": check_geojson(out / f"{slide.stem}.geojson"),
    }


def check_geojson(path: Path) -> dict:
    """Every feature valid (shapely), and no two glands sharing area."""
    import json

    import shapely
    from shapely.geometry import shape

    feats = json.loads(path.read_text())["features"]
    geoms = [shape(f["geometry"]) for f in feats]
    valid = all(shapely.is_valid(g) for g in geoms)
    tree = shapely.STRtree(geoms)
    pairs = tree.query(geoms, predicate="intersects")
    overlap = sum(
        1 for i, j in pairs.T if i < j and shapely.area(shapely.intersection(geoms[i], geoms[j])) > 1e-6
    )
    return {"features": len(feats), "all_valid": valid, "overlapping_pairs": overlap}


def _report(name: str, slide: Path, r: dict, before: dict, after: dict) -> None:
    ref, big, slide_mp, window_mp, sm = (
        r["untiled"],
        r["slide"],
        r["slide_mp"],
        r["window_mp"],
        r["summary"],
    )
    per = {k: ref[k] / ref["mp"] for k in ("wall_s", "cpu_s")}
    print(
        f"\n== {name}: {slide.name} {sm['width']} x {sm['height']} px at {sm['slide_mpp']} um/px = "
        f"{slide_mp:.1f} MP at the model's {sm['model_mpp']} um/px; {sm['windows']} windows "
        f"({sm['windows_skipped']} skipped as background), {sm['glands']} glands"
    )
    print(f"   {big['cmd']}")
    print(
        f"   peak RSS {big['peak_rss_mb']:.0f} MB; wall {big['wall_s']:.0f} s; CPU {big['cpu_s']:.0f} s; "
        f"GeoJSON {big['geojson']}"
    )
    print(
        f"   untiled testA_1: {ref['mp'] / ref['wall_s']:.3f} MP/s wall, {ref['mp'] / ref['cpu_s']:.3f} MP/s CPU "
        f"(before the slide {before['mp'] / before['wall_s']:.3f} / {before['mp'] / before['cpu_s']:.3f}, "
        f"after {after['mp'] / after['wall_s']:.3f} / {after['mp'] / after['cpu_s']:.3f})"
    )
    # the tiled inference itself (reading, segmenting, stitching the windows: the summary's segment_*
    # seconds), and the whole process (Python and torch start-up, model loading, tissue, outputs too)
    seg = {"wall_s": sm["segment_seconds"], "cpu_s": sm["segment_cpu_seconds"]}
    for what, secs in (("tiled inference", seg), ("whole process", big)):
        for label, mp in (("slide MP", slide_mp), ("window MP", window_mp)):
            for k in ("wall_s", "cpu_s"):
                rate = mp / secs[k]
                ratio = (secs[k] / mp) / per[k]
                print(
                    f"   {what:15s} per {label:9s} ({k[:-2]:4s}): {rate:.3f} MP/s; "
                    f"cost per MP = {ratio:.2f} x untiled"
                )


def _one(model: Path, slide: Path, out: Path, repeats: int, engine: str, dims: tuple[int, int]) -> dict:
    from glandseg_core.slides.pipeline import OVERLAP, WINDOW, even_spans

    w0, h0 = dims
    before = untiled(model, repeats, engine)
    big = slide_run(model, slide, out / f"{model.name}-{engine}", engine)
    after = untiled(model, repeats, engine)
    # the untiled reference is seconds long, the slide minutes: measured on both sides of the slide run,
    # the faster of the two (the stricter reference for the ratio)
    ref = min(before, after, key=lambda r: r["cpu_s"])
    ref["wall_s"] = min(before["wall_s"], after["wall_s"])
    sm = dict(big["summary"], width=w0, height=h0)
    scale = sm["model_mpp"] / sm["slide_mpp"]
    th = even_spans(round(h0 / scale), WINDOW, OVERLAP)[1]
    tw = even_spans(round(w0 / scale), WINDOW, OVERLAP)[1]
    r = {
        "engine": engine,
        "untiled": ref,
        "slide": big,
        "summary": sm,
        "slide_mp": w0 * h0 / scale**2 / 1e6,  # the whole slide at the model's pixel size
        "window_mp": sm["windows"] * th * tw / 1e6,  # what the windows covered (overlaps counted twice)
    }
    _report(f"{model.name}, engine {engine}", slide, r, before, after)
    return r


def run(slide: Path, models: list[Path], out: Path, repeats: int, engines: list[str]) -> None:
    import json

    from glandseg_core.slides import open_slide

    with open_slide(slide) as s:
        dims = s.dimensions
    results = {}
    for model in models:
        for engine in engines:
            results[f"{model.name}/{engine}"] = _one(model, slide, out, repeats, engine, dims)
        base = results[f"{model.name}/{engines[0]}"]
        for engine in engines[1:]:
            r = results[f"{model.name}/{engine}"]
            print(
                f"\n{model.name}: engine {engine} vs {engines[0]}: slide throughput (whole process, wall) "
                f"{base['slide']['wall_s'] / r['slide']['wall_s']:.2f} x, tiled inference "
                f"{base['summary']['segment_seconds'] / r['summary']['segment_seconds']:.2f} x; peak RSS "
                f"{r['slide']['peak_rss_mb']:.0f} vs {base['slide']['peak_rss_mb']:.0f} MB; glands "
                f"{r['summary']['glands']} vs {base['summary']['glands']}"
            )
    (out / "bench_slides.json").write_text(json.dumps(results, indent=2, default=str))


def reference_tree(rev: str) -> Path:
    """A git worktree of ``rev`` in /tmp (made once, reused), whose glandseg_core is the reference."""
    import subprocess

    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"glandseg-ref-{sha}"
    if not (tree / "glandseg_core").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True)
    return tree


def compare(slide: Path, models: list[Path], out: Path, repeats: int, rev: str, engine: str) -> None:
    """Reference (``rev``'s code, ``--engine torch``) against now (this tree, ``--engine engine``), each
    ``glandseg predict`` in a fresh process, interleaved (reference, now, now, reference, ...) so that load
    on the machine hits both alike; medians of wall and CPU seconds, the largest peak RSS."""
    import json
    import os

    ref = reference_tree(rev)
    slide, out = slide.resolve(), out.resolve()
    results: dict[str, list[dict]] = {}
    for model in (m.resolve() for m in models):
        runs: dict[str, list[dict]] = {"reference": [], "now": []}
        for i in range(repeats):
            order = ("reference", "now") if i % 2 == 0 else ("now", "reference")
            for who in order:
                code, eng = (ref, "torch") if who == "reference" else (ROOT, engine)
                r = slide_run(model, slide, out / f"{model.name}-{who}", eng, code)
                r["load_avg"] = os.getloadavg()[0]
                runs[who].append(r)
                print(
                    f"{model.name:9s} {who:9s} run {i + 1}: wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['summary']['glands']} glands, GeoJSON "
                    f"{r['geojson']} (load average {r['load_avg']:.1f})",
                    flush=True,
                )
        med = {
            who: {k: float(np.median([r[k] for r in rs])) for k in ("wall_s", "cpu_s")}
            for who, rs in runs.items()
        }
        peak = {who: max(r["peak_rss_mb"] for r in rs) for who, rs in runs.items()}
        print(
            f"{model.name}: now (--engine {engine}) vs reference ({rev}, --engine torch), medians of "
            f"{repeats}: throughput {med['reference']['wall_s'] / med['now']['wall_s']:.2f} x (wall), "
            f"{med['reference']['cpu_s'] / med['now']['cpu_s']:.2f} x (CPU); peak RSS {peak['now']:.0f} vs "
            f"{peak['reference']:.0f} MB"
        )
        results[model.name] = runs["reference"] + runs["now"]
    (out / "bench_slides_compare.json").write_text(json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_make = sub.add_parser("make")
    p_make.add_argument("slide", type=Path)
    p_make.add_argument("--side", type=int, default=20_000)
    p_make.add_argument(
        "--margin", type=int, default=MARGIN, help="level-0 px of glass around the tissue"
    )
    p_run = sub.add_parser("run")
    p_run.add_argument("slide", type=Path)
    p_run.add_argument(
        "--models",
        type=Path,
        nargs="+",
        default=[ROOT / "trained_models/unet", ROOT / "trained_models/maskrcnn"],
    )
    p_run.add_argument("--out", type=Path, default=Path("cache/bench/out"))
    p_run.add_argument("--repeats", type=int, default=7)
    p_run.add_argument(
        "--engines",
        nargs="+",
        default=["torch", "auto"],
        help="engines run in turn (the first is the reference of the ratios; default torch auto)",
    )
    p_cmp = sub.add_parser("compare", help="reference commit (--engine torch) vs this tree, interleaved")
    p_cmp.add_argument("slide", type=Path)
    p_cmp.add_argument("--models", type=Path, nargs="+", default=[ROOT / "trained_models/unet"])
    p_cmp.add_argument("--out", type=Path, default=Path("cache/bench/compare"))
    p_cmp.add_argument("--repeats", type=int, default=2, help="runs of each (medians)")
    p_cmp.add_argument("--reference", default=REFERENCE, help="commit whose code is the reference")
    p_cmp.add_argument("--engine", default="auto", help="this tree's engine (default auto)")
    args = parser.parse_args(argv)
    if args.cmd == "make":
        make(args.slide, args.side, args.margin)
    elif args.cmd == "compare":
        compare(args.slide, args.models, args.out, args.repeats, args.reference, args.engine)
    else:
        run(args.slide, args.models, args.out, args.repeats, args.engines)


if __name__ == "__main__":
    main()
