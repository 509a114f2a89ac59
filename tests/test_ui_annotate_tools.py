"""Tests for glandseg_dashboard.annotate_tools: one canvas action (fabric.js JSON) turns a label map into the next (#14)."""

from __future__ import annotations

import numpy as np

from glandseg_dashboard import annotate_tools

SIZE = (40, 20)  # canvas (width, height) = twice the 20 x 10 image


def gland_map() -> np.ndarray:
    labels = np.zeros((10, 20), np.int32)
    labels[1:9, 1:9] = 1
    labels[1:9, 11:19] = 2
    return labels


def click(x: float, y: float) -> dict:
    """The point tool's object: a small circle centred on the click (canvas coordinates)."""
    return {"type": "circle", "left": x - 5, "top": y - 5, "radius": 5, "originX": "left", "originY": "top",
            "strokeWidth": 0}  # fmt: skip


def stroke(points: list[tuple[float, float]]) -> dict:
    path = [["M", *points[0]], *[["L", *p] for p in points[1:]]]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return {"type": "path", "path": path, "left": min(xs) - 1, "top": min(ys) - 1, "originX": "left",
            "originY": "top", "width": max(xs) - min(xs), "height": max(ys) - min(ys), "strokeWidth": 2}  # fmt: skip


def test_erase_click_removes_the_gland_under_it() -> None:
    out = annotate_tools.apply("erase", {"objects": [click(10, 10)]}, gland_map(), SIZE)
    assert out is not None and set(np.unique(out)) == {0, 2}
    assert (
        annotate_tools.apply("erase", {"objects": [click(20, 2)]}, gland_map(), SIZE) is None
    )  # background


def test_merge_clicks_name_the_glands_and_apply_waits_for_the_button() -> None:
    drawing = {"objects": [click(10, 10), click(30, 10)]}
    assert annotate_tools.clicked_ids(drawing, gland_map(), SIZE) == [1, 2]
    assert annotate_tools.apply("merge", drawing, gland_map(), SIZE) is None


def test_a_cut_across_a_gland_splits_it() -> None:
    cut = stroke([(10, 0), (10, 20)])  # canvas x 10 = image column 4.5, top to bottom
    out = annotate_tools.apply("split", {"objects": [cut]}, gland_map(), SIZE)
    assert out is not None and len(np.unique(out[1:9, 1:9])) == 2 and (out[1:9, 11:19] == 2).all()
    assert (
        annotate_tools.apply("split", {"objects": [stroke([(30, 0), (30, 6)])]}, gland_map(), SIZE)
        is None
    )


def test_a_freehand_shape_is_added_filled_with_a_new_id() -> None:
    loop = stroke([(20, 4), (24, 4), (24, 14), (20, 14), (20, 4)])
    out = annotate_tools.apply("freedraw", {"objects": [loop]}, gland_map(), SIZE)
    assert out is not None and out[4, 12] == 2 and (out[3:6, 10] == 3).all()  # filled, not an outline
    assert annotate_tools.apply("polygon", {"objects": []}, gland_map(), SIZE) is None


class _State(dict):
    """``st.session_state`` stand-in."""


def test_merge_clicks_add_up_across_reruns_and_clear_after_a_change(monkeypatch) -> None:
    """Each click may arrive from a freshly mounted canvas holding only that click (the browser flow saw only
    the first of two glands register): the editor keeps the selection itself."""
    monkeypatch.setattr(annotate_tools.st, "session_state", _State())
    labels = gland_map()
    editor = annotate_tools.Editor("e", labels, labels.shape)
    editor.pick(annotate_tools.clicked_ids({"objects": [click(10, 10)]}, labels, SIZE))
    editor = annotate_tools.Editor("e", None, labels.shape)  # the next rerun
    editor.pick(annotate_tools.clicked_ids({"objects": [click(10, 10), click(30, 10)]}, labels, SIZE))
    editor.pick([])
    assert editor.picked == [1, 2]
    editor.set(labels.copy())
    assert editor.picked == []
    editor.pick([2])
    editor.clear_picked()
    assert editor.picked == []


def test_start_over_goes_back_to_the_start_and_undo_brings_the_edits_back(monkeypatch) -> None:
    """#22 item 7: the page's one reset ("Start over") acts on the label map, and is itself undoable."""
    monkeypatch.setattr(annotate_tools.st, "session_state", _State())
    start = gland_map()
    editor = annotate_tools.Editor("r", start, start.shape)
    assert not editor.changed(start)
    edited = annotate_tools.apply("erase", {"objects": [click(10, 10)]}, editor.labels, SIZE)
    editor.set(edited)
    assert editor.changed(start) and set(np.unique(editor.labels)) == {0, 2}
    editor.reset(start)
    np.testing.assert_array_equal(editor.labels, start)
    assert not editor.changed(start)
    editor.undo()
    np.testing.assert_array_equal(editor.labels, edited)
    blank = annotate_tools.Editor("b", None, start.shape)
    blank.set(start.copy())
    assert blank.changed(None)
    blank.reset(None)
    assert not blank.labels.any() and not blank.changed(None)
