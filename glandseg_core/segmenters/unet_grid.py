"""The U-Net's post-processing (:func:`unet.probs_to_labels`) over a tuning grid, each stage computed once per
distinct value of the settings it depends on.

``probs_to_labels`` runs four stages, functions of ``segmenters/unet.py`` that both call; each depends on fewer
settings than the next:

=================================== ============================================================
stage                               depends on
=================================== ============================================================
``gland_mask``                      ``fg_thresh``
``marker_components``               ``fg_thresh``, ``contour_thresh`` (separation head: ``marker_dist``)
markers, ``grow`` (orphan glands)   ... and ``min_marker_area``
``number_kept``: ids 1..N           ... and ``min_area``
=================================== ============================================================

:class:`StagedLabels` keeps the last result of each stage, so walking a grid whose last setting varies fastest
(``itertools.product`` order: the kinds' grids) runs a watershed once per (fg, contour, marker area) group, and
not at all when dropping small markers changed nothing. The last stage takes the pre-label areas, which every
``min_area`` of a group shares. The label maps are identical to ``probs_to_labels``'s
(``tests/test_tune_fast.py`` compares them on every grid point); settings of any other shape (a new field, a
``labels`` method of its own) are not handled here: :func:`applies` says so and the caller uses the segmenter.
With the separation head's third channel (the per-gland distance) the markers are its cores inside the mask
and the watershed floods the negated distance, as ``probs_to_labels`` does.

Label maps are int32[H, W]: 0=background, 1..N glands.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import fields
from typing import Any

import numpy as np

from ..thresholds import UNetPost
from .unet import (
    UNetSegmenter,
    components,
    flood_surface,
    gland_mask,
    grow,
    marker_components,
    number_kept,
    remove_small,
)

_FIELDS = {"fg_thresh", "contour_thresh", "min_marker_area", "min_area", "instance"}
_SEPARATION = "marker_dist"  # the separation head's marker threshold (a third channel)


def applies(segmenter: Any, raw: Any) -> bool:
    """Whether :class:`StagedLabels` reproduces ``segmenter.labels`` for ``raw``: a U-Net segmenter whose
    ``labels`` is the stock one, settings of exactly the fields above (plus ``marker_dist``), and float[2, H, W]
    probabilities (or [3, H, W] with ``marker_dist``)."""
    names = {f.name for f in fields(UNetPost)}
    channels = 3 if _SEPARATION in names else 2
    return (
        isinstance(segmenter, UNetSegmenter)
        and type(segmenter).labels is UNetSegmenter.labels
        and isinstance(segmenter.post, UNetPost)
        and names - {_SEPARATION} == _FIELDS
        and isinstance(raw, np.ndarray)
        and raw.ndim == 3
        and raw.shape[0] in range(2, channels + 1)
    )


class _Last:
    """The last (key, value) of one stage."""

    def __init__(self) -> None:
        self.key: Hashable = None
        self.value: Any = None

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if self.value is None or key != self.key:
            self.key, self.value = key, make()
        return self.value


class StagedLabels:
    """``probs_to_labels(prob, post)`` for many ``post`` in turn, sharing the stages (see the module docstring).

    Args:
        prob: float32[2, H, W]: gland probability and contour probability.
    """

    def __init__(self, prob: np.ndarray) -> None:
        if prob.ndim != 3 or prob.shape[0] not in (2, 3):
            raise ValueError(f"prob must be [2, H, W] or [3, H, W], got {prob.shape}")
        self.prob = prob
        self.surface = flood_surface(prob)
        self._mask, self._comps, self._markers, self._grown = _Last(), _Last(), _Last(), _Last()
        self.watersheds = 0  # watersheds run (for tests and benchmarks)

    def _grow(self, mask: np.ndarray, markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`unet.grow` from ``markers`` within ``mask``: (pre-labels, their areas)."""
        self.watersheds += 1
        labels = grow(self.surface, markers, mask)
        return labels, np.bincount(labels.ravel())

    def __call__(self, post: UNetPost) -> np.ndarray:
        """int32[H, W] label map, equal to ``probs_to_labels(prob, post)``."""
        mask = self._mask.get(post.fg_thresh, lambda: gland_mask(self.prob, post.fg_thresh))
        if not post.instance:
            labels, areas = self._grown.get(
                ("semantic", post.fg_thresh), lambda: _with_areas(components(mask))
            )
            return number_kept(labels, post.min_area, areas)
        # The seeds depend on fg_thresh and one more setting: contour_thresh, or marker_dist (separation head).
        second = getattr(post, _SEPARATION) if self.prob.shape[0] == 3 else post.contour_thresh
        key = (post.fg_thresh, second)
        comps = self._comps.get(key, lambda: marker_components(self.prob, mask, post))
        markers = self._markers.get(
            (*key, post.min_marker_area), lambda: remove_small(comps, post.min_marker_area)
        )
        grown_key = self._grown.key
        if not (
            isinstance(grown_key, tuple)
            and grown_key[0] == post.fg_thresh
            and np.array_equal(grown_key[1], markers)
        ):
            self._grown.key, self._grown.value = (post.fg_thresh, markers), self._grow(mask, markers)
        labels, areas = self._grown.value
        return number_kept(labels, post.min_area, areas)


def _with_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pre-labels, the pixel count of each id)."""
    return labels, np.bincount(labels.ravel())
