"""Tests for glandseg_core.segmenters: loading segmenters, any image size, TTA option, safe loading."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from glandseg_core.checkpoints import export_model
from glandseg_core.config import PRESETS, replace_config, save_config
from glandseg_core.errors import ModelError
from glandseg_core.models import build_model
from glandseg_core.segmenters import (
    MaskRCNNSegmenter,
    Segmenter,
    Tiling,
    UNetSegmenter,
    load_segmenter,
    make_segmenter,
)
from glandseg_core.thresholds import MaskRCNNPost, UNetPost
from tests.helpers import Evil, make_glands

pytestmark = pytest.mark.usefixtures("one_thread")


def write_evil_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil(marker)}, path)


@pytest.fixture(scope="module")
def model_dir(untrained_unet_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(untrained_unet_run, tmp_path_factory.mktemp("models") / "tiny", fp16=True)


@pytest.fixture(scope="module")
def seg(model_dir: Path) -> UNetSegmenter:
    s = load_segmenter(model_dir, device="cpu")
    assert isinstance(s, UNetSegmenter)
    return s


def with_tta(seg: UNetSegmenter) -> UNetSegmenter:
    """The same network and thresholds, with test-time augmentation on."""
    return dataclasses.replace(seg, tta=True)


def test_load_segmenter(seg: UNetSegmenter, model_dir: Path) -> None:
    assert seg.kind == "unet" and seg.path == model_dir and seg.device == torch.device("cpu")
    assert isinstance(seg, Segmenter)
    assert not seg.model.training
    assert seg.post == UNetPost(instance=True)
    assert seg.tta is False and seg.tiling == Tiling()
    assert all(p.dtype == torch.float32 for p in seg.model.parameters())  # fp16 weights are cast back


def test_load_segmenter_options(model_dir: Path) -> None:
    tiling = Tiling(tile_above=256, unet_tile=96)
    s = load_segmenter(model_dir, device="cpu", tta=True, tiling=tiling)
    assert s.tta is True and s.tiling is tiling


@pytest.mark.parametrize("shape", [(67, 131), (33, 20), (64, 64), (8, 9)])
def test_predict_any_size(seg: UNetSegmenter, shape: tuple[int, int]) -> None:
    image, _ = make_glands(*shape, n=2, seed=1)
    labels = seg(image)
    assert labels.dtype == np.int32 and labels.shape == shape
    assert labels.min() >= 0


def test_call_is_labels_of_raw_and_post_overrides(seg: UNetSegmenter) -> None:
    image, _ = make_glands(67, 131, n=3, seed=2)
    raw = seg.raw(image)
    np.testing.assert_array_equal(seg(image), seg.labels(raw))
    assert not seg.labels(raw, UNetPost(fg_thresh=1.0)).any()  # the override is used, not seg.post
    assert seg.post == UNetPost(instance=True)


def test_predict_tta_unet(seg: UNetSegmenter) -> None:
    image, _ = make_glands(67, 131, n=3, seed=2)
    labels = with_tta(seg)(image)
    assert labels.dtype == np.int32 and labels.shape == (67, 131)
    p = with_tta(seg).raw(image)
    assert p.dtype == np.float32 and p.shape == (2, 67, 131)
    assert p.min() >= 0 and p.max() <= 1


def test_tta_is_flip_and_rotation_equivariant(seg: UNetSegmenter) -> None:
    # 64x64 at scale 0.5 is 32x32, a multiple of the U-Net's stride (8): no padding, so the average of
    # the 8 views must commute exactly (up to float sums) with flips and quarter turns of the input.
    tta = with_tta(seg)
    image, _ = make_glands(64, 64, n=3, seed=5)
    ref = tta.raw(image)
    np.testing.assert_allclose(tta.raw(np.ascontiguousarray(image[:, ::-1])), ref[:, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(
        tta.raw(np.ascontiguousarray(np.rot90(image))), np.rot90(ref, axes=(1, 2)), atol=1e-5
    )


def test_tta_can_be_switched_on_a_loaded_segmenter(model_dir: Path) -> None:
    s = load_segmenter(model_dir, device="cpu")
    image, _ = make_glands(64, 64, n=3, seed=5)
    plain = s.raw(image)
    s.tta = True
    np.testing.assert_allclose(
        s.raw(image), with_tta(load_segmenter(model_dir, device="cpu")).raw(image)
    )
    assert not np.allclose(s.raw(image), plain)


def test_training_run_folder_loads_too(untrained_unet_run: Path, seg: UNetSegmenter) -> None:
    from_run = load_segmenter(untrained_unet_run, device="cpu")  # best.pt, no weights.pt
    image, _ = make_glands(48, 80, n=2, seed=3)
    np.testing.assert_allclose(from_run.raw(image), seg.raw(image), atol=2e-2)  # fp32 vs fp16


def test_predict_rejects_non_rgb(seg: UNetSegmenter) -> None:
    with pytest.raises(ValueError, match="uint8"):
        seg(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        seg(np.zeros((32, 32, 3), np.float32))


def test_make_segmenter_refuses_settings_of_the_other_kind(seg: UNetSegmenter) -> None:
    with pytest.raises(ModelError, match="MaskRCNNPost"):
        make_segmenter(seg.model, seg.cfg, MaskRCNNPost())
    made = make_segmenter(seg.model, seg.cfg, seg.post)
    assert isinstance(made, UNetSegmenter) and made.path is None and made.device == torch.device("cpu")


# ---------------------------------------------------------------------------------------- load errors


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        load_segmenter(tmp_path / "nope")
    assert "does not exist" in one_line(e)


def test_folder_without_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        load_segmenter(tmp_path)
    assert "not found" in one_line(e)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint(model_dir: Path, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "weights.pt").write_bytes(content)
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    assert "weights.pt" in one_line(e)


def test_malicious_pickle_is_refused(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    marker = tmp_path / "pwned"
    write_evil_checkpoint(bad / "weights.pt", marker)
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    assert "weights.pt" in one_line(e)
    assert not marker.exists()


def test_weights_of_another_architecture(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    cfg = replace_config(PRESETS["glandseg-unet"], unet_base=8, unet_depth=3)
    save_config(cfg, bad / "config.json")
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    assert "do not fit" in one_line(e)


def test_bad_config_and_postprocessing(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "postprocess.json").write_text(json.dumps({"score_thresh": 0.5}))
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    assert "postprocess.json" in one_line(e)
    shutil.copy(model_dir / "postprocess.json", bad / "postprocess.json")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["unet_widht"] = 3
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    assert "unet_widht" in one_line(e)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fg_thresh", "0.5"),  # a string threshold
        ("contour_thresh", None),
        ("min_area", -5),
        ("fg_thresh", 1.5),  # a fraction above 1
        ("min_marker_area", 2.5),
        ("instance", "yes"),
    ],
)
def test_wrongly_typed_postprocessing_is_one_line_naming_the_field(
    model_dir: Path, tmp_path: Path, field: str, value: object
) -> None:
    """Issue #15 item 7: a hand-edited postprocess.json is a one-line ModelError, not a traceback."""
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    settings = json.loads((bad / "postprocess.json").read_text())
    settings[field] = value
    (bad / "postprocess.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    msg = one_line(e)
    assert "postprocess.json" in msg and repr(field) in msg and repr(value) in msg


def test_unreadable_postprocessing_json(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "postprocess.json").write_text('{"fg_thresh": 0.5,')  # torn
    with pytest.raises(ModelError) as e:
        load_segmenter(bad)
    assert "postprocess.json" in one_line(e)


# --------------------------------------------------------------------------------------- Mask R-CNN


@pytest.fixture(scope="module")
def maskrcnn_seg(tmp_path_factory: pytest.TempPathFactory) -> MaskRCNNSegmenter:
    cfg = replace_config(
        PRESETS["glandseg-maskrcnn-cpu"],
        maskrcnn_backbone="resnet18",
        maskrcnn_min_size=64,
        maskrcnn_max_size=128,
        maskrcnn_anchor_sizes=(8, 16, 32, 64, 128),
        maskrcnn_detections_per_img=5,
        train_amp=False,
    )
    run_dir = tmp_path_factory.mktemp("mrcnn_run")
    torch.manual_seed(0)
    save_config(cfg, run_dir / "config.json")
    torch.save(
        {"model": build_model(cfg).state_dict(), "config": dataclasses.asdict(cfg), "epoch": 0},
        run_dir / "best.pt",
    )
    seg = load_segmenter(export_model(run_dir, run_dir.parent / "mrcnn_model"))
    assert isinstance(seg, MaskRCNNSegmenter)
    seg.model.rpn._pre_nms_top_n["testing"] = (
        100  # torchvision keeps 1000 proposals: too slow for a test
    )
    seg.model.rpn._post_nms_top_n["testing"] = 30
    seg.post = MaskRCNNPost(
        score_thresh=0.0, min_area=1, min_visible=0.0
    )  # paint whatever the random net finds
    return seg


@pytest.mark.parametrize("tta", [False, True])
def test_maskrcnn_predict_odd_size(maskrcnn_seg: MaskRCNNSegmenter, tta: bool) -> None:
    assert maskrcnn_seg.kind == "maskrcnn"
    image, _ = make_glands(67, 131, n=3, seed=4)
    labels = dataclasses.replace(maskrcnn_seg, tta=tta)(image)
    assert labels.dtype == np.int32 and labels.shape == (67, 131)


def test_maskrcnn_raw_is_instances_at_the_image_shape(maskrcnn_seg: MaskRCNNSegmenter) -> None:
    image, _ = make_glands(67, 131, n=3, seed=4)
    raw = maskrcnn_seg.raw(image)
    assert raw.shape == (67, 131)
    np.testing.assert_array_equal(maskrcnn_seg.labels(raw), maskrcnn_seg(image))
    with pytest.raises(ValueError, match="shape"):
        maskrcnn_seg.labels(dataclasses.replace(raw, shape=None))
