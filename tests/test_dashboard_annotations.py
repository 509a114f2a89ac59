"""Tests for glandseg_dashboard.annotations: fabric.js drawings <-> label maps, at any canvas scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import polygon as sk_polygon

from glandseg_core.imaging.io import read_label_map
from glandseg_core.metrics import score_image
from glandseg_dashboard import annotations, label_edits
from glandseg_dashboard.annotations import (
    canvas_size,
    drawing_to_labels,
    fill_polygon,
    image_data_to_labels,
    labels_to_drawing,
    object_outline,
)
from tests.helpers import make_glands


def square(x0: float, y0: float, x1: float, y1: float, **extra: object) -> dict:
    """A fabric Polygon as the canvas's polygon tool emits it (absolute points, centre origin)."""
    pts = [{"x": x0, "y": y0}, {"x": x1, "y": y0}, {"x": x1, "y": y1}, {"x": x0, "y": y1}]
    obj = {
        "type": "Polygon",
        "points": pts,
        "left": (x0 + x1) / 2,
        "top": (y0 + y1) / 2,
        "strokeWidth": 2,
    }
    obj.update(extra)
    return obj


def test_canvas_size_fits_800_pixels() -> None:
    assert canvas_size((522, 775)) == (775, 522)
    assert canvas_size((1000, 1600)) == (800, 500)


@pytest.mark.parametrize("size", [None, (48, 32), (150, 100)])
def test_labels_round_trip_through_the_canvas(size: tuple[int, int] | None) -> None:
    _, gt = make_glands(64, 96, n=4, seed=3)
    gt = np.where(np.isin(gt, [1, 2, 3, 4]), gt, 0)
    cw, ch = size or (96, 64)
    drawing = labels_to_drawing(gt, (cw * 2, ch * 2) if size else None, tolerance=0.0, min_area=0)
    back = drawing_to_labels(drawing, gt.shape, (cw * 2, ch * 2) if size else None)
    assert back.dtype == np.int32 and back.shape == gt.shape
    s = score_image(back, gt)
    assert s.f1 == 1.0 and s.pixel_iou > 0.97, (s.f1, s.pixel_iou)
    if size is None:
        # pieces of the same gland may come back as separate glands, but pixels are exact
        assert np.array_equal(back > 0, gt > 0)


def test_real_sample_round_trip_is_close_after_simplification() -> None:
    repo = Path(__file__).resolve().parents[1]
    gt = read_label_map(repo / "samples" / "testA_1_anno.png")
    size = canvas_size(gt.shape)
    drawing = labels_to_drawing(gt, size)
    assert all(len(o["points"]) < 400 for o in drawing["objects"])  # simplified: editable
    s = score_image(drawing_to_labels(drawing, gt.shape, size), gt)
    assert s.f1 == 1.0 and s.object_dice > 0.99


def test_fabric_transforms_are_applied() -> None:
    base = square(10, 10, 50, 30)
    expected = np.array([[10, 10], [50, 10], [50, 30], [10, 30]], float)
    assert np.allclose(object_outline(base), expected)
    # same square, positioned by its top-left corner (left/top include half the stroke width)
    assert np.allclose(
        object_outline(dict(base, originX="left", originY="top", left=9, top=9)), expected
    )
    # scaled x2 around its centre, then rotated 90 degrees
    out = object_outline(dict(base, scaleX=2, angle=90))
    assert np.allclose(out.min(0), [20, -20]) and np.allclose(out.max(0), [40, 60])
    flipped = object_outline(dict(base, flipX=True))
    assert np.allclose(flipped[0], [50, 10])


def test_freehand_path_rect_and_circle_become_glands() -> None:
    path = {  # a closed loop drawn with the pencil: absolute coords, left/top = bbox corner - stroke/2
        "type": "Path",
        "path": [["M", 10, 10], ["Q", 20, 10, 30, 10], ["Q", 30, 20, 30, 30], ["Q", 20, 30, 10, 30], ["L", 10, 10]],
        "left": 9, "top": 9, "originX": "left", "originY": "top", "strokeWidth": 2,
    }  # fmt: skip
    rect = {
        "type": "Rect",
        "left": 60,
        "top": 10,
        "width": 20,
        "height": 10,
        "originX": "left",
        "originY": "top",
        "strokeWidth": 0,
    }
    circle = {"type": "Circle", "left": 70, "top": 45, "radius": 8, "strokeWidth": 0}
    line = {"type": "Line", "x1": 0, "y1": 0, "x2": 5, "y2": 5}
    labels = drawing_to_labels({"objects": [path, rect, circle, line]}, (64, 96))
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert labels[20, 20] == 1 and labels[15, 70] == 2 and labels[45, 70] == 3
    assert abs((labels == 1).sum() - 400) < 30 and (labels == 2).sum() == 200
    assert abs((labels == 3).sum() - np.pi * 64) < 15


def test_overlaps_later_wins_and_hidden_ids_are_dropped() -> None:
    objs = [square(0, 0, 20, 20), square(10, 10, 30, 30), square(40, 0, 45, 5), square(39, 0, 46, 6)]
    labels = drawing_to_labels({"objects": objs}, (40, 60))
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # the third square is covered by the fourth
    assert labels[15, 15] == 2 and labels[5, 5] == 1 and labels[2, 42] == 3


def test_scale_maps_back_to_full_resolution() -> None:
    # a canvas at half size: a square of canvas 10..20 covers image pixels 20..39
    labels = drawing_to_labels({"objects": [square(10, 10, 20, 20)]}, (100, 100), size=(50, 50))
    rows, cols = np.nonzero(labels)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 20, 39)


