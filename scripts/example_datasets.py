"""Example annotated sets in every layout glandseg reads, made from a few GlaS *training* images.

    python -m scripts.example_datasets [--glas DIR] [--out cache/datasets]

writes ``plain/`` (``images/`` + ``labels/``; one image at 2x as a TIFF that records 0.31 µm/px, its label
map an OME-TIFF), ``side/`` (``<stem>.png`` beside ``<stem>_labels.png``), ``qupath/`` (``<stem>.geojson``
beside each image; the 2x image's pixel size in ``dataset.json``) and ``crag/`` (``train/Images`` +
``train/Annotation``, ``valid/...``). Each has a ``dataset.json`` with the pixel size and the patients and grades of
GlaS ``Grade.csv``. No GlaS test or val image is used (``TRAIN_NAMES``). The tests build the same
sets with :func:`write_sets` (from GlaS, or from synthetic glands when GlaS is absent).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from glandseg_core.datasets.glas import load_item, read_grades, read_patients, val_names
from glandseg_core.datasets.glas.discovery import find_items
from glandseg_core.imaging.formats import write_label_tiff
from glandseg_core.imaging.io import write_label_png, write_png
from glandseg_core.outputs.export import to_geojson

TRAIN_NAMES = ("train_1", "train_2", "train_3", "train_4", "train_7", "train_8")  # none in val_split.txt
TWICE = "train_3"  # the image stored at 2x (0.31 µm/px)
MPP = 0.62
Pair = tuple[str, np.ndarray, np.ndarray]  # (name, uint8[H, W, 3] image, int32[H, W] label map)


def glas_pairs(glas: Path, names: Sequence[str] = TRAIN_NAMES) -> list[Pair]:
    """The GlaS training images ``names`` and their label maps (never a val or test image)."""
    if set(names) & (set(val_names()) | {n for n in names if not n.startswith("train_")}):
        raise ValueError("only GlaS train images outside the val split may be used")
    items = {g.name: g for g in find_items(glas, ("train",))}
    return [(n, *load_item(items[n])) for n in names]  # type: ignore[misc]


def _twice(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return image.repeat(2, 0).repeat(2, 1), labels.repeat(2, 0).repeat(2, 1)


def _write_tiff(path: Path, image: np.ndarray, mpp: float) -> None:
    """An RGB TIFF recording ``mpp`` as its resolution (pixels per centimetre)."""
    tifffile.imwrite(
        path, image, photometric="rgb", resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER"
    )


def _spec(root: Path, pairs: Sequence[Pair], info: dict[str, dict], **extra: object) -> None:
    images = {n: dict(info[n]) for n, _, _ in pairs if n in info}
    spec = {"mpp": MPP, "val_fraction": 0.34, "seed": 0, "images": images, **extra}
    (root / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n")


def write_plain(root: Path, pairs: Sequence[Pair], info: dict[str, dict]) -> Path:
    """``images/`` + ``labels/``; ``TWICE`` at 2x as TIFF (0.31 µm/px in its header) + OME-TIFF label map."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, image, labels in pairs:
        if name == TWICE:
            image, labels = _twice(image, labels)
            _write_tiff(root / "images" / f"{name}.tif", image, MPP / 2)
            write_label_tiff(root / "labels" / f"{name}.ome.tif", labels, mpp=MPP / 2)
        else:
            write_png(root / "images" / f"{name}.png", image)
            write_label_png(root / "labels" / f"{name}.png", labels)
    _spec(root, pairs, info)
    return root


def write_side(root: Path, pairs: Sequence[Pair], info: dict[str, dict]) -> Path:
    """``<stem>.png`` beside ``<stem>_labels.png`` (every image at 0.62 µm/px)."""
    root.mkdir(parents=True)
    for name, image, labels in pairs:
        write_png(root / f"{name}.png", image)
        write_label_png(root / f"{name}_labels.png", labels)
    _spec(root, pairs, info)
    return root


def write_qupath(root: Path, pairs: Sequence[Pair], info: dict[str, dict]) -> Path:
    """``<stem>.png`` + ``<stem>.geojson`` (QuPath export of the glands); ``TWICE`` at 2x, its mpp in JSON."""
    root.mkdir(parents=True)
    for name, image, labels in pairs:
        if name == TWICE:
            image, labels = _twice(image, labels)
        write_png(root / f"{name}.png", image)
        (root / f"{name}.geojson").write_text(json.dumps(to_geojson(labels)))
    _spec(root, pairs, info)
    spec = json.loads((root / "dataset.json").read_text())
    spec["images"].setdefault(TWICE, {})["mpp"] = MPP / 2
    (root / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n")
    return root


def write_crag(root: Path, pairs: Sequence[Pair], info: dict[str, dict], n_valid: int = 2) -> Path:
    """CRAG's layout: the first pairs in ``train/``, the last ``n_valid`` in ``valid/`` (CRAG's test part)."""
    for part, chunk in (("train", pairs[:-n_valid]), ("valid", pairs[-n_valid:])):
        (root / part / "Images").mkdir(parents=True)
        (root / part / "Annotation").mkdir()
        for name, image, labels in chunk:
            Image.fromarray(image).save(root / part / "Images" / f"{name}.png")
            write_label_png(root / part / "Annotation" / f"{name}.png", labels)
    _spec(root, pairs, info, val_fraction=0.25)
    return root


def write_sets(out: Path, pairs: Sequence[Pair], info: dict[str, dict] | None = None) -> dict[str, Path]:
    """Every example set under ``out``: ``{"plain": ..., "side": ..., "qupath": ..., "crag": ...}``; ``info``:
    ``dataset.json``'s ``images`` entries (group, grade) by name."""
    writers = {"plain": write_plain, "side": write_side, "qupath": write_qupath, "crag": write_crag}
    return {k: w(out / k, pairs, info or {}) for k, w in writers.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--glas", type=Path, default=Path(os.environ.get("GLANDSEG_DATA", "data/glas")))
    p.add_argument("--out", type=Path, default=Path("cache/datasets"))
    args = p.parse_args(argv)
    patients, grades = read_patients(args.glas), read_grades(args.glas)
    info = {
        n: {"group": f"patient-{patients[n]}", "grade": grades[n]} for n in TRAIN_NAMES if n in patients
    }
    for layout, path in write_sets(args.out, glas_pairs(args.glas), info).items():
        print(f"{layout}: {path}")


if __name__ == "__main__":
    main()
