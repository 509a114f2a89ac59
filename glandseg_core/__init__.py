"""glandseg: segment and count the glands in H&E colon histology (U-Net and Mask R-CNN, official GlaS metrics)."""

from __future__ import annotations

from . import kinds  # noqa: F401  (registers the built-in model kinds)
