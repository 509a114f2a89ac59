"""glandseg benchmarks: one table of latency, metric, training-step and memory figures, each beside a reference.

The reference is measured in the same run, on the same machine, with the same thread count: a bare torchvision
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` eval forward on the same image (for times) and
the peak RSS of a process that builds it and runs that forward (for memory). The ``x ref`` column divides by it,
which makes figures from busy or different machines comparable.

    .venv/bin/python -m benchmarks.bench [--models DIR] [--threads N] [--repeats N] [--quick] [--big]

Models: ``trained_models/`` when it holds a U-Net and a Mask R-CNN, else ``--models DIR``, else freshly built
untrained ones (``glandseg-unet``, ``glandseg-maskrcnn-cpu``); the table says which. ``--big`` adds the peak RSS
and time of predicting a 4000x4000 mosaic of testA_1 (tiled inference), one fresh process per model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

DATA = Path(os.environ.get("GLANDSEG_DATA", REPO.parent / "shared" / "glas"))
IMAGE = "testA_1"  # 775x522


# ---------------------------------------------------------------------------------------------- helpers


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB.

    Reads VmHWM from /proc/self/status: on Linux, ``ru_maxrss`` of a process started by ``subprocess`` also
    counts the *parent's* resident memory at the fork (the value survives execve), so a child of a big
    benchmark process would report the parent's peak. ``ru_maxrss`` (KiB) is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process) of ``fn`` over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def load_image(name: str = IMAGE) -> np.ndarray:
    from glandseg_core.imaging.io import read_image

    return read_image(DATA / f"{name}.bmp")


def mosaic(size: int = 4000) -> np.ndarray:
    """testA_1 mirrored out to size x size (glands continue across the copies' edges)."""
    img = load_image()
    h, w = img.shape[:2]
    return np.pad(img, ((0, size - h), (0, size - w), (0, 0)), mode="symmetric")


def reference_model() -> torch.nn.Module:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()


def reference_forward(model: torch.nn.Module, image: np.ndarray) -> None:
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    with torch.inference_mode():
        model([x])


def find_models(models_arg: Path | None, tmp: Path) -> tuple[dict[str, Path], str]:
    """One model folder per kind (unet, maskrcnn) and a note on where they came from."""
    from glandseg_core.config import PRESETS, config_to_dict, load_config, save_config
    from glandseg_core.models import build_model

    for root, note in ((REPO / "trained_models", "trained_models/"), (models_arg, str(models_arg))):
        if root is None or not Path(root).is_dir():
            continue
        found: dict[str, Path] = {}
        for d in sorted(Path(root).iterdir()):
            if (d / "config.json").is_file() and (
                (d / "weights.pt").is_file() or (d / "best.pt").is_file()
            ):
                found.setdefault(load_config(d / "config.json").model, d)
        if {"unet", "maskrcnn"} <= set(found):
            return found, f"{note} ({found['unet'].name}, {found['maskrcnn'].name})"
    out = {}
    for kind, preset in (("unet", "glandseg-unet"), ("maskrcnn", "glandseg-maskrcnn-cpu")):
        cfg = PRESETS[preset]
        d = tmp / kind
        d.mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(
            {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg), "epoch": 0},
            d / "weights.pt",
        )
        save_config(cfg, d / "config.json")
        out[kind] = d
    return out, "untrained (glandseg-unet, glandseg-maskrcnn-cpu presets)"


# ------------------------------------------------------------------------------------------ measurements


def reference_latency(image: np.ndarray, repeats: int) -> tuple[float, float]:
    ref = reference_model()
    return timed(lambda: reference_forward(ref, image), repeats)


def predict_latency(model_dir: Path, image: np.ndarray, repeats: int) -> tuple[float, float]:
    from glandseg_core.segmenters import load_segmenter

    segmenter = load_segmenter(model_dir, device="cpu")
    return timed(lambda: segmenter(image), repeats)


