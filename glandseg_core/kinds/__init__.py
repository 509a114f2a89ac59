"""The built-in model kinds, registered on import: :mod:`.unet` (U-Net) and :mod:`.maskrcnn` (Mask R-CNN).

A kind is one :class:`glandseg_core.registry.ModelKind` object holding everything that differs between kinds;
see ``docs/ARCHITECTURE.md`` ("Adding a model kind") for writing a third one as a plugin.
"""

from __future__ import annotations

from ..registry import register_kind
from .maskrcnn import MASKRCNN
from .unet import UNET

register_kind(UNET)
register_kind(MASKRCNN)

__all__ = ["MASKRCNN", "UNET"]
