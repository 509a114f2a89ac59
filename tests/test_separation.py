"""The U-Net's separation head (``unet_separation``, issue 21 item 2): per-gland distance and gap-weight targets,
distance-marker post-processing, the loss, and the fine-tuning start that widens a 2-channel checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from glandseg_core.checkpoints import grow_outputs
from glandseg_core.config import RunConfig, config_from_dict, config_to_dict, load_config
from glandseg_core.errors import ConfigError, ModelError
from glandseg_core.kinds.unet import UNET, unet_loss
from glandseg_core.models import build_model
from glandseg_core.models.unet import UNet
from glandseg_core.segmenters.unet import probs_to_labels
from glandseg_core.thresholds import UNetPost
from glandseg_core.train.starts import load_init
from glandseg_core.transforms import gap_weights, gland_distance, unet_separation_targets
from tests.helpers import REPO, tiny_unet_config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = UNetPost(fg_thresh=0.5, min_marker_area=5, min_area=20)


def disc(shape: tuple[int, int], centre: tuple[float, float], r: float) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= r**2


def two_discs(gap: int) -> np.ndarray:
    """Discs of radius 14 (ids 1, 2) side by side on a 64x96 map, ``gap`` background pixels apart at the
    narrowest (0: they touch, sharing a straight border)."""
    left, right = disc((64, 96), (32, 30), 14), disc((64, 96), (32, 58 + gap), 14)
    labels = np.zeros((64, 96), np.int32)
    labels[left & (np.arange(96)[None] <= 44)] = 1
    labels[right & (np.arange(96)[None] >= 45 + gap)] = 2
    return labels


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------ targets


def test_distance_is_per_gland_normalised() -> None:
    labels = two_discs(0)
    d = gland_distance(labels)
    assert d.dtype == np.float32 and d.shape == labels.shape
    assert d.min() == 0.0 and (d[labels == 0] == 0).all()
    for k in (1, 2):
        assert d[labels == k].max() == pytest.approx(1.0)
        assert (d[labels == k] > 0).all()
    # the shared border is a border of each gland: the distance is low on both sides of it
    assert d[32, 44] < 0.15 and d[32, 45] < 0.15
    assert d[32, 30] == pytest.approx(1.0, abs=0.1)  # the left disc's centre


def test_a_gland_cut_by_the_map_edge_continues_beyond_it() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[:, :20] = 1  # a band from the top edge to the bottom edge, ending at column 20
    d = gland_distance(labels)
    # the distance grows away from the one real border (column 20), not from the map's edges
    np.testing.assert_allclose(d[0, :20], d[20, :20])
    assert d[20, 0] == pytest.approx(1.0) and d[20, 19] < d[20, 10] < d[20, 0]
    assert (gland_distance(np.ones((8, 8), np.int32)) == 1).all()  # the map inside one gland


def test_gap_weights_are_high_between_close_glands_and_one_far_away() -> None:
    labels = two_discs(2)
    w = gap_weights(labels)
    assert w.dtype == np.float32 and w.min() == 1.0
    gap = w[32, 45:47]  # the two background columns between the discs
    assert (labels[32, 45:47] == 0).all() and (gap > 8).all()  # 1 + 10 * exp(-(1 + 2)**2 / 50) = 9.4
    assert w.max() <= 11.0
    assert (w[labels > 0] == 1).all()  # gland pixels keep weight 1
    assert w[0, 0] == 1.0 and w[5, 90] == 1.0  # far from both glands
    # one gland alone: no second gland within reach, so no gap weight anywhere
    assert (gap_weights((labels == 1).astype(np.int32)) == 1).all()


def test_separation_targets_stack_four_channels() -> None:
    labels = two_discs(2)
    t = unet_separation_targets(labels, 2)
    assert t.shape == (4, *labels.shape) and t.dtype == np.float32
    np.testing.assert_array_equal(t[0], labels > 0)
    np.testing.assert_array_equal(t[2], gland_distance(labels))
    np.testing.assert_array_equal(t[3], gap_weights(labels))


# ------------------------------------------------------------------------------------- post-processing


def test_distance_markers_split_touching_discs_a_mask_threshold_merges() -> None:
    gt = two_discs(0)
    fg = (gt > 0).astype(np.float32)
    prob = np.stack([fg, np.zeros_like(fg), gland_distance(gt)])  # an ideal distance head, no contours
    merged = probs_to_labels(prob[:2], SMALL)  # the gland mask alone: one object
    assert sorted(np.unique(merged)) == [0, 1]
    labels = probs_to_labels(prob, SMALL)
    assert labels.dtype == np.int32 and sorted(np.unique(labels)) == [0, 1, 2]
    np.testing.assert_array_equal(labels > 0, gt > 0)  # the watershed fills the whole mask
    for k in (1, 2):
        assert max(iou(labels == j, gt == k) for j in (1, 2)) > 0.95


def test_distance_marker_threshold_and_min_area_act() -> None:
    gt = two_discs(0)
    fg = (gt > 0).astype(np.float32)
    prob = np.stack([fg, np.zeros_like(fg), gland_distance(gt)])
    # a threshold above every distance leaves no marker: the mask becomes one orphan object
    assert probs_to_labels(prob, dataclasses.replace(SMALL, marker_dist=1.0)).max() == 1
    # a minimum area above a disc's removes both
    assert probs_to_labels(prob, dataclasses.replace(SMALL, min_area=1000)).max() == 0


def test_probs_of_other_channel_counts_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[2, H, W\] or \[3, H, W\]"):
        probs_to_labels(np.zeros((4, 8, 8), np.float32), SMALL)


# ------------------------------------------------------------------------------------------------ loss


def test_loss_is_finite_and_falls_on_a_tiny_network() -> None:
    labels = two_discs(0)
    image = np.full((64, 96, 3), 230, np.uint8)
    image[labels > 0] = (150, 60, 140)
    image[gland_distance(labels) > 0.5] = (200, 170, 210)  # gland interiors are paler
    x, y = UNET.collate([(image, unet_separation_targets(labels, 2))])
    assert y.shape == (1, 4, 64, 96)
    torch.manual_seed(0)
    net = UNet(base=4, depth=2, out_channels=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    totals = []
    for _ in range(12):
        losses = unet_loss(net(x), y)
        assert set(losses) == {"loss_gland", "loss_contour", "loss_dice", "loss_distance"}
        assert all(torch.isfinite(v) for v in losses.values())
        total = cast(torch.Tensor, sum(losses.values()))
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.8 * totals[0], totals


def test_loss_refuses_targets_of_the_other_head() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        unet_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 8))


# -------------------------------------------------------------------------------------- config and start


def test_separation_is_off_by_default_and_old_configs_keep_two_channels() -> None:
    shipped = load_config(REPO / "trained_models/unet/config.json")
    assert shipped.params.separation is False and shipped.params.out_channels == 2
    on = config_from_dict({**config_to_dict(shipped), "unet_separation": True})
    assert on.params.out_channels == 3
    assert UNET.tuning(on)[1][0].keys() >= {"marker_dist", "fg_thresh", "min_area"}
    assert len(UNET.tuning(on)[1]) <= 60
    with pytest.raises(ConfigError, match="unet_instance=true"):
        config_from_dict({**config_to_dict(shipped), "unet_separation": True, "unet_instance": False})


def _tiny(separation: bool, **kw: object) -> RunConfig:
    return tiny_unet_config(unet_separation=separation, **kw)


def _unet(separation: bool, **kw: object) -> UNet:
    return cast(UNet, build_model(_tiny(separation, **kw)))


def test_a_two_channel_checkpoint_starts_the_separation_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    old = _unet(False)
    path = tmp_path / "best.pt"
    state = {k: v.half() if v.is_floating_point() else v for k, v in old.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, path)
    new = _unet(True)
    fresh = new.head.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="glandseg_core.train.starts"):
        load_init(new, path)
    assert "output layer widened (head.weight 2->3, head.bias 2->3)" in caplog.text
    torch.testing.assert_close(new.head.weight[:2], old.head.weight.half().float())
    torch.testing.assert_close(new.head.weight[2], fresh[2])  # the distance output starts fresh
    first = "encoders.0.0.weight"
    torch.testing.assert_close(new.state_dict()[first], old.state_dict()[first].half().float())
    # the same shape loads without a word
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glandseg_core.train.starts"):
        load_init(build_model(_tiny(False)), path)
    assert "widened" not in caplog.text


def test_only_the_output_layer_may_grow(tmp_path: Path) -> None:
    three = build_model(_tiny(True))
    path = tmp_path / "three.pt"
    torch.save({"model": three.state_dict()}, path)
    with pytest.raises(ModelError, match="do not fit"):  # 3 channels into 2: never shrunk
        load_init(build_model(_tiny(False)), path)
    wider = build_model(_tiny(False, unet_base=8))
    torch.save({"model": wider.state_dict()}, path)
    with pytest.raises(ModelError, match="do not fit"):  # another width: the head's inputs differ too
        load_init(build_model(_tiny(True)), path)
    _, grown = grow_outputs(build_model(_tiny(True)), wider.state_dict())
    assert grown == []


@pytest.mark.slow
def test_shipped_unet_labels_on_a_sample_are_unchanged() -> None:
    """The shipped 2-channel U-Net, run by PyTorch, gives exactly the label map committed in its predictions
    folder: the separation head changes nothing for a model without it."""
    from glandseg_core.checkpoints import model_from_state, read_checkpoint
    from glandseg_core.imaging.io import read_image, read_label_map
    from glandseg_core.segmenters.unet import UNetSegmenter
    from glandseg_core.thresholds import load_post

    folder = REPO / "trained_models/unet"
    cfg = load_config(folder / "config.json")
    model = model_from_state(cfg, read_checkpoint(folder / "weights.pt")["model"], torch.device("cpu"))
    seg = UNetSegmenter(model, cfg, load_post(folder / "postprocess.json", "unet"))
    image = read_image(REPO / "samples/testA_1.png")
    ref = read_label_map(folder / "predictions/testA_1_labels.png", shape=image.shape[:2])
    labels = seg(image)
    assert labels.max() == ref.max() == 4
    np.testing.assert_array_equal(labels, ref)
