"""Shared fixtures: synthetic glands, a tiny GlaS-like folder, the real GlaS folder, and ``--runbrowser``.

Markers (registered in pyproject): ``slow`` tests run in the full suite (``bash scripts/run_tests.sh``, CI) and
are left out of the fast lane (``bash scripts/run_tests.sh -m "not slow"``); ``browser`` tests drive Chromium
through the dashboard and run only with ``--runbrowser``.

Everything here is small enough for two CPU cores: images are 64×96, models are built by the tests themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import FAKE_NAMES, make_glands, real_glas, tiny_unet_config, write_fake_glas

# The suite runs PyTorch (what `auto` means here, subprocesses included): exporting every tiny model it builds to
# an engine would cost seconds each; tests/test_engines.py asks for the engines by name.
os.environ.setdefault("GLANDSEG_ENGINE", "torch")

# ---------------------------------------------------------------------------------- browser marker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runbrowser",
        action="store_true",
        default=False,
        help="run the Chromium flows (marked browser)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runbrowser"):
        return
    skip = pytest.mark.skip(reason="browser flow: needs --runbrowser")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for the test (tiny models: threads only add overhead on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------ synthetic data


@pytest.fixture
def synthetic_glands() -> tuple[np.ndarray, np.ndarray]:
    """(image uint8[64, 96, 3], labels int32[64, 96]) with 4 ellipse glands, ids 1..4."""
    return make_glands()


# ----------------------------------------------------------------------------------- fake GlaS folder


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


@pytest.fixture(scope="session")
def glas_dir() -> Path:
    """The real GlaS release ($GLANDSEG_DATA, else ../shared/glas); skips when it is absent."""
    root = real_glas()
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
