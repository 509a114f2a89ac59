"""Tests for glandseg_core.models: forward and backward on small inputs, registry errors, the
mixed-precision backbone. Device choice and autocast themselves: test_device.py."""

from __future__ import annotations

import pytest
import torch

from glandseg_core import device
from glandseg_core.config import PRESETS, replace_config
from glandseg_core.models import build_model
from glandseg_core.models.maskrcnn import MixedPrecisionBackbone
from glandseg_core.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_maskrcnn_cfg(**kw: object):
    """ResNet-18-FPN Mask R-CNN at 128 px (no download: random weights)."""
    base: dict[str, object] = {
        "maskrcnn_backbone": "resnet18",
        "maskrcnn_min_size": 128,
        "maskrcnn_max_size": 128,
        "maskrcnn_anchor_sizes": (8, 16, 32, 64, 128),
        "maskrcnn_rpn_post_nms_top_n_train": 100,
        "maskrcnn_box_batch_size_per_image": 32,
        "maskrcnn_detections_per_img": 20,
        "train_amp": False,
    }
    return replace_config(PRESETS["glandseg-maskrcnn-cpu"], **{**base, **kw})


def square_target(h: int = 128, w: int = 128) -> dict[str, torch.Tensor]:
    masks = torch.zeros((2, h, w), dtype=torch.uint8)
    masks[0, 10:50, 20:60] = 1
    masks[1, 70:110, 60:120] = 1
    return {
        "boxes": torch.tensor([[20, 10, 60, 50], [60, 70, 120, 110]], dtype=torch.float32),
        "labels": torch.ones(2, dtype=torch.int64),
        "masks": masks,
    }


# ------------------------------------------------------------------------------------------------ U-Net


@pytest.mark.parametrize(("base", "depth"), [(4, 2), (8, 3)])
def test_unet_forward_backward(base: int, depth: int) -> None:
    torch.manual_seed(0)
    cfg = replace_config(PRESETS["glandseg-unet"], unet_base=base, unet_depth=depth)
    model = build_model(cfg)
    assert isinstance(model, UNet) and model.multiple == 2**depth
    x = torch.rand(1, 3, 64, 64)
    y = model(x)
    assert y.shape == (1, 2, 64, 64) and y.dtype == torch.float32
    y.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unet_non_square_batch() -> None:
    model = UNet(base=4, depth=2).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 48)).shape == (2, 2, 32, 48)


def test_unet_input_size_error_names_the_fix() -> None:
    model = UNet(base=4, depth=3)
    with pytest.raises(ValueError) as e:
        model(torch.rand(1, 3, 67, 64))
    msg = str(e.value)
    assert "67x64" in msg and "multiples of 8" in msg and "(72, 64)" in msg


def test_unet_normalises_its_own_input_without_new_state() -> None:
    model = UNet(base=4, depth=2).eval()
    # the ImageNet statistics are buffers outside the state dict: weights saved before still load
    assert not {"mean", "std"} & set(model.state_dict())
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model.mean.zero_()
        model.std.fill_(1.0)  # normalisation off: the same network gives another output
        assert not torch.allclose(model(x), ref)


def test_unet_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="depth and base"):
        UNet(base=4, depth=0)


def test_unet_channels_last_gives_the_same_output() -> None:
    torch.manual_seed(0)
    model = UNet(base=4, depth=2).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    conv = model.encoders[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ Mask R-CNN


@pytest.fixture(scope="module")
def maskrcnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_maskrcnn_cfg())


def test_maskrcnn_train_forward_backward(maskrcnn: torch.nn.Module) -> None:
    from torchvision.models.detection import MaskRCNN

    assert isinstance(maskrcnn, MaskRCNN)
    assert maskrcnn.roi_heads.box_predictor.cls_score.out_features == 2  # background + gland
    assert maskrcnn.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2
    maskrcnn.train()
    losses = maskrcnn([torch.rand(3, 128, 128)], [square_target()])
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    maskrcnn.zero_grad()
    total.backward()
    assert maskrcnn.backbone.body.conv1.weight.grad is not None
    assert torch.isfinite(maskrcnn.backbone.body.conv1.weight.grad).all()


def test_maskrcnn_box_head_width_is_configurable() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_maskrcnn_cfg(maskrcnn_box_head_dim=256))
    assert (
        model.roi_heads.box_head.fc6.out_features == 256
        and model.roi_heads.box_head.fc7.out_features == 256
    )
    assert model.roi_heads.box_predictor.cls_score.in_features == 256
    model.train()
    losses = model([torch.rand(3, 128, 128)], [square_target()])
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        assert set(model([torch.rand(3, 128, 128)])[0]) == {"boxes", "labels", "scores", "masks"}
    default = build_model(
        tiny_maskrcnn_cfg()
    )  # torchvision's 1024, what the shipped model and the poster use
    assert default.roi_heads.box_head.fc6.out_features == 1024
    with pytest.raises(ValueError, match="maskrcnn_box_head_dim"):
        tiny_maskrcnn_cfg(maskrcnn_box_head_dim=0)


