"""The model-kind registry: each kind of model (U-Net, Mask R-CNN, a plugin's) is one :class:`ModelKind` object.

A kind carries everything that differs between kinds: its config section (a frozen dataclass of its own typed
fields, see :class:`glandseg_core.config.Section`) and presets, its network builder and pretrained starts, its
training targets and loss, its post-processing settings and their tuning grid, the scale its network works at,
and its segmenter class. The trainer, tuner, checkpoints, model cards, slides, CLI and dashboard talk only to
this interface, through :func:`get_kind`; no module outside a kind's own compares a kind's name.

The built-in kinds live in :mod:`glandseg_core.kinds` and register when ``glandseg_core`` is imported. Plugins
register the same way, from a module named in the ``GLANDSEG_PLUGINS`` environment variable (comma-separated)
or an installed package's ``glandseg.kinds`` entry point; both are imported the first time a kind is looked up
that is not registered yet. This module sits at the bottom of the package: it imports nothing of ours, so the
kind objects' methods are typed loosely here and precisely in each kind.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

ENTRY_POINT_GROUP = "glandseg.kinds"
PLUGINS_ENV = "GLANDSEG_PLUGINS"


@dataclass(frozen=True)
class MemoryCost:
    """How a kind's peak memory grows while it segments one image (``memory.py`` adds it up).

    Peak bytes = ``base_bytes`` + ``work_bytes_per_pixel`` x pixels of the image at the model's pixel size
    (+ ``tta_bytes_per_pixel`` with test-time augmentation) + ``input_bytes_per_pixel`` x pixels of the input
    when it is resampled (the input itself and its label map back at its size). The defaults are generous, for
    a plugin kind that declares nothing.

    Attributes:
        base_bytes: interpreter, torch, the weights, and one window's activations (windows bound them).
        work_bytes_per_pixel: the resampled image, the network's whole output and its post-processing.
        tta_bytes_per_pixel: the running sum of the views' outputs.
        input_bytes_per_pixel: the input and its label map at the input's size (only when resampled).
    """

    base_bytes: int = 1536 * 2**20
    work_bytes_per_pixel: int = 128
    tta_bytes_per_pixel: int = 16
    input_bytes_per_pixel: int = 24


class ModelKind:
    """One kind of model. Subclass it, fill in the class attributes, override the methods, and register an
    instance with :func:`register_kind`.

    Attributes:
        name: the ``model`` value in configs (``"unet"``); its config fields are written ``<name>_<field>``.
        title: how people call it (``"U-Net"``).
        params_type: the config section: a frozen dataclass subclassing ``config.Section``.
        segmenter_class: the segmenter (``segmenters.base.Segmenter``), made by :meth:`segmenter`.
        post_type: the post-processing settings: a frozen dataclass of bools, whole-number pixel areas and
            fractions in [0, 1] (validated by ``thresholds``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    params_type: ClassVar[type] = object
    post_type: ClassVar[type] = object
    segmenter_class: ClassVar[type] = object

    # --- configuration
    def presets(self) -> dict[str, Any]:
        """Named run configs (``RunConfig``) of this kind."""
        return {}

    def field_words(self) -> dict[str, tuple[str, str, str]]:
        """(label, unit, help) of each section field, by qualified name (``unet_base``), for forms and help."""
        return {}

    def poster_values(self) -> dict[str, tuple[Any, str]]:
        """(value, the poster's words) of the fields the poster gives for this kind (qualified names)."""
        return {}

    def check(self, cfg: Any) -> None:
        """Raise ``ConfigError`` for a combination of settings this kind cannot run (called on every config)."""

    # --- network
    def build(self, cfg: Any) -> nn.Module:
        """The untrained network for ``cfg`` (never reads weights)."""
        raise NotImplementedError

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put a network built or loaded on its device into the layout it runs fastest in (default: as is)."""
        return model

    def input_scale(self, cfg: Any) -> float:
        """Factor images are resized by before this network, in training and inference (1.0: as they are)."""
        return 1.0

    def check_start(self, cfg: Any, start: str) -> None:
        """Raise ``ConfigError`` unless the named pretrained start (``coco``, ``coco-v2``, ``imagenet``) fits."""
        raise ConfigError(
            f"pretrained={start} does not exist for a {self.title}; use pretrained=none or a file"
        )

    def imagenet_arch(self, cfg: Any) -> str:
        """The torchvision architecture (``resnet34``) whose ImageNet weights ``pretrained=imagenet`` loads."""
        raise NotImplementedError

    def imagenet_module(self, model: nn.Module) -> tuple[nn.Module, str]:
        """(the part of ``model`` the ImageNet weights load into, what to call it: ``encoder``, ``backbone``)."""
        raise NotImplementedError

    # --- training
    def targets(self, cfg: Any, image: np.ndarray, labels: np.ndarray) -> Any:
        """The training target of one augmented (image, label map) pair, as numpy arrays."""
        raise NotImplementedError

    def collate(self, batch: list[tuple[np.ndarray, Any]]) -> Any:
        """The network's training input for a list of (uint8 image, target) pairs, as tensors."""
        raise NotImplementedError

    def loss(
        self, net: nn.Module, batch: Any, device: torch.device, amp: bool
    ) -> dict[str, torch.Tensor]:
        """The named loss terms of one batch from :meth:`collate`."""
        raise NotImplementedError

    # --- post-processing and segmenting
    def default_post(self, cfg: Any) -> Any:
        """Untuned post-processing settings (used during training)."""
        return self.post_type()

    def tuning(self, cfg: Any) -> tuple[Any, list[dict[str, Any]]]:
        """(the settings a tuning segmenter is built with, the grid of overrides to try on ``val``)."""
        return self.default_post(cfg), [{}]

    def segmenter(
        self,
        model: nn.Module,
        cfg: Any,
        post: Any,
        device: torch.device,
        *,
        tta: bool = False,
        tiling: Any = None,
        path: Any = None,
    ) -> Any:
        """The segmenter (``segmenters.base.Segmenter``) around a network in memory: ``segmenter_class`` built
        as ``segmenter_class(model, cfg, post, device, path, tta, tiling)``."""
        return self.segmenter_class(model, cfg, post, device, path, tta, tiling)

    def loaded(self, model: nn.Module, post: Any) -> None:
        """Adjust a network loaded for inference to its post-processing settings (default: nothing)."""

    # --- memory
    def memory_cost(self, cfg: Any) -> MemoryCost:
        """How segmenting with a model of ``cfg`` grows in memory (default: generous coefficients)."""
        return MemoryCost()

    def train_bytes(self, cfg: Any) -> int:
        """Estimated memory of one training step of ``cfg`` (activations kept for the backward pass, weights,
        gradients, optimizer state), in bytes; 0: unknown (not checked)."""
        return 0


_KINDS: dict[str, ModelKind] = {}
_plugins_loaded = False


def register_kind(kind: ModelKind) -> ModelKind:
    """Register ``kind`` under ``kind.name``; returns it. A second kind of the same name raises ValueError."""
    if not kind.name or not kind.name.isidentifier():
        raise ValueError(f"a model kind needs an identifier as its name, got {kind.name!r}")
    if kind.name in _KINDS and type(_KINDS[kind.name]) is not type(kind):
        raise ValueError(f"model kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Forget kind ``name`` (tests register throwaway kinds)."""
    _KINDS.pop(name, None)


def load_plugins() -> None:
    """Import the plugin modules of ``GLANDSEG_PLUGINS`` and the ``glandseg.kinds`` entry points (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded = ep.load()
        if isinstance(loaded, ModelKind):
            register_kind(loaded)
        elif callable(loaded):  # a function that registers its kinds
            loaded()


def kind_names() -> tuple[str, ...]:
    """Names of the registered kinds, in registration order (plugins included)."""
    load_plugins()
    return tuple(_KINDS)


def get_kind(name: str) -> ModelKind:
    """The kind called ``name``.

    Raises:
        KeyError: an unknown name, listing the registered ones.
    """
    if name not in _KINDS:
        load_plugins()
    if name not in _KINDS:
        raise KeyError(f"unknown model kind {name!r}; available: {', '.join(_KINDS) or 'none'}")
    return _KINDS[name]


def all_kinds() -> list[ModelKind]:
    """Every registered kind."""
    load_plugins()
    return list(_KINDS.values())