def perturb(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: glands grown or shrunk, some dropped, some shifted, a few false blobs."""
    from scipy import ndimage as ndi

    out = np.zeros_like(labels)
    for i in np.unique(labels)[1:]:
        m = labels == i
        r = rng.random()
        if r < 0.1:
            continue
        m = ndi.binary_dilation(m, iterations=3) if r < 0.5 else ndi.binary_erosion(m, iterations=3)
        if rng.random() < 0.2:
            m = np.roll(m, tuple(rng.integers(-15, 16, 2)), axis=(0, 1))
        out[m & (out == 0)] = i
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    for k in range(int(rng.integers(0, 4))):
        cy, cx, r = (
            rng.integers(0, labels.shape[0]),
            rng.integers(0, labels.shape[1]),
            rng.integers(10, 40),
        )
        out[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (out == 0)] = 5000 + k
    return out


def metric_time(repeats: int) -> tuple[float, float, int]:
    from glandseg_core.datasets.glas import find_items, load_item
    from glandseg_core.metrics import score_image

    rng = np.random.default_rng(0)
    pairs = []
    for item in find_items(DATA, ["testA"]):
        gt = load_item(item)[1]
        pairs.append((perturb(gt, rng), gt))
    wall, cpu = timed(lambda: [score_image(p, g) for p, g in pairs], repeats, warmup=0)
    return wall, cpu, len(pairs)


def train_step_time(preset: str, repeats: int) -> tuple[float, float, str]:
    from glandseg_core.config import PRESETS
    from glandseg_core.datasets.glas import find_items
    from glandseg_core.train.batches import load_split
    from glandseg_core.train.context import RunContext
    from glandseg_core.train.epoch import train_step
    from glandseg_core.train.setup import new_state

    cfg = replace(PRESETS[preset], train_max_images=0)
    scale = cfg.kind.input_scale(cfg)
    data = load_split(find_items(DATA, ["train"])[:8], scale)
    torch.manual_seed(0)
    ctx = RunContext(run_dir=Path(tempfile.gettempdir()), device=torch.device("cpu"), show_bar=False)
    state = new_state(cfg, data, ctx)
    state.model.train()
    batches = state.batches.epoch(np.random.default_rng(0))

    def step() -> None:
        train_step(state, next(batches), ctx.device, 0)

    wall, cpu = timed(step, repeats)
    shape = f"batch {cfg.train_batch_size}, " + (
        f"crop {cfg.train_crop_size}" if cfg.train_crop_size else "whole images"
    )
    return wall, cpu, shape


# --------------------------------------------------------------------------------------- child processes


def child(task: str, args: list[str]) -> dict:
    """Runs in a fresh process; returns a JSON-able dict."""
    from glandseg_core.segmenters import load_segmenter

    if task == "app":  # the dashboard's footprint: both models loaded, one prediction each
        segmenters = [load_segmenter(Path(a), device="cpu") for a in args]
        image = load_image()
        for segmenter in segmenters:
            segmenter(image)
        return {"peak_mb": peak_rss_mb()}
    if task == "reference":
        reference_forward(reference_model(), load_image())
        return {"peak_mb": peak_rss_mb()}
    if task == "big":
        segmenter = load_segmenter(Path(args[0]), device="cpu")
        image = mosaic()
        before = peak_rss_mb()
        t, c = time.perf_counter(), time.process_time()
        labels = segmenter(image)
        return {
            "peak_mb": peak_rss_mb(),
            "before_mb": before,
            "seconds": time.perf_counter() - t,
            "cpu_seconds": time.process_time() - c,
            "glands": int(np.count_nonzero(np.unique(labels))),
        }
    raise ValueError(f"unknown child task {task!r}")


def in_child(task: str, *args: str | Path, threads: int | None = None) -> dict:
    env = dict(os.environ)
    if threads:
        env.update(GLANDSEG_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "benchmarks.bench", "--child", task, *map(str, args)]
    if threads:
        cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"child {task} failed: {res.stderr.strip()[-800:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", type=Path, help="folder of model folders (used when trained_models/ has none)"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, help="timed runs per figure (median; default 5, --quick 2)")
    p.add_argument(
        "--quick", action="store_true", help="fewer repeats, no poster-maskrcnn training step"
    )
    p.add_argument(
        "--big", action="store_true", help="also predict a 4000x4000 mosaic per model (minutes)"
    )
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return 0
    repeats = args.repeats or (2 if args.quick else 5)
    threads = torch.get_num_threads()
    image = load_image()
    rows: list[tuple[str, str, float, float | None]] = []  # (figure, text, wall s or MB, CPU s or None)

    def add_time(name: str, wall: float, cpu: float) -> None:
        rows.append((name, f"{wall:.3f} s wall, {cpu:.3f} s CPU", wall, cpu))

    with tempfile.TemporaryDirectory() as tmp:
        models, source = find_models(args.models, Path(tmp))
        ref_wall, ref_cpu = reference_latency(image, repeats)
        for kind in ("unet", "maskrcnn"):
            wall, cpu = predict_latency(models[kind], image, repeats)
            add_time(f"predict {kind} 775x522 (median of {repeats})", wall, cpu)
        wall, cpu, n = metric_time(max(1, repeats // 2))
        add_time(f"score_image, all Test A ({n} GT vs perturbed)", wall, cpu)
        presets = ["glandseg-unet", "glandseg-maskrcnn-cpu"] + (
            [] if args.quick else ["poster-maskrcnn"]
        )
        for preset in presets:
            wall, cpu, shape = train_step_time(preset, max(1, repeats // 2))
            add_time(f"train step {preset} ({shape})", wall, cpu)
        app = in_child("app", models["unet"], models["maskrcnn"], threads=args.threads)
        ref_mem = in_child("reference", threads=args.threads)["peak_mb"]
        name = "app peak RSS (both models loaded, 1 predict each)"
        rows.append((name, f"{app['peak_mb']:.0f} MB", app["peak_mb"], None))
        if args.big:
            for kind in ("unet", "maskrcnn"):
                big = in_child("big", models[kind], threads=args.threads)
                text = (
                    f"{big['peak_mb']:.0f} MB ({big['before_mb']:.0f} loaded), {big['seconds']:.0f} s wall, "
                    f"{big['cpu_seconds']:.0f} s CPU, {big['glands']} glands"
                )
                rows.append((f"predict {kind} 4000x4000 peak RSS", text, big["peak_mb"], None))

    print(
        f"glandseg benchmark: {threads} torch threads, models: {source}; torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"reference: bare maskrcnn_resnet50_fpn eval forward on {IMAGE} (775x522) = {ref_wall:.3f} s wall, "
        f"{ref_cpu:.3f} s CPU; peak RSS of its process = {ref_mem:.0f} MB"
    )
    w1, w2 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"{'figure':<{w1}} | {'value':<{w2}} | x ref wall | x ref CPU")
    print(f"{'-' * w1}-+-{'-' * w2}-+------------+----------")
    for name, text, value, cpu in rows:
        if cpu is None:  # memory
            ratios = f"{value / ref_mem:10.2f} | {'':>9}"
        else:
            ratios = f"{value / ref_wall:10.3f} | {cpu / ref_cpu:9.3f}"
        print(f"{name:<{w1}} | {text:<{w2}} | {ratios}")
    print("x ref: time / reference time (wall and CPU separately), RSS / reference RSS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
