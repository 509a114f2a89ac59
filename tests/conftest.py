"""Shared fixtures: synthetic glands, a tiny GlaS-like folder, the real GlaS folder, and ``--runslow``.

Everything here is small enough for two CPU cores: images are 64×96, models are built by the tests themselves.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
GLANDS_RGB = (120, 50, 140)  # haematoxylin-ish purple inside glands
STROMA_RGB = (235, 170, 200)  # pinkish eosin outside

# ------------------------------------------------------------------------------------- slow marker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slow test, runs only with --runslow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for the test (tiny models: threads only add overhead on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ synthetic data


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


@pytest.fixture
def synthetic_glands() -> tuple[np.ndarray, np.ndarray]:
    """(image uint8[64, 96, 3], labels int32[64, 96]) with 4 ellipse glands, ids 1..4."""
    return make_glands()


# ----------------------------------------------------------------------------------- fake GlaS folder

VAL_NAMES = tuple(
    ln.strip()
    for ln in (REPO / "glandseg_core" / "val_split.txt").read_text().splitlines()
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


@pytest.fixture
def fake_glas_dir(tmp_path: Path) -> Path:
    """A tiny GlaS-like folder: train_1..4, the 15 validation images, testA_1, testB_1 (64×96 BMP), Grade.csv (CR)."""
    return write_fake_glas(tmp_path / "glas")


@pytest.fixture
def fake_glas_factory(tmp_path: Path) -> Callable[..., Path]:
    """``factory(subdir="glas", names=..., ext=".bmp", size=(64, 96))`` -> a fresh fake GlaS folder."""

    def factory(subdir: str = "glas", names: Iterable[str] = FAKE_NAMES, **kw: object) -> Path:
        return write_fake_glas(tmp_path / subdir, names, **kw)  # type: ignore[arg-type]

    return factory


@pytest.fixture(scope="session")
def shared_fake_glas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only fake GlaS folder shared by the tests that only read it (never modify it)."""
    return write_fake_glas(tmp_path_factory.mktemp("shared") / "glas")


# --------------------------------------------------------------------------------------- real GlaS


def _real_glas() -> Path:
    env = os.environ.get("GLANDSEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "glas"


@pytest.fixture(scope="session")
def glas_dir() -> Path:
    """The real GlaS release ($GLANDSEG_DATA, else ../shared/glas); skips when it is absent."""
    root = _real_glas()
    if not (root / "Grade.csv").is_file() or not (root / "train_1.bmp").is_file():
        pytest.skip(f"GlaS data not found at {root} (set GLANDSEG_DATA)")
    return root


# ------------------------------------------------------------------------------------ tiny training


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private training-lock folder, so tests never touch the machine-wide lock of real trainings."""
    d = tmp_path / "locks"
    d.mkdir()
    monkeypatch.setenv("GLANDSEG_LOCK_DIR", str(d))
    return d


def tiny_unet_config(**overrides: object):
    """A U-Net config that trains in seconds on the fake folder (64×96 images, scale 1, fp32)."""
    import dataclasses

    from glandseg_core.config import PRESETS

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
    return dataclasses.replace(PRESETS["glandseg-unet"], **base)


@pytest.fixture
def tiny_unet_cfg() -> Callable[..., object]:
    """``tiny_unet_cfg(**overrides) -> RunConfig`` for a tiny, fast U-Net."""
    return tiny_unet_config


@pytest.fixture(scope="session")
def untrained_unet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (config.json + best.pt, no postprocess.json) holding an untrained tiny U-Net; no training."""
    from dataclasses import asdict

    from glandseg_core.config import save_config
    from glandseg_core.models import build_model

    run_dir = tmp_path_factory.mktemp("untrained_run")
    cfg = tiny_unet_config(unet_scale=0.5, unet_depth=3)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_config(cfg, run_dir / "config.json")
    torch.save({"model": model.state_dict(), "config": asdict(cfg), "epoch": 0}, run_dir / "best.pt")
    return run_dir
