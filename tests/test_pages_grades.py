"""The Metrics page offers a Grade choice only where the set's images have GlaS grades (issue #22, minor defects):
an annotation set of one's own images has none, and showed a lone "unknown" pill."""

from __future__ import annotations

import pandas as pd
from streamlit.testing.v1 import AppTest

from glandseg_dashboard.set_results import grade_choices
from tests.test_pages_sets import METRICS_PAGE, set_env  # noqa: F401  (the fixture: a scored annotation set)


def test_grade_choices_leave_out_a_set_without_grades() -> None:
    def tables(*grades: str) -> dict[str, pd.DataFrame]:
        return {"U-Net": pd.DataFrame({"grade": list(grades)})}

    assert grade_choices(tables("unknown", "unknown")) == []
    assert grade_choices(tables("malignant", "benign")) == ["benign", "malignant"]
    assert grade_choices(tables("benign", "unknown")) == [
        "benign",
        "unknown",
    ]  # the others stay choosable


def test_an_annotation_set_on_metrics_has_no_grade_pill(set_env) -> None:  # noqa: F811
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60)
    at.session_state["_kept_choices"] = {("results_set", ""): "annotations:mine"}
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="results_set").value == "annotations:mine"
    assert [p.label for p in at.pills] == ["Split"]  # no "Grade" with a lone "unknown"
    assert not at.info and len(at.get("plotly_chart")) == 6  # the page goes on to its plots
    assert "unknown" not in " ".join(str(h.value) for h in at.subheader)
