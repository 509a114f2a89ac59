"""glandseg: segment and count the glands in H&E colon histology (U-Net and Mask R-CNN, official GlaS metrics).

The public Python API (``import glandseg_core as gs``; the README's "Python API" shows it at work):

=====================  ==========================================================================
``segment``            an image (array or file) -> int32 label map, at any pixel size (``mpp=``)
``load_segmenter``     a model folder or name -> a segmenter (``plan``, ``raw``, ``labels``, call)
``evaluate``           official GlaS figures of a model on any data set (per-image table, summary)
``score_image``        every GlaS metric of one label map against its ground truth
``fit``                train a preset or config on a data set into a run folder
``from_pairs``         in-memory (image, label map) pairs as a data set; ``GlasDataset`` for GlaS
``get_preset``         a named recipe (``list_presets()``); ``RunConfig``, ``replace_config``
``read_image``         any image file as uint8 RGB; ``read_label_map`` for annotations
``register_kind``      add a model kind (``ModelKind``); ``list_kinds()``
``__version__``        the package version
=====================  ==========================================================================

Names are loaded on first use, so ``import glandseg_core`` stays light; the built-in model kinds register on
import.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import kinds  # noqa: F401  (registers the built-in model kinds)
from ._version import __version__

_LAZY = {
    "segment": "api",
    "load_segmenter": "api",
    "evaluate": "api",
    "score_image": "api",
    "fit": "api",
    "list_presets": "api",
    "list_kinds": "api",
    "models_root": "api",
    "from_pairs": "datasets",
    "GlasDataset": "datasets",
    "Dataset": "datasets",
    "Item": "datasets",
    "get_preset": "config",
    "RunConfig": "config",
    "replace_config": "config",
    "read_image": "imaging.io",
    "read_label_map": "imaging.io",
    "register_kind": "registry",
    "ModelKind": "registry",
    "Step": "progress",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = (
            value  # later lookups skip this function (and win over a same-named subpackage)
        )
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
