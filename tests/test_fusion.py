"""The fusion segmenter (experiments/fusion.py, outside the package): U-Net label map split where Mask R-CNN and the U-Net's contours
agree, missed glands added; a fusion folder loads both member folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.fusion import (
    FusionPost,
    FusionRaw,
    FusionSegmenter,
    fuse,
    fusion_post_from_dict,
    load_fusion,
    write_fusion,
)
from glandseg_core.checkpoints import export_model
from glandseg_core.config import PRESETS, replace_config, save_config
from glandseg_core.errors import ModelError
from glandseg_core.evaluation import read_test_history
from glandseg_core.models import build_model
from glandseg_core.segmenters import Instances
from glandseg_core.segmenters.instances import compact
from glandseg_core.thresholds import MaskRCNNPost, UNetPost
from tests.helpers import tiny_unet_config, write_fake_glas

pytestmark = pytest.mark.usefixtures("one_thread")

UNET_POST = UNetPost(fg_thresh=0.5, contour_thresh=0.5, min_marker_area=5, min_area=20)
H, W = 40, 80


def _disc(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _instances(masks: list[np.ndarray], scores: list[float]) -> Instances:
    inst = compact(np.asarray(scores, np.float32), np.stack(masks).astype(np.float32), MaskRCNNPost(0.0))
    return dataclasses.replace(inst, shape=(H, W))


def _touching(seam_contour: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """U-Net probabilities of two touching discs that it merges (the seam's contour probability is below its
    threshold), and the two discs as Mask R-CNN sees them."""
    left, right = _disc(20, 27, 12), _disc(20, 51, 12)
    bridge = np.zeros((H, W), bool)
    bridge[16:25, 36:43] = True
    prob = np.zeros((2, H, W), np.float32)
    prob[0][left | right | bridge] = 0.9
    prob[1][bridge] = seam_contour
    return prob, [left, right]


def test_a_merged_pair_is_split_when_both_models_see_the_boundary() -> None:
    prob, discs = _touching(seam_contour=0.4)
    inst = _instances(discs, [0.95, 0.9])
    from glandseg_core.segmenters.unet import probs_to_labels

    assert probs_to_labels(prob, UNET_POST).max() == 1  # the U-Net alone merges them
    labels = fuse(prob, inst, UNET_POST, FusionPost(split_min_area=50, boundary=0.3))
    assert labels.dtype == np.int32 and labels.shape == (H, W)
    assert labels.max() == 2
    assert labels[20, 27] != labels[20, 51] and labels[20, 27] > 0 and labels[20, 51] > 0
    # the U-Net saw no boundary strong enough: the cut is refused
    assert fuse(prob, inst, UNET_POST, FusionPost(split_min_area=50, boundary=0.5)).max() == 1
    # one confident instance is not enough to split
    low = _instances(discs, [0.95, 0.3])
    assert (
        fuse(prob, low, UNET_POST, FusionPost(split_min_area=50, boundary=0.3, split_score=0.5)).max()
        == 1
    )


def test_a_gland_the_unet_missed_is_added_only_when_asked() -> None:
    prob = np.zeros((2, H, W), np.float32)
    prob[0][_disc(20, 20, 10)] = 0.9
    missed = _disc(20, 60, 9)
    inst = _instances([missed], [0.92])
    assert fuse(prob, inst, UNET_POST, FusionPost()).max() == 1
    labels = fuse(prob, inst, UNET_POST, FusionPost(add=True, add_score=0.8))
    assert (
        labels.max() == 2
        and labels[20, 60] == 2
        and np.array_equal(labels > 0, _disc(20, 20, 10) | missed)
    )
    assert fuse(prob, inst, UNET_POST, FusionPost(add=True, add_score=0.95)).max() == 1


def test_without_instances_the_fusion_is_the_unet() -> None:
    from glandseg_core.segmenters.unet import probs_to_labels

    prob, _ = _touching(0.4)
    empty = dataclasses.replace(Instances.empty(), shape=(H, W))
    assert np.array_equal(fuse(prob, empty, UNET_POST, FusionPost()), probs_to_labels(prob, UNET_POST))


def test_fusion_thresholds_are_checked() -> None:
    assert fusion_post_from_dict({"boundary": 0.25, "split_min_area": 300.0}) == FusionPost(
        boundary=0.25, split_min_area=300
    )
    for bad in (
        {"boundary": 2.0},
        {"split_min_area": 1.5},
        {"add": 1},
        {"nope": 1},
        {"split_score": "0.5"},
    ):
        with pytest.raises(ModelError):
            fusion_post_from_dict(bad)


# ----------------------------------------------------------------------------------- a fusion folder


@pytest.fixture(scope="module")
def member_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trained_models-like root with an untrained tiny U-Net and Mask R-CNN folder."""
    root = tmp_path_factory.mktemp("models")
    mrcnn = replace_config(
        PRESETS["glandseg-maskrcnn-cpu"], maskrcnn_min_size=64, maskrcnn_max_size=128,
        maskrcnn_anchor_sizes=(8, 16, 32, 64, 128), maskrcnn_detections_per_img=5, train_amp=False,
    )  # fmt: skip
    for name, cfg in (("unet", tiny_unet_config()), ("maskrcnn", mrcnn)):
        run = tmp_path_factory.mktemp(f"{name}_run")
        torch.manual_seed(0)
        save_config(cfg, run / "config.json")
        torch.save(
            {"model": build_model(cfg).state_dict(), "config": dataclasses.asdict(cfg), "epoch": 0},
            run / "best.pt",
        )
        export_model(run, root / name)
    return root


