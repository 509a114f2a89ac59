"""GlaS (Warwick-QU) discovery and loading.

The release is a flat folder: ``train_N.bmp`` + ``train_N_anno.bmp``, ``testA_*``, ``testB_*`` and ``Grade.csv``
(old-Mac CR line endings). PNG, TIFF, WebP or JPEG files with the same stems work too (see ``pack``). Annotations are instance label maps:
0 = background, 1..N = glands.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ...errors import DatasetError, ImageError
from ...imaging.io import read_image, read_label_map

SPLITS = ("train", "val", "testA", "testB")
SPLIT_CHOICES = (*SPLITS, "all")
IMAGE_EXTS = (".bmp", ".png", ".tif", ".tiff", ".webp", ".jpg", ".jpeg")  # the last three: packed copies
VAL_SPLIT_FILE = Path(__file__).with_name("val_split.txt")
_NAME_RE = re.compile(r"^(train|testA|testB)_(\d+)$")


@dataclass(frozen=True)
class GlasItem:
    """One GlaS image: ``name`` like ``testA_3``, its split, grade and file paths."""

    name: str
    split: str
    grade: str  # "benign", "malignant" or "unknown"
    image_path: Path
    anno_path: Path | None


def data_root(arg: str | os.PathLike | None = None) -> Path:
    """Resolve the GlaS folder: ``arg``, else ``$GLANDSEG_DATA``.

    Raises:
        DatasetError: when neither is given or the folder does not exist.
    """
    raw = arg if arg is not None else os.environ.get("GLANDSEG_DATA")
    if not raw:
        raise DatasetError("no GlaS folder given: pass --data DIR or set GLANDSEG_DATA")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DatasetError(f"GlaS folder {root} does not exist or is not a folder")
    return root


@lru_cache(maxsize=8)
def _read_grade_csv(path: str, mtime: float) -> dict[str, tuple[str, str]]:
    """Image name -> (patient ID, GlaS grade lower-cased) of each row of ``Grade.csv``."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    rows: dict[str, tuple[str, str]] = {}
    for line in re.split(r"\r\n|\r|\n", text)[1:]:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            rows[parts[0]] = (parts[1], parts[2].lower())
    return rows


def _grade_rows(root: Path) -> dict[str, tuple[str, str]]:
    path = root / "Grade.csv"
    if not path.is_file():
        return {}
    return _read_grade_csv(str(path), path.stat().st_mtime)


def read_grades(root: Path) -> dict[str, str]:
    """Map image name -> ``benign``/``malignant`` from ``Grade.csv`` (any line ending); empty if absent."""
    return {name: grade for name, (_, grade) in _grade_rows(root).items()}


def read_patients(root: Path) -> dict[str, str]:
    """Map image name -> patient ID from ``Grade.csv``; empty if absent."""
    return {name: patient for name, (patient, _) in _grade_rows(root).items() if patient}


def val_names() -> tuple[str, ...]:
    """The fixed validation images carved from ``train`` (committed in ``val_split.txt``)."""
    lines = VAL_SPLIT_FILE.read_text().splitlines()
    return tuple(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))


