"""Pretrained starts (models/pretrained.py): a fabricated torch cache, never a download.

Each test points ``TORCH_HOME`` at a temporary folder and writes a state dict with the right keys under the file
name torchvision expects (``$TORCH_HOME/hub/checkpoints/<file>``), then checks that the weights are really loaded,
that the predictors are replaced for two classes, and the one-line offline error.
"""

from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from glandseg_core.config import PRESETS, RunConfig, config_from_dict, replace_config
from glandseg_core.errors import ConfigError, ModelError
from glandseg_core.models import build_model, load_pretrained, pretrained_status
from glandseg_core.models.pretrained import cache_file, weights_for


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache; any download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def _randomise(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict of ``model``'s keys and shapes with seeded random values (so loading is detectable)."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.rand(v.shape, generator=g) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def _fabricate(cfg: RunConfig, state: dict[str, torch.Tensor]) -> Path:
    path = cache_file(weights_for(cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _coco_v1_reference() -> MaskRCNN:
    """torchvision's maskrcnn_resnet50_fpn as it is when built with COCO weights (FrozenBatchNorm, 91 classes)."""
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d)
    return MaskRCNN(backbone, num_classes=91)


def _poster(**kw: object) -> RunConfig:
    return replace_config(PRESETS["poster-maskrcnn"], train_amp=False, **kw)


def test_poster_preset_starts_from_coco_and_ours_from_scratch() -> None:
    assert PRESETS["poster-maskrcnn"].pretrained == "coco"
    assert all(c.pretrained == "none" for n, c in PRESETS.items() if n != "poster-maskrcnn")
    assert (
        config_from_dict({"model": "unet"}).pretrained == "none"
    )  # folders saved before the field existed


def test_coco_weights_are_loaded_and_predictors_replaced(torch_home: Path) -> None:
    cfg = _poster()
    state = _randomise(_coco_v1_reference(), seed=1)
    path = _fabricate(cfg, state)
    assert path == torch_home / "hub" / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    assert pretrained_status(cfg)[0]

    model = build_model(cfg)
    fresh_predictor = model.roi_heads.box_predictor.cls_score.weight.clone()
    msg = load_pretrained(model, cfg, download=False)
    assert "predictors new" in msg

    own = model.state_dict()
    for key in ("backbone.body.conv1.weight", "backbone.body.layer4.2.bn3.running_var", "backbone.fpn.layer_blocks.3.0.weight",
                "rpn.head.conv.0.0.weight", "roi_heads.box_head.fc7.weight", "roi_heads.mask_head.0.0.weight"):  # fmt: skip
        assert torch.equal(own[key], state[key]), key
    # heads for 2 classes (background, gland), freshly initialised: not COCO's 91-class tensors
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 8
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, fresh_predictor)
    assert not torch.equal(
        own["roi_heads.mask_predictor.conv5_mask.weight"],
        state["roi_heads.mask_predictor.conv5_mask.weight"],
    )
    # as torchvision fine-tunes: FrozenBatchNorm, the stem and layer1 frozen, layers 2-4 trainable
    assert isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)
    assert not model.backbone.body.conv1.weight.requires_grad
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad


def test_coco_model_runs_and_reloads_without_the_cache(torch_home: Path) -> None:
    """A model folder trained from COCO rebuilds the same network for inference, with no pretrained file."""
    cfg = _poster(maskrcnn_min_size=64, maskrcnn_max_size=64)  # small inputs: a quick forward pass
    _fabricate(cfg, _randomise(_coco_v1_reference(), seed=2))
    model = build_model(cfg)
    load_pretrained(model, cfg, download=False)
    state = model.state_dict()
    for p in cache_file(weights_for(cfg)).parent.iterdir():
        p.unlink()
    again = build_model(cfg)
    again.load_state_dict(state)  # strict: same keys and shapes
    again.eval()
    with torch.inference_mode():
        out = again([torch.rand(3, 64, 64)])[0]
    assert set(out) >= {"boxes", "scores", "masks"}


def test_coco_v2_weights_are_loaded(torch_home: Path) -> None:
    cfg = _poster(pretrained="coco-v2")
    ref = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    state = _randomise(ref, seed=3)
    path = _fabricate(cfg, state)
    assert path.name == "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
    model = build_model(cfg)
    load_pretrained(model, cfg, download=False)
    own = model.state_dict()
    for key in ("backbone.body.layer3.0.conv2.weight", "backbone.fpn.inner_blocks.0.1.weight",
                "rpn.head.conv.1.0.weight", "roi_heads.box_head.0.0.weight", "roi_heads.mask_head.3.0.weight"):  # fmt: skip
        assert torch.equal(own[key], state[key]), key
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2


