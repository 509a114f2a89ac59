"""The model registry: ``@register_model(name)`` builders, ``build_model(cfg)``, ``list_models()``.

Private: import these names from :mod:`glandseg_core.models` (torchvision keeps its registry in ``models/_api.py`` too).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import RunConfig

_BUILDERS: dict[str, Callable[[RunConfig], nn.Module]] = {}


def register_model(
    name: str,
) -> Callable[[Callable[[RunConfig], nn.Module]], Callable[[RunConfig], nn.Module]]:
    """Register a builder ``fn(cfg) -> nn.Module`` under ``name``; a duplicate name raises."""

    def wrap(fn: Callable[[RunConfig], nn.Module]) -> Callable[[RunConfig], nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of the registered model builders."""
    return sorted(_BUILDERS)


def build_model(cfg: RunConfig) -> nn.Module:
    """Build the (untrained) model that ``cfg.model`` names.

    Raises:
        ValueError: for an unknown model name, listing the valid ones.
    """
    if cfg.model not in _BUILDERS:
        raise ValueError(
            f"unknown model {cfg.model!r}; available options are: {', '.join(list_models())}"
        )
    return _BUILDERS[cfg.model](cfg)
