"""Inference engines against PyTorch, both shipped models, in one run (issue #22, item 3).

    .venv/bin/python -m benchmarks.bench_engine predict     # per GlaS image time + sample label agreement
    .venv/bin/python -m benchmarks.bench_engine val         # GlaS val figures, each engine vs torch
    .venv/bin/python -m benchmarks.bench_engine caps        # Mask R-CNN test-time proposal caps on val

``predict``: what ``glandseg predict`` does per image (``segmenter(image)``: network and post-processing, no
file I/O) on GlaS images, each engine and ``torch`` loaded side by side and called in turn on every image, so
load on the machine hits them alike; the figure is the median over images of each engine's seconds, and the
ratio engine / torch (target <= 0.5). The bundled samples' label maps are compared with torch's: pixel
agreement (labelled vs background) and gland counts. ``val``: the official figures on GlaS ``val`` (15 images)
with each model's tuned post-processing (target: F1 within 0.002 of torch). ``caps``: val figures and seconds
per image for a few ``rpn_pre/post_nms_top_n_test`` settings. Results: benchmarks/results_engine.txt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("unet", "maskrcnn")
GLAS_IMAGES = [f"testA_{i}" for i in (1, 5, 9, 20, 33)] + [f"testB_{i}" for i in (1, 4, 8, 12, 17)]
CAPS = ((1000, 1000), (1000, 500), (500, 300), (300, 150), (150, 100))


def _glas() -> Path:
    return Path(os.environ.get("GLANDSEG_DATA", ROOT.parent / "shared" / "glas"))


def _load(model: str, engine: str, **changes: object):
    from glandseg_core.checkpoints import model_from_state, read_checkpoint, weights_file
    from glandseg_core.config import replace_config
    from glandseg_core.segmenters import load_segmenter, make_segmenter

    seg = load_segmenter(ROOT / "trained_models" / model, device="cpu", engine=engine)
    if not changes:
        return seg
    cfg = replace_config(seg.cfg, **changes)
    weights = weights_file(ROOT / "trained_models" / model)
    net = model_from_state(cfg, read_checkpoint(weights)["model"], seg.device, weights.name)
    cfg.kind.loaded(net, seg.post)
    return make_segmenter(net, cfg, seg.post, seg.device, path=seg.path, engine=engine, weights=weights)


def predict(engines: list[str], models: list[str]) -> None:
    from glandseg_core.engines import engine_of
    from glandseg_core.imaging.io import read_image

    images = [read_image(_glas() / f"{n}.bmp") for n in GLAS_IMAGES]
    samples = sorted(p for p in (ROOT / "samples").glob("*.png") if not p.stem.endswith("_anno"))
    for model in models:
        t = time.perf_counter()
        segs = {"torch": _load(model, "torch")}
        for e in engines:
            segs[e] = _load(model, e)
            print(
                f"{model}: {e} loaded in {time.perf_counter() - t:.1f} s (runs {engine_of(segs[e].model)})"
            )
            t = time.perf_counter()
        times: dict[str, list[float]] = {e: [] for e in segs}
        cpus: dict[str, list[float]] = {e: [] for e in segs}
        for seg in segs.values():
            seg(images[0])  # warm-up: first-shape compilation, allocator
        for image in images:
            for e, seg in segs.items():
                t, c = time.perf_counter(), time.process_time()
                seg(image)
                times[e].append(time.perf_counter() - t)
                cpus[e].append(time.process_time() - c)  # this process's CPU, all its threads
        ref, ref_cpu = statistics.median(times["torch"]), statistics.median(cpus["torch"])
        for e, ts in times.items():
            med, cpu = statistics.median(ts), statistics.median(cpus[e])
            print(
                f"{model:9s} {e:9s} median {med:.3f} s/image over {len(ts)} GlaS images "
                f"(min {min(ts):.3f}); {med / ref:.2f} x torch; CPU {cpu:.3f} s/image, "
                f"{cpu / ref_cpu:.2f} x torch's (load average {os.getloadavg()[0]:.1f})"
            )
        for path in samples:
            image = read_image(path)
            labels = {e: seg(image) for e, seg in segs.items()}
            for e in engines:
                agree = float(np.mean((labels[e] > 0) == (labels["torch"] > 0)))
                print(
                    f"{model:9s} {e:9s} {path.name}: pixel agreement {agree:.4f}, glands "
                    f"{labels[e].max()} vs torch {labels['torch'].max()}"
                )


def _val(seg) -> tuple[dict, float]:
    from glandseg_core.evaluation import evaluate

    t = time.perf_counter()
    _, summary = evaluate(None, ["val"], None, segmenter=seg)
    v = summary["val"]
    return v, (time.perf_counter() - t) / v["n_images"]


def _line(label: str, v: dict, secs: float) -> str:
    return (
        f"{label}: val F1 {v['pooled_f1']:.4f}, object Dice {v['pooled_object_dice']:.4f}, "
        f"object Hausdorff {v['pooled_object_hausdorff']:.2f}; {secs:.2f} s/image (evaluate, incl. scoring)"
    )


def val(engines: list[str], models: list[str]) -> None:
    for model in models:
        ref, secs = _val(_load(model, "torch"))
        print(_line(f"{model:9s} torch", ref, secs))
        for e in engines:
            v, secs = _val(_load(model, e))
            print(_line(f"{model:9s} {e}", v, secs) + f"; F1 {v['pooled_f1'] - ref['pooled_f1']:+.4f}")


def caps(engine: str, settings: list[tuple[int, int]]) -> None:
    for pre, post in settings:
        seg = _load(
            "maskrcnn",
            engine,
            maskrcnn_rpn_pre_nms_top_n_test=pre,
            maskrcnn_rpn_post_nms_top_n_test=post,
        )
        v, secs = _val(seg)
        print(_line(f"maskrcnn {engine} pre {pre} post {post}", v, secs))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["predict", "val", "caps"])
    p.add_argument("--engines", nargs="+", default=["openvino", "onnx"])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument(
        "--caps", nargs="+", default=[f"{a}x{b}" for a, b in CAPS], help="PRExPOST settings (caps)"
    )
    args = p.parse_args(argv)
    if args.what == "predict":
        predict(args.engines, args.models)
    elif args.what == "val":
        val(args.engines, args.models)
    else:
        caps(args.engines[0], [(int(a), int(b)) for a, b in (c.split("x") for c in args.caps)])


if __name__ == "__main__":
    main()
