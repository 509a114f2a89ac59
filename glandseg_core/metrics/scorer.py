"""Many predictions scored against one ground truth, as a grid search does: the same `ImageScores` as
`score_image(pred, gt)` for each, with the work that does not depend on the prediction done once.

What carries over between calls (all exact, nothing approximated):
    * the ground truth's validation and its objects' pixels, boundaries and k-d trees (`HausdorffMemo`);
    * every Hausdorff distance, keyed by the predicted object's own pixels and the ground-truth object, so a
      gland that reappears unchanged under other thresholds is never measured again;
    * whole label maps: a prediction identical to an earlier one (same shape, dtype and bytes: a BLAKE2b
      digest) returns the earlier scores.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .glas import ImageScores, scores_of_terms
from .hausdorff import HausdorffMemo, hausdorff_terms
from .overlap import as_label_map, check_pair, terms


def _digest(a: np.ndarray) -> bytes:
    """A 32-byte BLAKE2b digest of an array's shape, dtype and contents."""
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(np.ascontiguousarray(a).data)
    return h.digest()


class ImageScorer:
    """Scores predicted label maps against one ground truth; ``scorer(pred) == score_image(pred, gt)``.

    Args:
        gt: Ground-truth label map (H, W), integer or bool; 0 = background, 1, 2, ... are object ids.

    Raises:
        ValueError: If ``gt`` is not a valid label map (and, per call, if ``pred`` is not or its shape differs).
    """

    def __init__(self, gt: np.ndarray) -> None:
        self.gt = as_label_map(gt, "gt")
        self.memo = HausdorffMemo()
        self._seen: dict[bytes, ImageScores] = {}
        self.scored = 0  # label maps actually scored (not found among earlier ones)

    def __call__(self, pred: np.ndarray) -> ImageScores:
        """The `ImageScores` of ``pred`` (H, W), integer or bool; 0 = background, 1, 2, ... are object ids."""
        p, _ = check_pair(pred, self.gt)
        key = _digest(p)
        hit = self._seen.get(key)
        if hit is None:
            t = terms(p, self.gt)
            hit = self._seen[key] = scores_of_terms(t, *hausdorff_terms(t.ov, self.memo))
            self.scored += 1
        return hit