def test_empty_and_garbage_drawings() -> None:
    assert drawing_to_labels(None, (8, 8)).sum() == 0
    bad = [{"type": "Polygon", "points": []}, {"type": "Path", "path": [["A", 1]]}, {"type": "Textbox"}]
    assert drawing_to_labels({"objects": bad}, (8, 8)).sum() == 0


def test_fill_polygon_matches_skimage() -> None:
    rng = np.random.default_rng(0)
    for k in range(200):
        n = rng.integers(3, 10)
        xs, ys = rng.uniform(-5, 40, n), rng.uniform(-5, 30, n)
        if k % 2:  # vertices on pixel centres: edges run through centres
            xs, ys = xs.round(), ys.round()
        rr, cc = sk_polygon(ys, xs, (25, 35))
        ref = np.zeros((25, 35), bool)
        ref[rr, cc] = True
        mine = fill_polygon(xs, ys, (25, 35))
        mine = np.zeros_like(ref) if mine is None else mine
        assert (mine != ref).sum() == 0


def test_fill_polygon_edge_rule_and_clipping() -> None:
    square = fill_polygon(np.array([0.0, 4, 4, 0]), np.array([0.0, 0, 4, 4]), (10, 10))
    assert square is not None and square.sum() == 25 and square[:5, :5].all()  # closed: edges count
    assert (
        fill_polygon(np.array([20.0, 30, 30]), np.array([0.0, 0, 5]), (10, 10)) is None
    )  # off the image
    clipped = fill_polygon(np.array([-5.0, 5, 5, -5]), np.array([-5.0, -5, 2, 2]), (10, 10))
    assert clipped is not None and clipped.sum() == 6 * 3


def test_image_data_fallback_labels_painted_regions() -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[2:8, 2:8, 3] = 255
    rgba[10:18, 15:25, 3] = 128
    labels = image_data_to_labels(rgba, (40, 60))
    assert labels.shape == (40, 60) and labels.max() == 2
    assert image_data_to_labels(None, (4, 4)).shape == (4, 4)


# ---------------------------------------------------------------------------------- label-map corrections

TWO = np.array(
    [
        [0, 1, 1, 0, 2, 2],
        [0, 1, 1, 0, 2, 2],
        [0, 0, 0, 0, 0, 0],
        [3, 3, 0, 0, 0, 0],
    ],
    np.int32,
)


def test_ids_at_skips_background_outside_and_repeats() -> None:
    points = np.array([[0, 1], [3, 0], [0.6, 1.4], [2, 2], [-1, 0], [0, 9], [1, 5]])
    assert label_edits.ids_at(TWO, points) == [1, 3, 2]


def test_erase_and_merge_ids() -> None:
    erased = label_edits.erase_ids(TWO, [2, 3])
    assert erased.dtype == np.int32 and set(np.unique(erased)) == {0, 1}
    assert (erased[TWO == 1] == 1).all() and TWO.max() == 3  # the input is unchanged
    merged = label_edits.merge_ids(TWO, [3, 2])
    assert set(np.unique(merged)) == {0, 1, 2} and (merged[TWO == 3] == 2).all()
    assert (label_edits.merge_ids(TWO, []) == TWO).all()


def test_add_labels_paints_new_ids_over_old_glands() -> None:
    drawn = np.zeros_like(TWO)
    drawn[0:2, 2:5] = 1
    out = label_edits.add_labels(TWO, drawn)
    assert (out[0:2, 2:5] == 4).all() and (out[0:2, 1] == 1).all() and (out[0:2, 5] == 2).all()


def test_split_along_a_line_cuts_a_gland_in_two_and_keeps_its_area() -> None:
    labels = np.zeros((10, 12), np.int32)
    labels[2:8, 1:11] = 5  # one 6 x 10 gland
    labels[0, 0] = 7  # another gland the line does not touch
    out = label_edits.split_along(labels, np.array([[0.0, 5.0], [9.0, 6.0]]))  # a nearly vertical cut
    assert out.dtype == np.int32 and out[0, 0] == 7
    ids = set(np.unique(out[labels == 5]))
    assert len(ids) == 2 and 5 in ids and (out[labels == 0] == 0).all()  # cut pixels stay in the gland
    assert (out[2:8, 1:4] == out[2, 1]).all() and (out[2:8, 8:11] == out[2, 10]).all()
    assert out[2, 1] != out[2, 10]


def test_split_along_a_diagonal_line_separates_4_connected_pieces() -> None:
    labels = np.ones((8, 8), np.int32)
    out = label_edits.split_along(labels, np.array([[0, 0], [7, 7]]))
    assert len(np.unique(out)) == 2 and (out > 0).all()
    assert out[0, 7] != out[7, 0]


def test_a_line_that_does_not_cut_through_leaves_the_gland_whole() -> None:
    labels = np.zeros((10, 10), np.int32)
    labels[2:8, 2:8] = 1
    assert (label_edits.split_along(labels, np.array([[0, 5], [4, 5]])) == labels).all()
    assert (label_edits.split_along(labels, np.array([[0, 0], [0, 9]])) == labels).all()  # on background


def test_canvas_points_are_image_pixel_centres() -> None:
    obj = {"type": "path", "path": [["M", 10, 20], ["L", 30, 20], ["L", 30, 40]], "left": 9.5,
           "top": 19.5, "originX": "left", "originY": "top", "width": 20, "height": 20}  # fmt: skip
    pts = annotations.canvas_points(obj, (100, 200), (400, 200))  # the canvas twice the image's size
    assert pts is not None and np.allclose(pts[0], [20 / 2 - 0.5, 10 / 2 - 0.5], atol=0.3)
    assert annotations.canvas_points({"type": "text"}, (10, 10), (10, 10)) is None
