"""Test helpers shared by the test modules (plain functions and constants; the fixtures are in conftest.py).

Import them as ``from tests.helpers import make_glands`` (``tests`` is a package).
"""

from __future__ import annotations

import contextlib
import gc
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
GLANDS_RGB = (120, 50, 140)  # haematoxylin-ish purple inside glands
STROMA_RGB = (235, 170, 200)  # pinkish eosin outside


def make_glands(
    h: int = 64, w: int = 96, n: int = 4, seed: int = 0, first_id: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """A pinkish RGB image (uint8[h, w, 3]) with ``n`` purple ellipses and their label map (int32[h, w]).

    Ellipses are drawn in id order, so a later one may cover part of an earlier one (touching glands).
    Ids are ``first_id .. first_id + n - 1``; each gland has a slightly lighter lumen, and the image has noise.
    """
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int32)
    for k in range(n):
        ry, rx = rng.uniform(0.1, 0.2) * h, rng.uniform(0.08, 0.16) * w
        cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
        theta = rng.uniform(0, np.pi)
        y, x = rr - cy, cc - cx
        u = (x * np.cos(theta) + y * np.sin(theta)) / rx
        v = (-x * np.sin(theta) + y * np.cos(theta)) / ry
        labels[u**2 + v**2 <= 1.0] = first_id + k
    image = np.empty((h, w, 3), np.float32)
    image[:] = STROMA_RGB
    image[labels > 0] = GLANDS_RGB
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


VAL_NAMES = tuple(
    ln.strip()
    for ln in (REPO / "glandseg_core" / "datasets" / "glas" / "val_split.txt").read_text().splitlines()
    if ln.strip() and not ln.startswith("#")
)
FAKE_TRAIN = ("train_1", "train_2", "train_3", "train_4")  # not in val_split.txt
FAKE_NAMES = (*FAKE_TRAIN, *VAL_NAMES, "testA_1", "testB_1")


def grade_csv_bytes(grades: dict[str, str]) -> bytes:
    """A Grade.csv like the GlaS release: header + one row per image, old-Mac CR-only line endings."""
    rows = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    rows += [f"{n},{i + 1}, {g}, {'adenomatous' if g == 'benign' else 'moderately differentiated'}"
             for i, (n, g) in enumerate(grades.items())]  # fmt: skip
    return ("\r".join(rows) + "\r").encode()


def fake_grade(name: str) -> str:
    """Deterministic grade per image name."""
    return "benign" if zlib.crc32(name.encode()) % 2 else "malignant"


def write_fake_glas(
    root: Path,
    names: Iterable[str] = FAKE_NAMES,
    *,
    ext: str = ".bmp",
    size: tuple[int, int] = (64, 96),
    grades: bool = True,
) -> Path:
    """Write ``<name><ext>`` (RGB) + ``<name>_anno<ext>`` (8-bit label map) for each name, and Grade.csv."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(names)
    for name in names:
        seed = zlib.crc32(name.encode())
        image, labels = make_glands(*size, n=3 + seed % 3, seed=seed)
        Image.fromarray(image).save(root / f"{name}{ext}")
        Image.fromarray(labels.astype(np.uint8)).save(root / f"{name}_anno{ext}")
    if grades:
        (root / "Grade.csv").write_bytes(grade_csv_bytes({n: fake_grade(n) for n in names}))
    return root


def real_glas() -> Path:
    """The real GlaS folder: $GLANDSEG_DATA, else ../shared/glas (it may be absent)."""
    env = os.environ.get("GLANDSEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "glas"


def tiny_unet_config(**overrides: object):
    """A U-Net config that trains in seconds on the fake folder (64×96 images, scale 1, fp32)."""
    from glandseg_core.config import PRESETS, replace_config

    base = {
        "name": "tiny-unet",
        "unet_base": 4,
        "unet_depth": 2,
        "unet_scale": 1.0,
        "train_epochs": 2,
        "train_batch_size": 2,
        "train_steps_per_epoch": 2,
        "train_crop_size": 64,
        "train_warmup_steps": 0,
        "train_max_images": 2,
        "train_augment": "flip",
        "train_amp": False,
        "train_lr": 1e-2,
    }
    base.update(overrides)
    return replace_config(PRESETS["glandseg-unet"], **base)


class Evil:
    """Unpickling this runs a shell command: ``weights_only=True`` loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@contextlib.contextmanager
def garbage_cycle() -> Iterator[list[int]]:
    """Automatic garbage collection off, and one unreachable reference cycle whose destructor records the pid of
    the process that collects it: the yielded list, read after the block (tests that no forked worker collects
    its parent's garbage)."""
    collected: list[int] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            collected.append(os.getpid())

    gc.disable()  # only an explicit collection may find the cycle
    try:
        Cycle()
        yield collected
    finally:
        gc.enable()
