"""The package version, read by pyproject (``[tool.setuptools.dynamic]``) and ``glandseg --version``."""

from __future__ import annotations

__version__ = "0.2.0"
