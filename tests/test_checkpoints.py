"""Tests for glandseg_core.checkpoints: a run exported as a model folder, safe checkpoint reading."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from glandseg_core.checkpoints import (
    export_model,
    list_model_dirs,
    model_from_state,
    read_checkpoint,
    weights_file,
)
from glandseg_core.config import load_config
from glandseg_core.errors import ModelError
from glandseg_core.segmenters import load_segmenter
from glandseg_core.thresholds import UNetPost
from tests.helpers import Evil

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(untrained_unet_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(untrained_unet_run, tmp_path_factory.mktemp("models") / "tiny", fp16=True)


# ------------------------------------------------------------------------------------------------ export


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
    exported = export_model(run_dir, tmp_path / "m")
    assert load_segmenter(exported).post == UNetPost(fg_thresh=0.6, min_area=300)


# ------------------------------------------------------------------------------------------ reading


def test_checkpoint_without_state_dict(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "x.pt")
    with pytest.raises(ModelError, match="no 'model' state dict"):
        read_checkpoint(tmp_path / "x.pt")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")


def test_malicious_checkpoint_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil(marker)}, tmp_path / "x.pt")
    with pytest.raises(ModelError, match="could run code"):
        read_checkpoint(tmp_path / "x.pt")
    assert not marker.exists()


def test_model_from_state_casts_fp16_back_and_is_in_eval_mode(model_dir: Path) -> None:
    cfg = load_config(model_dir / "config.json")
    model = model_from_state(
        cfg, read_checkpoint(model_dir / "weights.pt")["model"], torch.device("cpu")
    )
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_weights_file_prefers_weights_then_best(model_dir: Path, untrained_unet_run: Path) -> None:
    assert weights_file(model_dir) == model_dir / "weights.pt"
    assert weights_file(untrained_unet_run) == untrained_unet_run / "best.pt"


def test_list_model_dirs(model_dir: Path, tmp_path: Path) -> None:
    assert list_model_dirs(model_dir.parent) == [model_dir]
    (model_dir.parent / "no_weights").mkdir(exist_ok=True)
    assert list_model_dirs(model_dir.parent) == [model_dir]
    assert list_model_dirs(tmp_path / "absent") == []
