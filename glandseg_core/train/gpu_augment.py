"""Random crops and augmentation as torch ops on the training device (a GPU: on CPU the numpy augmentation
costs ~300 ms per 512² crop, which starved earlier GPU runs). Used by :mod:`.gpu_run`.

Images are uint8[3, H, W] tensors kept on the device, targets float32[C, H, W] (the kind's training targets:
gland and contour, with the separation head also distance and gap weights). A batch is float32[B, 3, S, S] in
[0, 1] and float32[B, C, S, S]. Geometry moves image and targets together (targets sampled nearest, so 0/1 masks
stay 0/1); colour changes only the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class GpuAugment:
    """Ranges of the augmentation (per sample, uniform unless said).

    Attributes:
        affine_p: share of samples rotated by ``rotate`` degrees at most and scaled within ``1 ± scale``.
        brightness, contrast, saturation: factors within ``1 ± value``. stain: per-channel RGB gain within
            ``1 ± value``, a cheap stand-in on the device for the HED stain jitter of the CPU augmentation
            (:func:`glandseg_core.transforms.shift_stains`, which the fine-tuning benchmark's fixed stain
            change also uses).
    """

    affine_p: float = 0.7
    rotate: float = 30.0
    scale: float = 0.15
    brightness: float = 0.1
    contrast: float = 0.15
    saturation: float = 0.15
    stain: float = 0.05


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """[C, H, W] padded (reflect, or replicate where too small) so that both sides are at least ``size``."""
    ph, pw = max(0, size - x.shape[-2]), max(0, size - x.shape[-1])
    if not ph and not pw:
        return x
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    mode = "reflect" if min(x.shape[-2:]) > max(pad) else "replicate"
    return F.pad(x[None].float(), pad, mode=mode)[0].to(x.dtype)


def random_crops(
    images: list[torch.Tensor], targets: list[torch.Tensor], batch: int, size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random ``size`` crops (images drawn with replacement) of images padded to at least ``size``:
    (float32[B, 3, S, S] in [0, 1], float32[B, C, S, S])."""
    pick = torch.randint(len(images), (batch,), generator=gen).tolist()
    xs, ys = [], []
    for i in pick:
        h, w = images[i].shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        xs.append(images[i][:, top : top + size, left : left + size])
        ys.append(targets[i][:, top : top + size, left : left + size])
    return torch.stack(xs).float() / 255, torch.stack(ys)


def _uniform(n: int, spread: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """n factors uniform in [1 - spread, 1 + spread], on ``device``."""
    return (1 + spread * (2 * torch.rand(n, generator=gen) - 1)).to(device)


def dihedral(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample (square) in one of the 8 flips/rotations by 90°, image and targets alike."""
    ks = torch.randint(4, (x.shape[0],), generator=gen).tolist()
    flips = torch.rand(x.shape[0], generator=gen).lt(0.5).tolist()
    xs, ys = [], []
    for xi, yi, k, flip in zip(x, y, ks, flips, strict=True):
        if flip:
            xi, yi = xi.flip(-1), yi.flip(-1)
        xs.append(torch.rot90(xi, k, (-2, -1)))
        ys.append(torch.rot90(yi, k, (-2, -1)))
    return torch.stack(xs), torch.stack(ys)


def affine(
    x: torch.Tensor, y: torch.Tensor, aug: GpuAugment, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random rotation and zoom of ``aug.affine_p`` of the samples (reflected at the borders); the image
    sampled bilinear, the targets nearest."""
    n, dev = x.shape[0], x.device
    on = (torch.rand(n, generator=gen) < aug.affine_p).float().to(dev)
    angle = math.radians(aug.rotate) * (2 * torch.rand(n, generator=gen) - 1).to(dev) * on
    zoom = 1 + (_uniform(n, aug.scale, gen, dev) - 1) * on
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="reflection", align_corners=False)
    return x, y


def colour(x: torch.Tensor, aug: GpuAugment, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast (about each sample's mean), saturation (towards its grey) and a per-channel stain
    gain; values stay in [0, 1]."""
    n, dev = x.shape[0], x.device
    x = x * _uniform(n, aug.brightness, gen, dev).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(n, aug.contrast, gen, dev).view(n, 1, 1, 1) + mean
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = (x - grey) * _uniform(n, aug.saturation, gen, dev).view(n, 1, 1, 1) + grey
    x = x * _uniform(3 * n, aug.stain, gen, dev).view(n, 3, 1, 1)
    return x.clamp(0, 1)


def augment(
    x: torch.Tensor, y: torch.Tensor, aug: GpuAugment, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole augmentation of a batch: flips/rotations by 90°, affine, colour."""
    x, y = dihedral(x, y, gen)
    x, y = affine(x, y, aug, gen)
    return colour(x, aug, gen).contiguous(), y.contiguous()
