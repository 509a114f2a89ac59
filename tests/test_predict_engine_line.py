"""``glandseg predict`` says which engine ran, once, on stderr (the log), whichever it is (issue #22, item 3).

In-process with a tiny untrained U-Net on a 64×96 image: the suite's ``auto`` means PyTorch
(``GLANDSEG_ENGINE=torch``, tests/conftest.py); another engine is stood in for by ``engine_of``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

import glandseg_core.engines as engines
from glandseg_core.cli import main
from tests.test_app import make_tiny_models


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("models")) / "unet"


def engine_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine")]


@pytest.mark.parametrize(("runs", "said"), [("torch", "PyTorch"), ("onnx", "ONNX Runtime")])
def test_predict_names_the_engine_once(
    runs: str,
    said: str,
    unet: Path,
    tmp_path: Path,
    synthetic_glands: tuple,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if runs != "torch":  # the network stays PyTorch's; only the name reported changes
        monkeypatch.setattr(engines, "engine_of", lambda model: runs)
    image, _ = synthetic_glands
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image[::-1]).save(tmp_path / "b.png")
    with caplog.at_level(logging.INFO, logger="glandseg"):
        code = main(["predict", "--model", str(unet), "--out", str(tmp_path / "out"), "--no-bar",
                     str(tmp_path / "a.png"), str(tmp_path / "b.png")])  # fmt: skip
    assert code == 0
    assert engine_lines(caplog) == [f"engine: {said}"]  # once for the run, not per image
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "b.png").is_file()