def test_a_fusion_folder_loads_both_members_and_segments(member_dirs: Path, tmp_path: Path) -> None:
    folder = member_dirs / "fusion"
    write_fusion(folder, "../unet", "../maskrcnn", FusionPost(boundary=0.2), None)
    seg = load_fusion(folder, device="cpu")
    assert isinstance(seg, FusionSegmenter)
    assert seg.kind == "fusion" and seg.path == folder and seg.cfg.name == "fusion"
    assert seg.maskrcnn.post.score_thresh <= 0.5  # keeps the detections the fusion may use
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    raw = seg.raw(image)
    assert isinstance(raw, FusionRaw) and raw.prob.shape == (2, 64, 96)
    labels = seg(image)
    assert labels.dtype == np.int32 and labels.shape == (64, 96)
    assert np.array_equal(labels, seg.labels(raw))
    seg.tta = True
    assert seg.unet.tta and seg.maskrcnn.tta

    # scoring a fusion folder on a test split is recorded in its own history
    from glandseg_core.evaluation import evaluate

    seg.tta = False
    data = write_fake_glas(tmp_path / "glas", names=("testA_1",))
    evaluate(data, ["testA"], tmp_path / "out", segmenter=seg, record_history=True, reason="test")
    assert [r["split"] for r in read_test_history(folder)] == ["testA"]


def test_bad_fusion_folders_are_one_line_errors(member_dirs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "fusion.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a fusion config"):
        load_fusion(folder)
    write_fusion(folder, str(member_dirs / "unet"), str(tmp_path / "nope"), FusionPost(), None)
    with pytest.raises(ModelError, match="maskrcnn member folder"):
        load_fusion(folder)
    write_fusion(folder, str(member_dirs / "maskrcnn"), str(member_dirs / "unet"), FusionPost(), None)
    with pytest.raises(ModelError, match="needs a U-Net and a Mask R-CNN"):
        load_fusion(folder)
    d = json.loads((folder / "fusion.json").read_text())
    d.update(
        unet=str(member_dirs / "unet"), maskrcnn=str(member_dirs / "maskrcnn"), post={"boundary": -1}
    )
    (folder / "fusion.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match="boundary"):
        load_fusion(folder)


def test_a_fusion_of_itself_or_of_another_fusion_is_one_line(member_dirs: Path, tmp_path: Path) -> None:
    """Issue #23 item 9: a ``fusion.json`` pointing at its own folder ended in ``RecursionError``."""
    folder = tmp_path / "f"
    write_fusion(folder, ".", str(member_dirs / "maskrcnn"), FusionPost(), None)
    with pytest.raises(ModelError, match="the unet member is this fusion folder itself") as info:
        load_fusion(folder)
    assert "\n" not in str(info.value) and str(folder / "fusion.json") in str(info.value)
    write_fusion(folder, str(member_dirs / "unet"), "../f/", FusionPost(), None)
    with pytest.raises(ModelError, match="the maskrcnn member is this fusion folder itself"):
        load_fusion(folder)
    other = tmp_path / "g"
    write_fusion(other, str(member_dirs / "unet"), str(member_dirs / "maskrcnn"), FusionPost(), None)
    write_fusion(folder, "../g", str(member_dirs / "maskrcnn"), FusionPost(), None)
    with pytest.raises(ModelError, match="the unet member is another fusion folder"):
        load_fusion(folder)
