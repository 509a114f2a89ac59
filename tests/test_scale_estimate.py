"""The pixel size estimated from nuclear size (``imaging.scale_estimate``) and the warning ``glandseg predict`` gives."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from glandseg_core.imaging import scale_estimate as se
from glandseg_core.imaging.io import read_image
from tests import cliproc
from tests.helpers import REPO

SAMPLE = REPO / "samples" / "testA_1.png"


def pink_discs(radius: int, shape: tuple[int, int] = (384, 576), seed: int = 0) -> np.ndarray:
    """Purple discs of ``radius`` px, a jittered grid 4 radii apart, on a pink background (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = yy**2 + xx**2 <= radius * radius
    mask = np.zeros((shape[0] + 4 * radius, shape[1] + 4 * radius), bool)
    step = 4 * radius
    for cy in range(step // 2, shape[0] - step // 2 + 1, step):
        for cx in range(step // 2, shape[1] - step // 2 + 1, step):
            y, x = rng.integers(-radius // 2, radius // 2 + 1, 2) + (cy, cx)
            mask[y : y + 2 * radius + 1, x : x + 2 * radius + 1] |= disc
    mask = mask[radius : radius + shape[0], radius : radius + shape[1]]
    img = np.where(mask[..., None], np.array([90.0, 60, 150]), np.array([235.0, 160, 200]))
    img = ndi.gaussian_filter(img, (0.7, 0.7, 0)) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.LANCZOS))


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return read_image(SAMPLE)


@pytest.mark.parametrize("radius", [3, 6, 10])
def test_discs_of_known_size_give_the_expected_scale(radius: int) -> None:
    # a disc of radius r peaks at sigma = r / sqrt(2); GlaS nuclei peak at NUCLEUS_SIGMA_PX at 0.62 µm/px
    expected = se.GLAS_MPP * se.NUCLEUS_SIGMA_PX * math.sqrt(2) / radius
    est = se.estimate_mpp(pink_discs(radius))
    assert est.reliable, est.reason
    assert est.mpp == pytest.approx(expected, rel=0.12)
    assert est.spread < 1.1
    assert est.n_nuclei >= 30


def test_the_estimate_follows_the_magnification() -> None:
    small, large = se.estimate_mpp(pink_discs(4)), se.estimate_mpp(pink_discs(8))
    assert small.mpp / large.mpp == pytest.approx(2.0, rel=0.1)


def test_glas_sample_at_its_pixel_size_is_silent(sample: np.ndarray) -> None:
    est = se.estimate_mpp(sample)
    assert est.reliable, est.reason
    assert est.mpp == pytest.approx(0.62, rel=0.25)
    assert se.check_mpp(sample, 0.62, estimate=est) is None


@pytest.mark.slow
def test_glas_sample_enlarged_twice_given_as_0_62_is_flagged(sample: np.ndarray) -> None:
    big = resized(sample, 2.0)
    warning = se.check_mpp(big, 0.62)
    assert warning is not None and "0.62 µm/px" in warning and "finer" in warning
    assert "\n" not in warning
    assert se.check_mpp(big, 0.31) is None  # the right pixel size


def test_glas_sample_halved_given_as_0_62_is_flagged(sample: np.ndarray) -> None:
    small = resized(sample, 0.5)
    warning = se.check_mpp(small, 0.62)
    assert warning is not None and "coarser" in warning


@pytest.mark.slow
def test_large_images_are_measured_within_bounds(sample: np.ndarray) -> None:
    """A 4x image goes through the reduced copy, a 3x3 mosaic at 1x through the centred crop."""
    assert se.estimate_mpp(resized(sample, 4.0)).mpp == pytest.approx(0.155, rel=0.3)
    mosaic = np.tile(sample, (3, 3, 1))
    assert mosaic.shape[0] * mosaic.shape[1] > 4 * se.WORK_PIXELS
    assert se.estimate_mpp(mosaic).mpp == pytest.approx(se.estimate_mpp(sample).mpp, rel=0.15)


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("white", np.full((400, 600, 3), 255, np.uint8)),
        ("pink", np.tile(np.array([235, 160, 200], np.uint8), (400, 600, 1))),
        ("tiny", np.full((20, 20, 3), 128, np.uint8)),
        ("noise", np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)),
    ],
)
def test_blank_images_are_unreliable_and_never_warn(name: str, image: np.ndarray) -> None:
    est = se.estimate_mpp(image)
    assert not est.reliable and est.reason
    assert se.check_mpp(image, 0.62) is None
    assert se.check_mpp(image, 5.0) is None


