"""Whole-slide images: read with OpenSlide, find tissue, segment window by window, write QuPath GeoJSON.

``predict_slide(segmenter, "slide.svs", "out/", name="slide")`` -> :class:`SlideResult` (files in ``out/``);
``is_slide(path)`` tells slides from plain images; ``image_mpp(path)`` reads a TIFF's pixel size and
``segment_at_mpp(segmenter, image, mpp)`` segments a plain image at the model's pixel size (as
``segmenter(image, mpp=mpp)`` does). Progress is the shared :class:`glandseg_core.progress.Step`. Coordinates in outputs are level-0 pixels; measurements are in µm and µm². Label
maps used inside are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

from ..imaging.formats import image_mpp
from .pipeline import OVERLAP, WINDOW, SlideResult, predict_slide
from .reader import LevelChoice, Slide, choose_level, is_slide, open_slide
from .resample import segment_at_mpp

__all__ = [
    "OVERLAP",
    "WINDOW",
    "LevelChoice",
    "Slide",
    "SlideResult",
    "choose_level",
    "image_mpp",
    "is_slide",
    "open_slide",
    "predict_slide",
    "segment_at_mpp",
]
