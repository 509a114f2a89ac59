"""Networks: a U-Net (``unet.py``) and a Mask R-CNN (``maskrcnn.py``), built by name from a RunConfig.

Both take images as float32 ``[B, 3, H, W]`` in [0, 1] and normalise them themselves. ``build_model`` never
reads weights; :func:`load_pretrained` fills a fresh network from the start ``cfg.pretrained`` names
(``pretrained.py``), and :func:`pretrained_status` says whether that start is available offline.
"""

from __future__ import annotations

from . import maskrcnn, unet  # noqa: F401  (registers the builders)
from ._api import build_model, list_models, register_model
from .pretrained import load_pretrained, pretrained_status

__all__ = ["build_model", "list_models", "load_pretrained", "pretrained_status", "register_model"]
