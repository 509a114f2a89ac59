"""Networks: a U-Net (``unet.py``) and a Mask R-CNN (``maskrcnn.py``), each with its config section.

Both take images as float32 ``[B, 3, H, W]`` in [0, 1] and normalise them themselves. :func:`build_model` asks
the config's model kind (``glandseg_core.registry``) for the network and never reads weights;
:func:`load_pretrained` fills a fresh network from the start ``cfg.pretrained`` names (``pretrained.py``), and
:func:`pretrained_status` says whether that start is available offline.
"""

from __future__ import annotations

from torch import nn

from ..config import RunConfig
from .pretrained import load_pretrained, pretrained_status

__all__ = ["build_model", "load_pretrained", "pretrained_status"]


def build_model(cfg: RunConfig) -> nn.Module:
    """The (untrained) network of ``cfg``'s model kind."""
    return cfg.kind.build(cfg)
