"""Scoring with the official GlaS metrics: :func:`evaluate` on any data set (``scoring``), the files and the
test-set history its callers ask for (``records``), and the with/without-TTA report (``tta``)."""

from __future__ import annotations

from .records import (
    HISTORY_FIGURES,
    RELABEL_SUFFIX,
    TEST_HISTORY,
    TEST_SPLITS,
    format_summary,
    read_relabel_summary,
    read_test_history,
    record_test_scoring,
    write_results,
)
from .scoring import (
    PER_IMAGE_COLUMNS,
    PREDICTION_EXTS,
    PREDICTION_SUFFIX,
    SUMMARY_KEYS,
    evaluate,
    prediction_files,
    relabel_components,
    score_items,
    summarise,
)
from .tta import compare_tta

__all__ = [
    "HISTORY_FIGURES",
    "PER_IMAGE_COLUMNS",
    "PREDICTION_EXTS",
    "PREDICTION_SUFFIX",
    "RELABEL_SUFFIX",
    "SUMMARY_KEYS",
    "TEST_HISTORY",
    "TEST_SPLITS",
    "compare_tta",
    "evaluate",
    "format_summary",
    "prediction_files",
    "read_relabel_summary",
    "read_test_history",
    "record_test_scoring",
    "relabel_components",
    "score_items",
    "summarise",
    "write_results",
]
