"""GlaS challenge metrics, on label maps (pure numpy + scipy: no torch, no file I/O).

Label maps are 2-D integer arrays (H, W): 0=NO masks; 1,2... are mask labels. Ids need not be consecutive, may
exceed 255, and one id may cover several pieces (still one object); nothing is relabelled by connectivity.
Semantics: docs/METRICS.md.

Modules, lowest first (each imports only those before it):
    overlap    validation, the contingency table, partners, TP / Dice terms, ``safe_divide``, the one F1
    hausdorff  exact, pruned object Hausdorff distances and nearest-object search
    glas       the GlaS scores of an image (``score_image``) and of a split (``pool_scores``)
    scorer     ``ImageScorer``: many predictions against one ground truth (a grid search), work shared
"""

from __future__ import annotations

from .glas import (
    HEADLINE_FIGURES,
    ImageScores,
    Outcomes,
    SplitScores,
    glas_f1,
    object_dice,
    object_hausdorff,
    object_outcomes,
    per_object_scores,
    pool_scores,
    score_image,
)
from .hausdorff import HausdorffCache, HausdorffMemo, hausdorff_terms
from .overlap import (
    Overlap,
    as_label_map,
    check_pair,
    detection_scores,
    f1_from_counts,
    overlap,
    safe_divide,
)
from .scorer import ImageScorer

__all__ = [
    "HEADLINE_FIGURES",
    "HausdorffCache",
    "HausdorffMemo",
    "ImageScorer",
    "ImageScores",
    "Outcomes",
    "Overlap",
    "SplitScores",
    "as_label_map",
    "check_pair",
    "detection_scores",
    "f1_from_counts",
    "glas_f1",
    "hausdorff_terms",
    "object_dice",
    "object_hausdorff",
    "object_outcomes",
    "overlap",
    "per_object_scores",
    "pool_scores",
    "safe_divide",
    "score_image",
]
