"""Tests for glandseg_core.infer: exported model folders, predictions of any size, TTA, safe loading."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_glands

from glandseg_core.config import PRESETS, save_config
from glandseg_core.infer import (
    ModelError,
    Run,
    export_model,
    load_run,
    pick_device,
    predict,
    read_checkpoint,
    unet_probs,
)
from glandseg_core.models import build_model
from glandseg_core.postprocess import MaskRCNNPost, UNetPost

pytestmark = pytest.mark.usefixtures("one_thread")


class Evil:
    """Unpickling this runs a shell command: ``weights_only=True`` loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def write_evil_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil(marker)}, path)


@pytest.fixture(scope="module")
def model_dir(untrained_unet_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(untrained_unet_run, tmp_path_factory.mktemp("models") / "tiny", fp16=True)


@pytest.fixture(scope="module")
def run(model_dir: Path) -> Run:
    return load_run(model_dir, device="cpu")


def test_export_writes_a_model_folder(model_dir: Path, untrained_unet_run: Path) -> None:
    assert {"weights.pt", "config.json", "postprocess.json"} <= {p.name for p in model_dir.iterdir()}
    ckpt = torch.load(model_dir / "weights.pt", map_location="cpu", weights_only=True)
    floats = {k: v for k, v in ckpt["model"].items() if v.is_floating_point()}
    # fp16=True: weights in fp16, BatchNorm statistics kept in fp32 (tiny variances would round to zero).
    assert any(v.dtype == torch.float16 for v in floats.values())
    for k, v in floats.items():
        assert v.dtype == (torch.float32 if "running_" in k else torch.float16), k
    assert ckpt["config"]["unet_base"] == 4
    exported = json.loads((model_dir / "config.json").read_text())
    assert exported == json.loads((untrained_unet_run / "config.json").read_text())
    # No postprocess.json in the run: the untuned defaults are written.
    assert json.loads((model_dir / "postprocess.json").read_text()) == dataclasses.asdict(UNetPost())
    assert not list(model_dir.glob("*.tmp"))


def test_export_default_keeps_small_models_in_fp32(untrained_unet_run: Path, tmp_path: Path) -> None:
    ckpt = read_checkpoint(export_model(untrained_unet_run, tmp_path / "m") / "weights.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


def test_load_run(run: Run, model_dir: Path) -> None:
    assert run.kind == "unet" and run.path == model_dir and run.device == torch.device("cpu")
    assert not run.model.training
    assert run.post == UNetPost(instance=True)
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # fp16 weights are cast back


@pytest.mark.parametrize("shape", [(67, 131), (33, 20), (64, 64), (8, 9)])
def test_predict_any_size(run: Run, shape: tuple[int, int]) -> None:
    image, _ = make_glands(*shape, n=2, seed=1)
    labels = predict(run, image)
    assert labels.dtype == np.int32 and labels.shape == shape
    assert labels.min() >= 0


def test_predict_tta_unet(run: Run) -> None:
    image, _ = make_glands(67, 131, n=3, seed=2)
    labels = predict(run, image, tta=True)
    assert labels.dtype == np.int32 and labels.shape == (67, 131)
    p = unet_probs(run, image, tta=True)
    assert p.dtype == np.float32 and p.shape == (2, 67, 131)
    assert 0 <= p.min() and p.max() <= 1


def test_tta_is_flip_and_rotation_equivariant(run: Run) -> None:
    # 64x64 at scale 0.5 is 32x32, a multiple of the U-Net's stride (8): no padding, so the average of the
    # 8 views must commute exactly (up to float sums) with flips and quarter turns of the input.
    image, _ = make_glands(64, 64, n=3, seed=5)
    ref = unet_probs(run, image, tta=True)
    np.testing.assert_allclose(
        unet_probs(run, np.ascontiguousarray(image[:, ::-1]), tta=True), ref[:, :, ::-1], atol=1e-5
    )
    np.testing.assert_allclose(
        unet_probs(run, np.ascontiguousarray(np.rot90(image)), tta=True),
        np.rot90(ref, axes=(1, 2)),
        atol=1e-5,
    )


def test_training_run_folder_loads_too(untrained_unet_run: Path, run: Run) -> None:
    from_run = load_run(untrained_unet_run, device="cpu")  # best.pt, no weights.pt
    image, _ = make_glands(48, 80, n=2, seed=3)
    np.testing.assert_allclose(
        unet_probs(from_run, image), unet_probs(run, image), atol=2e-2
    )  # fp32 vs fp16


def test_predict_rejects_non_rgb(run: Run) -> None:
    with pytest.raises(ValueError, match="uint8"):
        predict(run, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predict(run, np.zeros((32, 32, 3), np.float32))


def test_export_refuses_to_overwrite(untrained_unet_run: Path, tmp_path: Path) -> None:
    target = export_model(untrained_unet_run, tmp_path / "m")
    before = (target / "weights.pt").read_bytes()
    with pytest.raises(ModelError, match="already holds a model"):
        export_model(untrained_unet_run, target)
    assert (target / "weights.pt").read_bytes() == before
    export_model(untrained_unet_run, target, overwrite=True, fp16=False)
    ckpt = read_checkpoint(target / "weights.pt")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


def test_export_copies_tuned_postprocessing(untrained_unet_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(untrained_unet_run, run_dir)
    (run_dir / "postprocess.json").write_text(
        json.dumps(dataclasses.asdict(UNetPost(fg_thresh=0.6, min_area=300)))
    )
    assert load_run(export_model(run_dir, tmp_path / "m")).post == UNetPost(fg_thresh=0.6, min_area=300)


# ---------------------------------------------------------------------------------------- load errors


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        load_run(tmp_path / "nope")
    assert "does not exist" in one_line(e)


def test_folder_without_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        load_run(tmp_path)
    assert "not found" in one_line(e)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint(model_dir: Path, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "weights.pt").write_bytes(content)
    with pytest.raises(ModelError) as e:
        load_run(bad)
    assert "weights.pt" in one_line(e)


def test_malicious_pickle_is_refused(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    marker = tmp_path / "pwned"
    write_evil_checkpoint(bad / "weights.pt", marker)
    with pytest.raises(ModelError) as e:
        load_run(bad)
    assert "weights.pt" in one_line(e)
    assert not marker.exists()


def test_checkpoint_without_state_dict(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "x.pt")
    with pytest.raises(ModelError, match="no 'model' state dict"):
        read_checkpoint(tmp_path / "x.pt")


def test_weights_of_another_architecture(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    cfg = dataclasses.replace(PRESETS["glandseg-unet"], unet_base=8, unet_depth=3)
    save_config(cfg, bad / "config.json")
    with pytest.raises(ModelError) as e:
        load_run(bad)
    assert "do not fit" in one_line(e)


def test_bad_config_and_postprocessing(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "postprocess.json").write_text(json.dumps({"score_thresh": 0.5}))
    with pytest.raises(ModelError) as e:
        load_run(bad)
    assert "postprocess.json" in one_line(e)
    shutil.copy(model_dir / "postprocess.json", bad / "postprocess.json")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["unet_widht"] = 3
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as e:
        load_run(bad)
    assert "unet_widht" in one_line(e)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_asked_without_gpu() -> None:
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device(None) == torch.device("cpu")


# --------------------------------------------------------------------------------------- Mask R-CNN


@pytest.fixture(scope="module")
def maskrcnn_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    cfg = dataclasses.replace(
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
    run = load_run(export_model(run_dir, run_dir.parent / "mrcnn_model"))
    run.model.rpn._pre_nms_top_n["testing"] = (
        100  # torchvision keeps 1000 proposals: too slow for a test
    )
    run.model.rpn._post_nms_top_n["testing"] = 30
    run.post = MaskRCNNPost(
        score_thresh=0.0, min_area=1, min_visible=0.0
    )  # paint whatever the random net finds
    return run


@pytest.mark.parametrize("tta", [False, True])
def test_maskrcnn_predict_odd_size(maskrcnn_run: Run, tta: bool) -> None:
    assert maskrcnn_run.kind == "maskrcnn"
    image, _ = make_glands(67, 131, n=3, seed=4)
    labels = predict(maskrcnn_run, image, tta=tta)
    assert labels.dtype == np.int32 and labels.shape == (67, 131)
