"""Why ground-truth glands are missed: the mechanism counts that the keep/drop rule of docs/EXPERIMENTS.md
asks for beside the F1 difference.

Every ground-truth gland that no true-positive prediction has as its partner (an official ``FN``,
``GLAS_METRICS.md``) falls in exactly one class:

- ``missed``: less than 20% of its pixels lie in any prediction (the model did not see it);
- ``merged``: its partner prediction (the one covering most of it) has another ground-truth gland as its own
  partner: one prediction covers it with a neighbour and is credited to the neighbour;
- ``partial``: the rest (under-segmented, split into pieces, or a partner covering it by 50% or less).

Missed glands are also counted by where they are: touching the image border, and small (under 5,000 pixels).
Label maps follow the package's contract: int32 (H, W), 0 = background, 1..N glands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np

from ..metrics import object_outcomes

SEEN = 0.2  # a gland with less than this share of its pixels inside predictions is "missed"
SMALL_AREA = 5000  # pixels, as in the error analysis


@dataclass(frozen=True)
class Failures:
    """Counts over one image or a set of images (add them with ``+``)."""

    n_gt: int = 0
    missed_total: int = 0  # official FN
    merged: int = 0
    missed: int = 0
    partial: int = 0
    missed_at_border: int = 0
    missed_small: int = 0

    def __add__(self, other: Failures) -> Failures:
        return Failures(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def _partner(values: np.ndarray) -> int:
    """The most frequent non-zero id in ``values`` (ties: the smallest id); 0 when there is none."""
    values = values[values > 0]
    if values.size == 0:
        return 0
    ids, counts = np.unique(values, return_counts=True)
    return int(ids[np.argmax(counts)])  # np.unique sorts ids, argmax takes the first maximum


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def classify_failures(pred: np.ndarray, gt: np.ndarray) -> Failures:
    """Classify every official false negative of one image (module docstring).

    Args:
        pred: predicted label map, int (H, W), 0 = background, 1..N glands.
        gt: ground-truth label map, same shape and convention.

    Raises:
        ValueError: a map is invalid or the shapes differ (as the metrics do).
    """
    out = object_outcomes(pred, gt)
    merged = missed = partial = border = small = 0
    for g in out.fn:
        mask = gt == g
        inside = pred[mask]
        if np.count_nonzero(inside) < SEEN * inside.size:
            missed += 1
            border += _touches_border(mask)
            small += inside.size < SMALL_AREA
            continue
        s = _partner(inside)
        if _partner(gt[pred == s]) not in (0, g):
            merged += 1
        else:
            partial += 1
    n_gt = int(np.unique(gt[gt > 0]).size)
    return Failures(n_gt, len(out.fn), merged, missed, partial, border, small)


def total_failures(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> Failures:
    """The sum of :func:`classify_failures` over (prediction, ground truth) pairs."""
    total = Failures()
    for pred, gt in pairs:
        total = total + classify_failures(pred, gt)
    return total