def test_maskrcnn_finer_mask_head_trains_and_loads_the_coarse_heads_weights() -> None:
    torch.manual_seed(0)
    fine = build_model(tiny_maskrcnn_cfg(maskrcnn_mask_roi_size=28))
    assert fine.roi_heads.mask_roi_pool.output_size == (28, 28)
    fine.train()
    fine.roi_heads.mask_predictor.register_forward_hook(
        lambda m, i, out: seen.append(tuple(out.shape[-2:]))
    )
    seen: list[tuple[int, ...]] = []
    losses = fine([torch.rand(3, 128, 128)], [square_target()])
    assert seen == [(56, 56)] and torch.isfinite(losses["loss_mask"])
    losses["loss_mask"].backward()
    coarse = build_model(tiny_maskrcnn_cfg())  # torchvision's 14 -> 28 x 28 masks, as shipped
    assert coarse.roi_heads.mask_roi_pool.output_size == (14, 14)
    fine.load_state_dict(coarse.state_dict())  # the same tensors: a shipped model fine-tunes at 56 x 56
    fine.eval()
    with torch.no_grad():
        out = fine([torch.rand(3, 128, 128)])[0]
    assert out["masks"].shape[-2:] == (128, 128)
    with pytest.raises(ValueError, match="maskrcnn_mask_roi_size"):
        tiny_maskrcnn_cfg(maskrcnn_mask_roi_size=100)


def test_maskrcnn_train_with_an_empty_target(maskrcnn: torch.nn.Module) -> None:
    maskrcnn.train()
    empty = {
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros((0, 128, 128), dtype=torch.uint8),
    }
    losses = maskrcnn([torch.rand(3, 128, 128)], [empty])
    assert torch.isfinite(sum(losses.values()))


def test_maskrcnn_eval_forward(maskrcnn: torch.nn.Module) -> None:
    maskrcnn.eval()
    with torch.no_grad():
        out = maskrcnn([torch.rand(3, 100, 140)])
    assert len(out) == 1
    det = out[0]
    assert set(det) >= {"boxes", "labels", "scores", "masks"}
    n = det["scores"].shape[0]
    assert det["boxes"].shape == (n, 4) and det["masks"].shape == (n, 1, 100, 140)
    maskrcnn.train()


def test_maskrcnn_backbone_is_trainable_without_frozen_bn(maskrcnn: torch.nn.Module) -> None:
    from torchvision.ops import FrozenBatchNorm2d

    assert not any(isinstance(m, FrozenBatchNorm2d) for m in maskrcnn.modules())
    assert all(p.requires_grad for p in maskrcnn.backbone.parameters())


def test_maskrcnn_state_dict_keeps_torchvision_names(maskrcnn: torch.nn.Module) -> None:
    keys = maskrcnn.state_dict().keys()
    assert any(k.startswith("backbone.body.") for k in keys)
    assert any(k.startswith("backbone.fpn.") for k in keys)


def test_mixed_precision_backbone_returns_fp32_features(
    maskrcnn: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "has_amx", lambda: True)  # force CPU bf16 autocast on any CPU
    wrapped = MixedPrecisionBackbone(maskrcnn.backbone, enabled=True).eval()
    inner: list[torch.dtype] = []
    hook = wrapped.fpn.register_forward_hook(lambda m, i, o: inner.extend(v.dtype for v in o.values()))
    try:
        with torch.no_grad():
            feats = wrapped(torch.rand(1, 3, 64, 64))
    finally:
        hook.remove()
    assert set(inner) == {torch.bfloat16}  # the backbone really ran in mixed precision ...
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert all(v.dtype == torch.float32 for v in feats.values())  # ... and hands fp32 to the heads
    off = MixedPrecisionBackbone(maskrcnn.backbone, enabled=False).eval()
    with torch.no_grad():
        assert all(v.dtype == torch.float32 for v in off(torch.rand(1, 3, 64, 64)).values())


@pytest.mark.parametrize("backbone", ["resnet34", "mobilenet_v3_large"])
def test_other_backbones_build(backbone: str) -> None:
    model = build_model(tiny_maskrcnn_cfg(maskrcnn_backbone=backbone))
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 96, 96)])
    assert "masks" in out[0]


# ---------------------------------------------------------------------------------------------- registry


def test_unknown_model_in_config_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unet") as e:
        replace_config(PRESETS["glandseg-unet"], model="vit")
    assert "maskrcnn" in str(e.value)
