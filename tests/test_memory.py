"""Tests for glandseg_core.memory: one memory estimate, after every resampling (issue #23 items 1, 2, 7, 8).

The memory reproductions run in a child process under an address-space limit (``RLIMIT_AS``; torch reserves
much more address space than it uses, so the limit is 6 GiB) and assert its true peak (``ru_maxrss``) stays
under 3 GB: each case must be refused before anything large is allocated.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from glandseg_core import memory
from glandseg_core.checkpoints import read_checkpoint
from glandseg_core.config import get_preset, load_config, replace_config
from glandseg_core.errors import ConfigError, ImageError, ModelError
from glandseg_core.segmenters.base import Plan

ROOT = Path(__file__).resolve().parents[1]
UNET = ROOT / "trained_models" / "unet"
GLAS_SHAPE = (522, 775)  # testA_1
PEAK_LIMIT = 3 * 10**9
AS_LIMIT = 6 * 2**30


WRAPPER = """
import resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
proc = subprocess.run(sys.argv[2:], preexec_fn=cap, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
sys.stderr.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def run_limited(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of ``python args`` in a child under :data:`AS_LIMIT` (a fresh
    wrapper process runs it, so its ``RUSAGE_CHILDREN`` peak is this child's alone)."""
    child_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(AS_LIMIT), sys.executable, *args],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    code, peak = out.stdout.split()
    return int(code), out.stderr, int(peak)


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------------------------------ the estimate


def test_the_estimate_counts_the_pixels_after_resampling() -> None:
    """Item 1: testA_1 at 10 µm/px is 16x larger per side at the model's 0.62 µm/px; a 1536 MB budget that
    accepts it at its own pixel size refuses it then, and says which pixel size would fit."""
    cfg = load_config(UNET / "config.json")
    budget = memory.Budget(1536 * 2**20, "test")
    own = memory.estimate_config(cfg, GLAS_SHAPE, None, tta=False)
    memory.check(own, budget, "testA_1.bmp", None, 0.62)  # fits
    big = memory.estimate_config(cfg, GLAS_SHAPE, 10.0, tta=False)
    assert big.working_shape == (8419, 12500) and big.bytes > 6 * 2**30
    with pytest.raises(ImageError) as e:
        memory.check(big, budget, "testA_1.bmp", 10.0, 0.62)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("testA_1.bmp: 12500×8419 px at the model's 0.62 µm/px")
    assert "1.5 GB (test)" in msg and "µm/px, or a crop" in msg
    fits = float(msg.split("up to ")[1].split(" µm/px")[0])
    assert 0.62 < fits < 10
    memory.check(
        memory.estimate_config(cfg, GLAS_SHAPE, fits * 0.98, tta=False), budget, "x", fits, 0.62
    )


def test_tta_and_resampled_inputs_cost_more_and_kinds_declare_their_own() -> None:
    cfg = get_preset("glandseg-unet")
    plan = Plan((1000, 1000), 1, 1)
    cost = cfg.kind.memory_cost(cfg)
    assert (
        cost.base_bytes == 1024 * 2**20 and cost.work_bytes_per_pixel == 80
    )  # the measured coefficients
    plain = memory.estimate(cost, plan, (1000, 1000))
    tta = memory.estimate(cost, Plan((1000, 1000), 1, 8), (1000, 1000))
    shrunk = memory.estimate(cost, Plan((1000, 1000), 1, 1, 0.5), (2000, 2000))
    assert plain.bytes < tta.bytes and plain.bytes < shrunk.bytes
    wide = replace_config(cfg, unet_base=128, unet_scale=2.0)
    assert wide.kind.memory_cost(wide).base_bytes > 4 * cost.base_bytes
    rcnn = get_preset("poster-maskrcnn")
    assert rcnn.kind.memory_cost(rcnn).base_bytes > 2**30


def test_the_budget_follows_the_setting_then_the_available_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(memory.BUDGET_ENV, raising=False)
    monkeypatch.delenv(memory.FRACTION_ENV, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 10 * 2**30)
    assert memory.current_budget().bytes == 8 * 2**30  # glandseg predict: 80 % of what is available
    assert memory.current_budget(fraction=0.25).bytes == int(2.5 * 2**30)
    assert memory.current_budget(512).bytes == 512 * 2**20
    monkeypatch.setenv(memory.BUDGET_ENV, "1536")
    assert memory.current_budget().bytes == 1536 * 2**20
    monkeypatch.setenv(memory.BUDGET_ENV, "lots")
    with pytest.raises(ConfigError, match="GLANDSEG_MEMORY_BUDGET_MB=lots: expected a positive number"):
        memory.current_budget()


@pytest.mark.slow
def test_available_memory_respects_an_address_space_limit() -> None:
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30));"
        "from glandseg_core import memory; print(memory.available_memory())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert 0 < int(out.stdout) < 8 * 2**30


