"""U-Net (Ronneberger et al. 2015) built from small blocks, with BatchNorm and a configurable depth and width;
or, with ``encoder`` = resnet18/34/50, a torchvision ResNet as the encoder (smp's ``Unet(encoder_name=
"resnet34")`` layout: skips at strides 2-16, a decoder of upsample + concatenate + two convolutions), which
``pretrained=imagenet`` fills with ImageNet weights (models/pretrained.py).

Output: logits[B, 2, H, W]: channel 0 = gland, channel 1 = gland contour (see ``transforms.unet_targets``); with
``separation`` (``unet_separation``) a third channel, the per-gland normalised distance to the gland's border
(``transforms.gland_distance``), whose markers separate touching glands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import resnet18, resnet34, resnet50

from ..config import RunConfig
from ..errors import ConfigError
from ..rules import Rule, Section, float_rule, int_rule
from .pretrained import check_start

UNET_MAX_WIDTH = 2048  # channels at the U-Net's bottleneck (base * 2**depth): ~75 M parameters
ENCODERS = ("none", "resnet18", "resnet34", "resnet50")


@dataclass(frozen=True)
class UNetParams(Section):
    """The U-Net's config section (``unet_<field>`` in ``config.json`` and ``--set``)."""

    KIND: ClassVar[str] = "unet"
    RULES: ClassVar[dict[str, Rule]] = {
        "base": int_rule(1, 256),
        "depth": int_rule(1, 6),
        "instance": Rule(bool),
        "scale": float_rule(0.05, 2.0),
        "contour_width": int_rule(1, 32),
        "encoder": Rule(str, choices=ENCODERS),
        "separation": Rule(bool),
    }

    base: int = 32
    depth: int = 4
    instance: bool = (
        True  # predict gland + contour and separate touching glands; False = plain semantic mask
    )
    scale: float = 0.5  # images are resized by this factor before the U-Net (GlaS glands are large)
    contour_width: int = 2  # contour band width in pixels, at the U-Net's scale
    encoder: str = "none"  # or resnet18/34/50: a torchvision ResNet encoder
    # a third output, the per-gland normalised distance transform, whose markers split touching glands
    separation: bool = False

    @property
    def out_channels(self) -> int:
        """Output channels: gland and contour, plus the distance with ``separation``."""
        return 3 if self.separation else 2

    def check(self) -> None:
        widest = self.base * 2**self.depth
        if widest > UNET_MAX_WIDTH:
            raise ConfigError(
                f"unet_base={self.base} with unet_depth={self.depth} gives a {widest}-channel "
                f"bottleneck; unet_base * 2**unet_depth must be at most {UNET_MAX_WIDTH}"
            )
        if self.separation and not self.instance:
            raise ConfigError(
                "unet_separation=true separates glands, so it needs unet_instance=true (a plain mask has none)"
            )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip connection, then a ConvBlock."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2)
        self.block = ConvBlock(in_ch // 2 + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` down-sampling steps; input sides must be multiples of ``2**depth``."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor
    # a fine-tuning start may have fewer outputs (checkpoints.grow_outputs): 2 channels into the separation head
    growable_outputs = ("head.weight", "head.bias")

    def __init__(
        self, *, in_channels: int = 3, out_channels: int = 2, base: int = 32, depth: int = 4
    ) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError(f"depth and base must be positive, got depth={depth}, base={base}")
        self.depth = depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList([ConvBlock(in_channels, widths[0])])
        self.encoders.extend(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.decoders = nn.ModuleList(
            DecoderBlock(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        # ImageNet statistics; not in the state dict, so weights saved before the network normalised still load
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, out_channels, H, W] of images float32[B, 3, H, W] in [0, 1] (normalised here)."""
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"U-Net input is {h}x{w}; sides must be multiples of {self.multiple}. Consider pad your images to "
                f"shape ({-(-h // self.multiple) * self.multiple}, {-(-w // self.multiple) * self.multiple})"
            )
        x = (x - self.mean) / self.std
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for dec in self.decoders:
            x = dec(x, skips.pop())
        return self.head(x)


_RESNETS = {"resnet18": (resnet18, 64), "resnet34": (resnet34, 64), "resnet50": (resnet50, 256)}
DECODER_WIDTHS = (256, 128, 64, 32, 16)


class UpBlock(nn.Module):
    """Upsample x2 (nearest), concatenate the skip connection when there is one, then a ConvBlock."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = ConvBlock(in_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.block(x if skip is None else torch.cat([x, skip], dim=1))


class ResNetUNet(nn.Module):
    """U-Net with a torchvision ResNet encoder (``encoder.*`` keys are torchvision's, without ``fc``).

    Skips: the stem (stride 2) and layers 1-3 (strides 4-16); layer 4 (stride 32) is the bottleneck.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor
    growable_outputs = UNet.growable_outputs

    def __init__(self, *, encoder: str = "resnet34", out_channels: int = 2) -> None:
        super().__init__()
        if encoder not in _RESNETS:
            raise ValueError(f"unknown U-Net encoder {encoder!r}; available: {', '.join(_RESNETS)}")
        make, width = _RESNETS[encoder]
        self.encoder = make(weights=None)
        self.encoder.fc = nn.Identity()  # unused: no classifier tensors in the state dict
        skips = [64, width, width * 2, width * 4]  # stem, layer1, layer2, layer3
        ins = [width * 8, *DECODER_WIDTHS[:-1]]
        self.decoders = nn.ModuleList(
            UpBlock(i, s, o) for i, s, o in zip(ins, [*reversed(skips), 0], DECODER_WIDTHS, strict=True)
        )
        self.head = nn.Conv2d(DECODER_WIDTHS[-1], out_channels, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (five stride-2 steps)."""
        return 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, out_channels, H, W] of images float32[B, 3, H, W] in [0, 1] (normalised here)."""
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"U-Net input is {h}x{w}; sides must be multiples of {self.multiple}. Consider pad your images to "
                f"shape ({-(-h // self.multiple) * self.multiple}, {-(-w // self.multiple) * self.multiple})"
            )
        e = self.encoder
        stem = e.relu(e.bn1(e.conv1((x - self.mean) / self.std)))
        l1 = e.layer1(e.maxpool(stem))
        l2 = e.layer2(l1)
        l3 = e.layer3(l2)
        x = e.layer4(l3)
        for dec, skip in zip(self.decoders, (l3, l2, l1, stem, None), strict=True):
            x = dec(x, skip)
        return self.head(x)


def build_unet(cfg: RunConfig) -> nn.Module:
    """U-Net with 2 output channels (gland, contour), 3 with ``params.separation`` (and the distance): our
    own, of width ``params.base`` and depth ``params.depth``, or one with a torchvision ResNet encoder
    (``params.encoder``)."""
    check_start(cfg)
    p: UNetParams = cfg.params
    if p.encoder != "none":
        return ResNetUNet(encoder=p.encoder, out_channels=p.out_channels)
    return UNet(base=p.base, depth=p.depth, out_channels=p.out_channels)