def test_few_nuclei_are_unreliable() -> None:
    img = np.tile(np.array([235, 160, 200], np.uint8), (300, 300, 1))
    img[100:110, 100:110] = (90, 60, 150)
    img[200:210, 150:160] = (90, 60, 150)
    est = se.estimate_mpp(img)
    assert not est.reliable
    assert se.check_mpp(img, 5.0, estimate=est) is None


def test_check_mpp_factor_and_argument_errors() -> None:
    est = se.MppEstimate(0.62, 1.0, 100)
    img = np.zeros((8, 8, 3), np.uint8)
    assert se.check_mpp(img, 0.62 * 1.4, estimate=est) is None
    assert se.check_mpp(img, 0.62 * 1.6, estimate=est) is not None
    assert se.check_mpp(img, 0.62 * 1.6, factor=2.0, estimate=est) is None
    assert se.check_mpp(img, 0.0, estimate=est) is None
    with pytest.raises(ValueError, match="RGB"):
        se.estimate_mpp(np.zeros((10, 10), np.uint8))


@pytest.mark.slow
def test_predict_warns_on_stderr_when_the_pixel_size_disagrees(
    untrained_unet_run: Path, tmp_path: Path, sample: np.ndarray
) -> None:
    from glandseg_core.checkpoints import export_model

    model = export_model(untrained_unet_run, tmp_path / "model")
    # a 600×800 corner of the sample at twice its size: about 140 nuclei, two times too big
    image = tmp_path / "big.png"
    Image.fromarray(resized(sample, 2.0)[:600, :800]).save(image)
    proc_env = {
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PATH": "/usr/bin:/bin",
    }
    proc_env["GLANDSEG_LOCK_DIR"] = str(tmp_path / "locks")
    stderr = {}
    for mpp in (
        "0.62",
        "0.31",
    ):  # each in a process of its own, forked from a warm server (tests/cliproc.py)
        args = ["predict", "--model", model, "--no-bar", "--out", tmp_path / f"out{mpp}", "--mpp", mpp]
        args.append(image)
        proc = cliproc.run(args, proc_env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        stderr[mpp] = proc.stderr
    assert "big.png: pixel size 0.62 µm/px looks wrong" in stderr["0.62"]
    assert "looks wrong" not in stderr["0.31"]


def test_dashboard_mpp_check_reads_the_original_pixel_size(sample: np.ndarray) -> None:
    from glandseg_dashboard.pickers import Picked, mpp_check

    picked = Picked("k", "testA_1", sample, None, "unknown", sample.shape[:2])
    hint, warning = mpp_check(picked, 0.62)
    assert hint.startswith("Nuclei suggest ≈ 0.") and warning is None
    assert mpp_check(picked, 0.31)[1] is not None
    halved = Picked("k2", "big", resized(sample, 0.5), None, "unknown", sample.shape[:2], scale=2.0)
    assert mpp_check(halved, 0.62)[1] is None  # the working copy is halved: its pixels are 1.24 µm
    blank = Picked("k3", "blank", np.full((300, 400, 3), 255, np.uint8), None, "unknown", (300, 400))
    hint, warning = mpp_check(blank, 0.62)
    assert hint.startswith("Nuclei: no estimate") and warning is None


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny untrained models and private folders for the Compare page (as tests/test_app.py's ``env``)."""
    from tests.test_app import make_tiny_models

    make_tiny_models(tmp_path / "models")
    for name in ("models", "runs", "annotations", "locks", "cache"):
        var = {"locks": "LOCK_DIR"}.get(name, name.upper())
        monkeypatch.setenv(f"GLANDSEG_{var}", str(tmp_path / name))
    for var in ("GLANDSEG_DATA", "GLANDSEG_DATA_ROOT", "GLANDSEG_ALLOW_ANY_PATH", "GLANDSEG_READONLY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GLANDSEG_MEMORY_BUDGET_MB", "4096")


@pytest.mark.slow
@pytest.mark.usefixtures("page_env")
def test_compare_page_shows_the_estimate_and_warns() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / "compare.py"), default_timeout=400).run()
    assert not at.exception
    assert any("Nuclei suggest" in str(c.value) for c in at.caption)
    assert not any("Check the pixel size" in str(w.value) for w in at.warning)
    at.number_input(key="cmp_mpp_sample:testA_1").set_value(0.31).run()
    assert not at.exception
    assert any("Check the pixel size" in str(w.value) for w in at.warning)