# ------------------------------------------------------------------------------------------ predict


def _png(path: Path, shape: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_predict_refuses_an_image_enlarged_past_the_budget(tmp_path: Path) -> None:
    """Items 1 and 2: a GlaS-sized PNG with --mpp 10, and a 2.25 MP TIFF whose resolution tags say 10 µm/px,
    are refused in one line before anything large is allocated (a child under a memory limit)."""
    png = _png(tmp_path / "a.png", GLAS_SHAPE)
    code, err, peak = run_limited(
        "-m", "glandseg_core", "predict", "--model", str(UNET), "--out", str(tmp_path / "o1"),
        "--no-bar", "--mpp", "10", "--memory-budget", "1536", str(png),
    )  # fmt: skip
    line = one_line(err)
    assert code == 1 and str(png) in line and "needs about" in line and "1.5 GB (--memory-budget" in line
    assert peak < PEAK_LIMIT, peak
    tif = tmp_path / "tags.tif"
    pixels = np.random.default_rng(1).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    tifffile.imwrite(tif, pixels, resolution=(1e4 / 10, 1e4 / 10), resolutionunit="CENTIMETER")
    code, err, peak = run_limited(
        "-m", "glandseg_core", "predict", "--model", str(UNET), "--out", str(tmp_path / "o2"),
        "--no-bar", str(tif), env={memory.BUDGET_ENV: "2048"},
    )  # fmt: skip
    line = one_line(err)
    assert (
        code == 1 and "24194×24194 px at the model's 0.62 µm/px (input 1500×1500 px at 10 µm/px)" in line
    )
    assert peak < PEAK_LIMIT, peak


# ------------------------------------------------------------------------------------------ training


def test_a_combination_of_settings_too_large_to_train_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 7: unet_base=128 unet_scale=2 train_crop_size=2048 train_batch_size=64 pass one by one."""
    monkeypatch.setattr(memory, "device_memory", lambda device: (16 * 2**30, "this machine's 16 GB"))
    cfg = replace_config(
        get_preset("glandseg-unet"),
        unet_base=128,
        unet_scale=2.0,
        train_crop_size=2048,
        train_batch_size=64,
    )
    with pytest.raises(ConfigError) as e:
        memory.check_training(cfg, torch.device("cpu"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "unet_base=128, unet_scale=2.0, train_crop_size=2048, train_batch_size=64: one training step"
    )
    for name in ("glandseg-unet", "poster-unet", "poster-maskrcnn", "glandseg-maskrcnn-cpu"):
        memory.check_training(get_preset(name), torch.device("cpu"))  # a 16 GB laptop trains them
    monkeypatch.setattr(memory, "device_memory", lambda device: (80 * 2**30, "an H100's 80 GB"))
    for name in ("glandseg-unet-gpu", "glandseg-maskrcnn", "glandseg-maskrcnn-gpu"):
        memory.check_training(get_preset(name), torch.device("cuda"))


def test_fit_refuses_it_before_reading_any_data(tmp_path: Path) -> None:
    from glandseg_core.train import fit

    cfg = replace_config(
        get_preset("glandseg-unet"),
        unet_base=128,
        unet_scale=2.0,
        train_crop_size=2048,
        train_batch_size=64,
    )
    with pytest.raises(ConfigError, match="one training step of this U-Net needs about"):
        fit(cfg, tmp_path / "no-data-here", tmp_path / "run", device="cpu", show_bar=False)
    assert not (tmp_path / "run" / "config.json").exists()


# ------------------------------------------------------------------------------------------ checkpoints


class _RepeatedZeros:
    """Deflate for a stream of equal chunks of zeros, in a second rather than deflating gigabytes: the first chunk
    is deflated and ended with a full flush, which resets the compressor, so every later chunk deflates to the
    very same bytes; together they are a valid deflate stream of all the zeros (zipfile still computes the CRC
    over every byte). tests/test_memory.py checks the 64 MiB bomb reads back as its zeros."""

    def __init__(self) -> None:
        self._chunk = b""
        self._block = b""

    def compress(self, data: bytes) -> bytes:
        if data != self._chunk:
            assert data == bytes(len(data)), "only zeros"
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            self._chunk, self._block = data, c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)
        return self._block

    def flush(self) -> bytes:
        return zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final (empty) block


def _bomb(path: Path, declared: int) -> Path:
    """A torch zip checkpoint whose one storage is ``declared`` zero bytes, deflated (torch never compresses)."""
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(4)}}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if "/data/" not in info.filename:
                dst.writestr(info, src.read(info))
                continue
            entry = zipfile.ZipInfo(info.filename)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with (
                mock.patch.object(zipfile, "_get_compressor", lambda *_: _RepeatedZeros()),
                dst.open(entry, "w", force_zip64=True) as out,
            ):
                chunk = bytes(2**24)
                for _ in range(declared // len(chunk)):
                    out.write(chunk)
    return path


def test_a_checkpoint_declaring_far_more_than_it_holds_is_refused_unloaded(tmp_path: Path) -> None:
    """Item 8 (the issue's 2 GiB in 2 MB, scaled to 64 MiB to stay fast): refused from the zip directory."""
    path = _bomb(tmp_path / "weights.pt", 64 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    with zipfile.ZipFile(
        path
    ) as z:  # a true bomb: its storage inflates to the zeros it declares (CRC checked)
        [data] = [i for i in z.infolist() if "/data/" in i.filename]
        assert data.file_size == 64 * 2**20 and z.read(data) == bytes(64 * 2**20)
    with pytest.raises(ModelError) as e:
        read_checkpoint(path)
    assert "\n" not in str(e.value) and "weights.pt: refused: its tensors declare 64 MiB" in str(e.value)


def test_a_legacy_checkpoint_is_refused_and_a_normal_one_loads(tmp_path: Path) -> None:
    torch.save(
        {"model": {"w": torch.zeros(4)}}, tmp_path / "old.pt", _use_new_zipfile_serialization=False
    )
    with pytest.raises(ModelError, match="old.pt: refused: an old \\(non-zip\\) torch checkpoint"):
        read_checkpoint(tmp_path / "old.pt")
    torch.save({"model": {"w": torch.zeros(2**20)}}, tmp_path / "new.pt")
    assert read_checkpoint(tmp_path / "new.pt")["model"]["w"].numel() == 2**20
    assert read_checkpoint(UNET / "weights.pt")["model"]


@pytest.mark.slow
def test_the_issues_2_gib_bomb_is_refused_under_a_memory_limit(tmp_path: Path) -> None:
    path = _bomb(tmp_path / "weights.pt", 2 * 2**30)
    assert path.stat().st_size < 4 * 2**20
    code = f"from glandseg_core.checkpoints import read_checkpoint; read_checkpoint(__import__('pathlib').Path({str(path)!r}))"
    rc, err, peak = run_limited("-c", code)
    assert rc == 1 and "ModelError: weights.pt: refused: its tensors declare 2,048 MiB" in err
    assert peak < 10**9, peak