def _index_files(root: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Image files by stem, and the stems held by more than one file (``testB_1_anno.bmp`` and ``.png``)."""
    found: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            found.setdefault(p.stem, []).append(p)
    return {s: ps[0] for s, ps in found.items()}, {s: ps for s, ps in found.items() if len(ps) > 1}


def _same_stem(twins: dict[str, list[Path]], prefixes: set[str]) -> str | None:
    """One line naming the files that share a stem in the wanted splits (which one is meant is unknowable)."""
    clashes = [
        " and ".join(p.name for p in ps)
        for s, ps in sorted(twins.items(), key=lambda x: _sort_key(x[0].removesuffix("_anno")))
        if (m := _NAME_RE.match(s.removesuffix("_anno"))) and m.group(1) in prefixes
    ]
    if not clashes:
        return None
    more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
    return f"{'; '.join(clashes[:3])}{more} share a name; keep one of each"


def _sort_key(name: str) -> tuple[str, int]:
    m = _NAME_RE.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def find_items(root: str | os.PathLike | None, splits: tuple[str, ...] | list[str]) -> list[GlasItem]:
    """List the images of ``splits`` (``train`` excludes the ``val`` images; ``all`` = train+val+testA+testB).

    Only the files of the requested splits are needed.

    Raises:
        DatasetError: naming the missing or unpaired files, and files of the wanted splits that share a stem
            (``testB_1_anno.bmp`` and ``testB_1_anno.png``: which one is the annotation cannot be guessed).
    """
    root = data_root(root)
    wanted: list[str] = []
    for s in splits:
        if s not in SPLIT_CHOICES:
            raise DatasetError(f"unknown split {s!r}; choose from {', '.join(SPLIT_CHOICES)}")
        for t in SPLITS if s == "all" else (s,):
            if t not in wanted:
                wanted.append(t)
    files, twins = _index_files(root)
    grades = read_grades(root)
    val = set(val_names())
    items: list[GlasItem] = []
    problems: list[str] = []
    same = _same_stem(twins, {"train" if s in ("train", "val") else s for s in wanted})
    if same:
        problems.append(same)
    for split in wanted:
        prefix = "train" if split in ("train", "val") else split
        stems = [
            s
            for s in files
            if _NAME_RE.match(s) and _NAME_RE.match(s).group(1) == prefix  # type: ignore[union-attr]
        ]
        if split == "val":
            missing_val = sorted(val - set(stems), key=_sort_key)
            if missing_val:
                problems.append(f"validation images missing: {', '.join(missing_val[:5])}")
            stems = [s for s in stems if s in val]
        elif split == "train":
            stems = [s for s in stems if s not in val]
        if not stems:
            problems.append(f"no {prefix}_N images for split {split}")
        for stem in sorted(stems, key=_sort_key):
            anno = files.get(f"{stem}_anno")
            if anno is None:
                problems.append(f"{files[stem].name} has no {stem}_anno file")
                continue
            items.append(GlasItem(stem, split, grades.get(stem, "unknown"), files[stem], anno))
        orphans = [
            s[: -len("_anno")]
            for s in files
            if s.endswith("_anno") and s.startswith(prefix + "_") and s[: -len("_anno")] not in files
        ]
        if orphans:
            problems.append(
                f"annotations without image: {', '.join(sorted(orphans, key=_sort_key)[:5])}"
            )
    if problems:
        raise DatasetError(f"GlaS folder {root}: " + "; ".join(problems))
    return items


def load_item(item: GlasItem) -> tuple[np.ndarray, np.ndarray]:
    """Read one image and its label map.

    Returns:
        image (uint8[H, W, 3]) and labels (int32[H, W]; 0=background, 1..N glands).

    Raises:
        DatasetError: when a file is unreadable or the annotation's size differs from the image's.
    """
    try:
        image = read_image(item.image_path)
        labels = read_label_map(item.anno_path, shape=image.shape[:2]) if item.anno_path else None
    except ImageError as e:
        raise DatasetError(str(e)) from e
    if labels is None:
        raise DatasetError(f"{item.name}: no annotation")
    return image, labels


def item_by_name(root: str | os.PathLike | None, name: str) -> GlasItem:
    """Find one GlaS image by name (e.g. ``testA_3``)."""
    m = _NAME_RE.match(name)
    if not m:
        raise DatasetError(f"{name!r} is not a GlaS image name (train_N, testA_N, testB_N)")
    split = m.group(1)
    if split == "train":
        split = "val" if name in set(val_names()) else "train"
    for item in find_items(root, (split,)):
        if item.name == name:
            return item
    raise DatasetError(f"{name} not found in the GlaS folder")


def single_id_annotations(items: list[GlasItem]) -> list[str]:
    """Names of images whose annotation gives every gland one id (a single id over several separate pieces).

    The official metrics never relabel by connectivity, so such an image holds one ground-truth object, and a
    per-gland segmentation of it scores F1 0 (GlaS ships four in Test B). Reports flag them; scores are unchanged.
    """
    names = []
    for item in items:
        if item.anno_path is None:
            continue
        labels = read_label_map(item.anno_path)
        ids = np.unique(labels[labels > 0])
        if len(ids) == 1 and ndi.label(labels > 0)[1] > 1:
            names.append(item.name)
    return names