def test_imagenet_backbone_is_loaded(torch_home: Path) -> None:
    cfg = dataclasses.replace(PRESETS["glandseg-maskrcnn-cpu"], pretrained="imagenet", train_amp=False)
    state = _randomise(resnet18(weights=None), seed=4)
    path = _fabricate(cfg, state)
    assert path.name == "resnet18-f37072fd.pth"
    model = build_model(cfg)
    fpn_before = model.backbone.fpn.layer_blocks[0][0].weight.clone()
    msg = load_pretrained(model, cfg, download=False)
    assert "resnet18" in msg
    assert torch.equal(model.backbone.body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.backbone.body.bn1.running_mean, state["bn1.running_mean"])
    assert torch.equal(model.backbone.fpn.layer_blocks[0][0].weight, fpn_before)  # the FPN is new
    assert model.roi_heads.box_predictor.cls_score.out_features == 2


def test_unet_resnet_encoder_from_imagenet(torch_home: Path) -> None:
    cfg = replace_config(
        PRESETS["glandseg-unet"], unet_encoder="resnet18", pretrained="imagenet", train_amp=False
    )
    state = _randomise(resnet18(weights=None), seed=6)
    assert _fabricate(cfg, state).name == "resnet18-f37072fd.pth"
    model = build_model(cfg)
    head = model.head.weight.clone()
    assert "encoder resnet18" in load_pretrained(model, cfg, download=False)
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(model.encoder.bn1.running_var, state["bn1.running_var"])
    assert torch.equal(model.head.weight, head)  # decoder and head are new
    out = model(torch.rand(1, 3, 64, 96))  # sides: multiples of 32
    assert out.shape == (1, 2, 64, 96)
    out.mean().backward()
    assert model.encoder.conv1.weight.grad is not None  # the encoder is fine-tuned, not frozen


def test_offline_without_the_file_is_one_line_naming_it(torch_home: Path) -> None:
    cfg = _poster()
    available, message = pretrained_status(cfg)
    assert not available
    assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in message
    model = build_model(cfg)
    for download in (
        True,
        False,
    ):  # True: torchvision tries to download, and the (patched) network fails
        with pytest.raises(ModelError) as err:
            load_pretrained(model, cfg, download=download)
        text = str(err.value)
        assert "\n" not in text
        assert "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth" in text
        assert str(torch_home / "hub" / "checkpoints") in text
        assert "pretrained=none" in text
    assert not any((torch_home / "hub" / "checkpoints").glob("*.pth"))


def test_a_local_file_loads_what_fits(tmp_path: Path, torch_home: Path) -> None:
    cfg = replace_config(PRESETS["glandseg-unet"], unet_base=4, unet_depth=2)
    donor = build_model(cfg)
    path = tmp_path / "mine.pt"
    state = _randomise(donor, seed=5)
    state["head.weight"] = torch.rand(7, 4, 1, 1)  # another head: skipped, not an error
    torch.save({"model": state}, path)
    cfg = dataclasses.replace(cfg, pretrained=str(path))
    assert pretrained_status(cfg)[0]
    model = build_model(cfg)
    head = model.head.weight.clone()
    msg = load_pretrained(model, cfg)
    assert str(path) in msg
    assert torch.equal(model.encoders[1][0].weight, state["encoders.1.0.weight"])
    assert torch.equal(model.head.weight, head)

    missing = dataclasses.replace(cfg, pretrained=str(tmp_path / "nope.pt"))
    assert not pretrained_status(missing)[0]
    with pytest.raises(ModelError, match="nope.pt does not exist"):
        load_pretrained(build_model(missing), missing)


@pytest.mark.parametrize(
    ("fields", "needs"),
    [
        ({"model": "unet", "pretrained": "imagenet"}, "unet_encoder=resnet18"),
        ({"model": "unet", "pretrained": "coco"}, "model=maskrcnn"),
        (
            {"model": "maskrcnn", "maskrcnn_backbone": "resnet18", "pretrained": "coco"},
            "maskrcnn_backbone=resnet50",
        ),
        (
            {"model": "maskrcnn", "maskrcnn_box_head_dim": 512, "pretrained": "coco"},
            "maskrcnn_box_head_dim=1024",
        ),
    ],
)
def test_starts_that_do_not_fit_the_network(fields: dict, needs: str) -> None:
    cfg = config_from_dict(fields)
    assert not pretrained_status(cfg)[0]
    with pytest.raises(ConfigError, match=needs):
        build_model(cfg)
