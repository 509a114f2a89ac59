"""The ``glandseg`` command line: one sub-parser per verb (:func:`get_args_parser`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._version import __version__
from ..config import PRESETS

SPLITS = ["train", "val", "testA", "testB"]


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model (CUDA when present, else CPU)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe, e.g. poster-maskrcnn")
    src.add_argument("--config", type=Path, help="a config.json to start from instead of a preset")
    t.add_argument("--data", action="append", help="data folder (DATASETS.md); repeat: add its train")
    t.add_argument("--init", type=Path, help="fine-tune from a model/run folder or .pt (train_init)")
    t.add_argument("--out", type=Path, help="run folder (default: runs/<preset>)")
    t.add_argument("--epochs", type=int, help="override train_epochs")
    t.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    t.add_argument(
        "--resume", action="store_true", help="continue the run in --out exactly where it stopped"
    )
    t.add_argument(
        "--set",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field",
    )
    t.add_argument("--no-bar", action="store_true", help="no progress bar")
    t.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that build augmented batches (default 0: in-process)",
    )
    t.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="training budget; the run shortens its schedule to fit it (default: none)",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError(f"{text}: expected micrometres per pixel, e.g. 0.25 or 0.5")
    return value


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["auto", "torch", "openvino", "onnx"],
        default="auto",
        help="what runs the network on the CPU (default auto: ONNX Runtime, else OpenVINO when installed, "
        "else PyTorch; $GLANDSEG_ENGINE sets what auto means); exported graphs are cached in "
        "$GLANDSEG_ENGINE_CACHE (default ~/.cache/glandseg/engines)",
    )


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="segment images, folders, globs, slides (also under torchrun)")
    pr.add_argument("--model", type=Path, required=True, help="model folder, e.g. trained_models/unet")
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (predictions)")
    pr.add_argument("--tta", action="store_true", help="test-time augmentation (8 flips/rotations)")
    pr.add_argument("--device", choices=["cpu", "cuda"])
    _add_engine(pr)
    pr.add_argument(
        "--mpp",
        type=_positive,
        metavar="UM",
        help="micrometres per pixel of the inputs (default: TIFF/OME/slide metadata, else the model's)",
    )
    pr.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    pr.add_argument(
        "--memory-budget",
        type=float,
        metavar="MB",
        help="memory one image may need once resampled to the model's pixel size (default: "
        "$GLANDSEG_MEMORY_BUDGET_MB, else 80%% of the memory available); larger images are refused",
    )
    pr.add_argument("--no-bar", action="store_true", help="no progress bar")
    pr.add_argument("images", nargs="+", help="image or slide files, folders, quoted globs ('a/*.svs')")


def _add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="get the official GlaS release: download it or import its zip")
    verbs = d.add_subparsers(dest="data_command", required=True)
    f = verbs.add_parser("fetch", help="download the GlaS release zip, unpack it, check every SHA-256")
    i = verbs.add_parser("import", help="unpack a GlaS release zip you have, check every SHA-256")
    i.add_argument("zip", type=Path, help="warwick_qu_dataset_released_2016_07_08.zip")
    for v in (f, i):
        v.add_argument("--dest", type=Path, default=Path("data/glas"), help="GlaS folder (data/glas)")
        v.add_argument("--no-bar", action="store_true", help="no progress bar")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate", help="score a model or a folder of label maps with the official GlaS metrics"
    )
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="model folder")
    which.add_argument("--predictions", type=Path, help="folder of label maps named <image>.png")
    e.add_argument("--data", help="data folder, any layout (docs/DATASETS.md; default: $GLANDSEG_DATA)")
    e.add_argument(
        "--split",
        nargs="+",
        help="splits of the set, or all (default: GlaS val, other sets all). GlaS testA/testB with --model "
        "are recorded in the folder's test_history.jsonl",
    )
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--tta", action="store_true")
    e.add_argument(
        "--save-predictions", action="store_true", help="also write out/predictions/<image>_labels.png"
    )
    e.add_argument("--device", choices=["cpu", "cuda"])
    _add_engine(e)
    e.add_argument(
        "--reason", default="", help="why the test splits are scored (kept in test_history.jsonl)"
    )
    e.add_argument(
        "--relabel-gt",
        action="store_true",
        help="diagnostic only, beside the official figures: ground-truth ids split into connected components",
    )


def _add_model_tools(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="turn a training run's best.pt into a model folder")
    x.add_argument("run", type=Path, help="training run folder (best.pt, config.json, postprocess.json)")
    x.add_argument("model", type=Path, help="model folder to write, e.g. trained_models/mine")
    x.add_argument("--overwrite", action="store_true", help="replace the model the folder already holds")
    x.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store weights in fp16 (default: only when fp32 would exceed 90 MiB)",
    )
    c = sub.add_parser("card", help="write MODEL_CARD.md of a model folder")
    c.add_argument("model_dir", type=Path)
    c.add_argument("--run", type=Path, required=True, help="the training run it came from")
    c.add_argument("--command", required=True, help="the exact train command")
    c.add_argument("--notes", type=Path, help="a Markdown file appended to the card")
    c.add_argument("--data", help="GlaS folder, to flag annotation quirks (default: $GLANDSEG_DATA)")
    c.add_argument("--hardware", default="", help="where the run trained (default: this machine's CPU)")
    a = sub.add_parser(
        "tta", help="evaluate a model without and with test-time augmentation, side by side"
    )
    a.add_argument("--model", type=Path, required=True)
    a.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    a.add_argument("--split", nargs="+", default=["val", "testA", "testB"], choices=SPLITS)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--device", choices=["cpu", "cuda"])


def _add_pack(sub: argparse._SubParsersAction) -> None:
    pk = sub.add_parser(
        "pack", help="write a compact copy of GlaS (lossless WebP / JPEG) to carry to a GPU machine"
    )
    pk.add_argument("--data", help="GlaS folder (default: $GLANDSEG_DATA)")
    pk.add_argument("--out", type=Path, required=True, help="folder for the copy")
    pk.add_argument("--split", nargs="+", default=["train", "val"], choices=SPLITS)
    pk.add_argument(
        "--lossless",
        nargs="*",
        default=["val"],
        choices=SPLITS,
        help="splits kept pixel-exact (default: val)",
    )
    pk.add_argument(
        "--quality", type=int, default=95, help="JPEG quality of the other splits (default 95)"
    )


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of the sub-commands."""
    p = argparse.ArgumentParser(
        prog="glandseg", description="Gland segmentation on GlaS: U-Net and Mask R-CNN."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)
    for add in (_add_train, _add_predict, _add_evaluate, _add_model_tools, _add_pack, _add_data):
        add(sub)
    return p
