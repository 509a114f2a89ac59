"""Inference engines (glandseg_core/engines): export, outputs against PyTorch's, the on-disk cache, fallbacks.
Run by tests/test_engines.py in a pytest process of their own (its docstring says why).

Tiny networks (a 2-level U-Net with 4 base channels, a ResNet-18-FPN Mask R-CNN with random weights) keep each
export to a few seconds; the shipped models are compared on the bundled samples in the slow test at the end.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from glandseg_core import engines
from glandseg_core.checkpoints import build_model
from glandseg_core.engines import cache as engine_cache
from glandseg_core.engines import runners
from glandseg_core.errors import ModelError
from glandseg_core.segmenters import load_segmenter, make_segmenter
from glandseg_core.thresholds import default_post
from tests.helpers import tiny_unet_config
from tests.test_models import tiny_maskrcnn_cfg
from tests.test_packaging import PYPROJECT, pins

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
INSTALLED = engines.available()


@pytest.fixture(autouse=True)
def engine_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "engine-cache"
    monkeypatch.setenv("GLANDSEG_ENGINE_CACHE", str(folder))
    monkeypatch.delenv("GLANDSEG_ENGINE", raising=False)
    monkeypatch.setattr(engines, "cpu_bf16", lambda: False)  # auto picks an engine, as without AMX
    return folder


def _unet(seed: int = 0) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(seed)
    cfg = tiny_unet_config()
    return build_model(cfg).eval(), cfg


def _needs(engine: str) -> None:
    if engine not in INSTALLED:
        pytest.skip(f"{engine} is not installed (pip install -e '.[engine]')")


@pytest.mark.parametrize(
    "engine",
    ["openvino", pytest.param("onnx", marks=pytest.mark.slow)],  # torch's ONNX export: ~20 s
)
def test_unet_runs_on_the_engine_with_pytorch_outputs_at_any_size(engine: str) -> None:
    _needs(engine)
    model, cfg = _unet()
    x = torch.rand(1, 3, 64, 96)
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = model(x)
    ref_raw = make_segmenter(model, cfg, default_post(cfg), CPU).raw(image)  # engine torch by default
    seg = make_segmenter(model, cfg, default_post(cfg), CPU, engine=engine)
    assert engines.engine_of(seg.model) == engine
    with torch.inference_mode():
        out = seg.model(x)
        other = seg.model(torch.rand(1, 3, 96, 128))  # dynamic H and W: another size, no re-export
    assert out.shape == ref.shape and other.shape == (1, ref.shape[1], 96, 128)
    assert float((out - ref).abs().max()) < 1e-4  # fp32 (train_amp off): PyTorch's numbers
    np.testing.assert_allclose(seg.raw(image), ref_raw, atol=1e-5)  # the segmenter's probabilities too
    engines.restore(seg.model)
    assert engines.engine_of(seg.model) == "torch"


@pytest.mark.slow  # four exports of a ResNet-18-FPN detector
def test_maskrcnn_parts_match_pytorch_and_the_detector_runs() -> None:
    _needs("openvino")
    torch.manual_seed(0)
    cfg = tiny_maskrcnn_cfg()
    model = build_model(cfg).eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.inference_mode():
        ref = model.backbone(x)
        ref_rpn = model.rpn.head(list(ref.values()))
    assert engines.accelerate(model, cfg, CPU, "openvino") == "openvino"
    with torch.inference_mode():
        feats = model.backbone(x)
        rpn = model.rpn.head(list(feats.values()))
        model.roi_heads.score_thresh = 0.0  # random weights: let detections reach the mask head
        det = model([x[0]])[0]
    assert list(feats) == list(ref) and all(float((feats[k] - ref[k]).abs().max()) < 1e-3 for k in ref)
    for got, want in zip(rpn[0] + rpn[1], ref_rpn[0] + ref_rpn[1], strict=True):
        assert float((got - want).abs().max()) < 1e-3
    assert det["masks"].shape[1:] == (1, 128, 160) and len(det["boxes"]) == len(det["scores"])


def test_split_roi_pooling_is_the_whole_pooling_and_restore_removes_it() -> None:
    from glandseg_core.engines.parts import SplitRoIAlign, split_roi_pools

    torch.manual_seed(0)
    model = build_model(tiny_maskrcnn_cfg()).eval()
    x = torch.rand(1, 3, 128, 160)
    xy = torch.rand(300, 2) * 100
    boxes = [torch.cat([xy, xy + 8 + torch.rand(300, 2) * 50], 1)]  # small and large: every FPN level
    pool = model.roi_heads.box_roi_pool
    with torch.inference_mode():
        feats = model.backbone(x)
        want = pool(feats, boxes, [(128, 160)])
        split_roi_pools(model)
        assert isinstance(pool.__dict__["forward"], SplitRoIAlign)
        got = pool(feats, boxes, [(128, 160)])
        few = pool(feats, [boxes[0][:10]], [(128, 160)])
    assert torch.equal(got, want) and torch.equal(few, want[:10])
    engines.restore(model)
    assert "forward" not in pool.__dict__ and "forward" not in model.roi_heads.mask_roi_pool.__dict__


def test_auto_without_engines_runs_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "available", lambda: [])
    assert engines.resolve("auto", CPU) == "torch"
    with pytest.raises(ModelError, match="not installed"):
        engines.resolve("openvino", CPU)
    assert engines.resolve("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ModelError, match="unknown engine"):
        engines.resolve("tensorrt", CPU)


def test_auto_runs_pytorch_where_it_runs_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "available", lambda: ["onnx", "openvino"])
    assert engines.resolve("auto", CPU) == "onnx"  # PyTorch in fp32 (the fixture): the fastest engine
    monkeypatch.setattr(
        engines, "cpu_bf16", lambda: True
    )  # AMX: no engine was faster than PyTorch's bf16
    assert engines.resolve("auto", CPU) == "torch" and engines.resolve(None, CPU) == "torch"
    assert engines.resolve("onnx", CPU) == "onnx"  # asked for by name, it still runs
    monkeypatch.setenv("GLANDSEG_ENGINE", "onnx")
    assert engines.resolve("auto", CPU) == "onnx"


def test_env_says_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLANDSEG_ENGINE", "torch")
    assert engines.resolve("auto", CPU) == "torch"
    assert engines.resolve(None, CPU) == "torch"


def test_a_failed_export_falls_back_to_pytorch_with_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engines, "available", lambda: ["openvino"])
    monkeypatch.setattr(engines, "engine_version", lambda e: "test")

    def broken(graph: runners.Graph, folder: Path) -> None:
        raise RuntimeError("converter says no\nand more detail")

    monkeypatch.setitem(runners.BUILD, "openvino", broken)
    monkeypatch.setitem(engines.BUILD, "openvino", broken)
    model, cfg = _unet()
    with caplog.at_level(logging.WARNING, logger="glandseg"):
        assert engines.accelerate(model, cfg, CPU, "auto") == "torch"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["engine: OpenVINO failed (converter says no); running PyTorch"]
    assert engines.engine_of(model) == "torch"
    with pytest.raises(ModelError, match="OpenVINO engine failed: converter says no"):
        engines.accelerate(model, cfg, CPU, "openvino")


def test_the_cache_is_reused_and_a_corrupt_entry_rebuilt(
    engine_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs("openvino")
    builds: list[str] = []
    real = runners.BUILD["openvino"]

    def counting(graph: runners.Graph, folder: Path) -> None:
        builds.append(graph.name)
        real(graph, folder)

    monkeypatch.setitem(engines.BUILD, "openvino", counting)
    model, cfg = _unet()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
    engines.accelerate(model, cfg, CPU, "openvino")
    engines.restore(model)
    engines.accelerate(model, cfg, CPU, "openvino")  # same weights: read from disk
    assert builds == ["network"]
    (entry,) = [p for p in engine_cache_dir.iterdir() if not p.name.startswith(".")]
    assert (entry / engine_cache.META).is_file()
    for f in entry.glob("model.*"):
        f.write_bytes(b"\0garbage")
    engines.restore(model)
    engines.accelerate(model, cfg, CPU, "openvino")
    assert builds == ["network", "network"]  # rebuilt, not fatal
    with torch.inference_mode():
        assert float((model(x) - ref).abs().max()) < 1e-4
    before = engines._source_hash(model, None)
    torch.nn.init.constant_(next(model.parameters()), 0.5)  # other weights: another entry
    assert engines._source_hash(model, None) != before


def test_build_entry_is_atomic(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "k"

    def fails(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        engine_cache.build_entry(folder, fails, {})
    assert not folder.exists() and list(folder.parent.iterdir()) == []
    engine_cache.build_entry(folder, lambda tmp: (tmp / "model.onnx").write_bytes(b"ok"), {"a": 1})
    assert (folder / "model.onnx").read_bytes() == b"ok" and (folder / engine_cache.META).is_file()


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLANDSEG_ENGINE_CACHE", str(tmp_path / "x"))
    assert engine_cache.cache_root() == tmp_path / "x"
    monkeypatch.delenv("GLANDSEG_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert engine_cache.cache_root() == tmp_path / "xdg" / "glandseg" / "engines"


def test_cli_takes_an_engine() -> None:
    from glandseg_core.cli import get_args_parser

    p = get_args_parser()
    assert p.parse_args(["predict", "--model", "m", "x.png"]).engine == "auto"
    assert (
        p.parse_args(["evaluate", "--model", "m", "--out", "o", "--engine", "torch"]).engine == "torch"
    )
    with pytest.raises(SystemExit):
        p.parse_args(["predict", "--model", "m", "--engine", "tensorrt", "x.png"])


def test_engine_extra_and_its_pins_agree() -> None:
    engine, runtime = pins("requirements-engine.txt"), pins("requirements.txt")
    extra = PYPROJECT["project"]["optional-dependencies"]["engine"]
    assert {re.split(r"[=<>]", d)[0].lower() for d in extra} == set(engine) - set(runtime)
    assert "requirements-engine.txt" in (REPO / "scripts" / "setup.sh").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["unet", "maskrcnn"])
def test_shipped_models_label_the_samples_as_pytorch_does(model: str) -> None:
    """The documented tolerance (benchmarks/README.md, "Engines"): >= 0.99 of pixels agree on labelled vs
    background and the same number of glands, on each bundled sample."""
    if not INSTALLED:
        pytest.skip("no engine installed")
    from glandseg_core.imaging.io import read_image

    torch_seg = load_segmenter(REPO / "trained_models" / model, device="cpu", engine="torch")
    fast = load_segmenter(REPO / "trained_models" / model, device="cpu", engine=INSTALLED[0])
    for path in sorted((REPO / "samples").glob("test*_[0-9].png")) + sorted(
        (REPO / "samples").glob("test*_[0-9][0-9].png")
    ):
        image = read_image(path)
        want, got = torch_seg(image), fast(image)
        assert np.mean((want > 0) == (got > 0)) >= 0.99, path.name
        assert want.max() == got.max(), path.name
