"""Experiments kept as a record (docs/EXPERIMENTS.md): code that `val` did not choose and no shipped model uses.

Not part of the installed package (pyproject's ``packages.find`` includes only ``glandseg_core*`` and
``glandseg_dashboard*``); import it from the repository root, e.g. ``from experiments.fusion import load_fusion``.
"""
