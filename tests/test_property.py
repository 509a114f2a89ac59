"""Property tests (hypothesis): image/label readers on random arrays, GlaS metrics on random label maps.

Random bytes are fuzzed in test_io.py and the metrics are checked against a naive reference in
test_metrics.py; here: encoded random arrays of every dtype, arbitrary Python objects as sources, and the
ranges/bounds every score must respect. Examples are few (<= 50 each) so the suite stays fast.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from glandseg_core.imaging.io import ImageError, label_png_bytes, read_image, read_label_map
from glandseg_core.metrics import pool_scores, score_image

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sides = st.integers(1, 24)


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


# --------------------------------------------------------------------------------------- image reading

# (dtype, channels, formats Pillow can write that array to)
_KINDS = [
    (np.uint8, 0, ("PNG", "BMP", "TIFF")),
    (np.uint8, 3, ("PNG", "BMP", "TIFF")),
    (np.uint8, 4, ("PNG", "TIFF")),
    (np.uint16, 0, ("PNG", "TIFF")),
    (np.int32, 0, ("TIFF",)),
    (np.float32, 0, ("TIFF",)),
    (np.bool_, 0, ("PNG", "TIFF")),
]


@st.composite
def encoded_arrays(draw: st.DrawFn) -> tuple[np.ndarray, str, bytes]:
    dtype, channels, formats = draw(st.sampled_from(_KINDS))
    shape = (draw(sides), draw(sides)) + ((channels,) if channels else ())
    if dtype == np.float32:
        elements = st.floats(-1e6, 1e6, width=32, allow_nan=False)
    elif dtype == np.int32:
        elements = st.integers(-(2**31), 2**31 - 1)
    else:
        elements = None
    arr = draw(arrays(dtype, shape, elements=elements))
    fmt = draw(st.sampled_from(formats))
    return arr, fmt, encode(arr, fmt)


@FAST
@pytest.mark.filterwarnings("ignore::UserWarning")
@given(case=encoded_arrays())
def test_read_image_of_any_encoded_array(case: tuple[np.ndarray, str, bytes]) -> None:
    arr, fmt, data = case
    h, w = arr.shape[:2]
    try:
        out = read_image(data)
    except ImageError as exc:
        assert "\n" not in str(exc)
        assert min(h, w) < 8, (
            f"{arr.dtype}{arr.shape} as {fmt} refused: {exc}"
        )  # only tiny images may be
        return
    assert out.dtype == np.uint8 and out.shape == (h, w, 3)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        np.testing.assert_array_equal(out, arr)  # lossless formats keep RGB exactly
    if arr.ndim == 2:
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    if arr.dtype == np.uint8 and arr.ndim == 2:
        np.testing.assert_array_equal(out[..., 0], arr)


@st.composite
def label_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32]))
    top = {np.uint8: 255, np.uint16: 65535, np.int32: 2**31 - 1, np.float32: 2**24}[dtype]
    ids = st.integers(0, top).map(float) if dtype == np.float32 else st.integers(0, top)
    return draw(arrays(dtype, (draw(sides), draw(sides)), elements=ids))


@FAST
@given(labels=label_arrays())
def test_label_maps_round_trip_exactly(labels: np.ndarray) -> None:
    fmt = {np.dtype(np.uint8): "PNG", np.dtype(np.uint16): "PNG"}.get(labels.dtype, "TIFF")
    out = read_label_map(encode(labels, fmt))
    assert out.dtype == np.int32 and out.shape == labels.shape
    np.testing.assert_array_equal(out, labels.astype(np.int64))
    if labels.max() <= 65535:
        np.testing.assert_array_equal(read_label_map(label_png_bytes(labels.astype(np.int64))), out)


@FAST
@given(
    labels=arrays(np.float32, st.tuples(sides, sides), elements=st.floats(-1e3, 1e3, width=32)),
)
def test_label_maps_with_negative_or_fractional_values_are_refused(labels: np.ndarray) -> None:
    bad = (labels < 0).any() or (labels != np.floor(labels)).any()
    try:
        out = read_label_map(encode(labels, "TIFF"))
    except ImageError as exc:
        assert bad and "\n" not in str(exc)
        return
    assert not bad and out.dtype == np.int32


@FAST
@given(
    src=st.one_of(
        arrays(st.sampled_from([np.uint8, np.int64, np.float64]), st.tuples(sides, sides)),
        st.integers(),
        st.none(),
        st.lists(st.integers(0, 255), max_size=8),
        st.binary(max_size=64).map(memoryview),
    )
)
def test_any_object_is_read_or_refused_with_an_image_error(src: object) -> None:
    for reader in (read_image, read_label_map):
        try:
            reader(src)  # type: ignore[arg-type]
        except ImageError as exc:
            assert "\n" not in str(exc)


# --------------------------------------------------------------------------------------------- metrics


@st.composite
def label_map_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two label maps of one shape; ids are few (so objects overlap) but may be large or non-consecutive."""
    h, w = draw(sides), draw(sides)
    pool = draw(st.lists(st.integers(1, 70_000), min_size=1, max_size=5, unique=True))
    ids = st.sampled_from([0, 0, *pool])
    dtype = draw(st.sampled_from([np.int32, np.int64, np.uint32]))
    return draw(arrays(dtype, (h, w), elements=ids)), draw(arrays(dtype, (h, w), elements=ids))


def _n_objects(x: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(x)))


@FAST
@given(maps=label_map_pairs())
def test_scores_stay_in_range(maps: tuple[np.ndarray, np.ndarray]) -> None:
    pred, gt = maps
    s = score_image(pred, gt)
    assert (s.n_pred, s.n_gt) == (_n_objects(pred), _n_objects(gt))
    assert 0 <= s.tp <= min(s.n_gt, s.n_pred)
    assert (s.fp, s.fn) == (s.n_pred - s.tp, s.n_gt - s.tp)
    for v in (
        s.f1,
        s.precision,
        s.recall,
        s.f2,
        s.object_dice,
        s.pixel_iou,
        s.pixel_dice,
        s.count_score,
    ):
        assert 0.0 <= v <= 1.0
    assert s.object_hausdorff >= 0.0 and math.isfinite(s.object_hausdorff)
    if s.n_pred and s.n_gt:
        assert s.object_hausdorff <= math.hypot(*gt.shape)
    if s.tp + s.fp + s.fn:
        assert s.f1 == pytest.approx(2 * s.tp / (2 * s.tp + s.fp + s.fn))


@FAST
@given(maps=label_map_pairs())
def test_score_of_a_map_against_itself_is_perfect(maps: tuple[np.ndarray, np.ndarray]) -> None:
    x = maps[0]
    s = score_image(x, x.astype(np.int64))
    assert (s.f1, s.object_dice, s.object_hausdorff, s.pixel_iou, s.pixel_dice, s.count_score) == (
        1,
        1,
        0,
        1,
        1,
        1,
    )
    assert s.tp == s.n_gt == s.n_pred == _n_objects(x) and s.fp == s.fn == 0


@FAST
@given(maps=st.lists(label_map_pairs(), min_size=1, max_size=4))
def test_pooled_scores_stay_in_range(maps: list[tuple[np.ndarray, np.ndarray]]) -> None:
    scores = [score_image(p, g) for p, g in maps]
    pooled = pool_scores(scores)
    assert pooled.n_images == len(maps) and pooled.tp == sum(s.tp for s in scores)
    for v in (pooled.pooled_f1, pooled.pooled_object_dice, pooled.mean_f1, pooled.mean_object_dice):
        assert 0.0 <= v <= 1.0
    assert pooled.pooled_object_hausdorff >= 0.0 and pooled.mean_object_hausdorff >= 0.0


@FAST
@given(
    a=arrays(
        st.sampled_from([np.int8, np.int32, np.uint8, np.float32, np.float64, np.bool_]),
        st.tuples(st.integers(0, 6), st.integers(0, 6)) | st.tuples(st.integers(1, 4)),
        elements=None,
    ),
    b=arrays(np.int32, st.tuples(st.integers(0, 6), st.integers(0, 6)), elements=st.integers(0, 3)),
)
def test_any_array_is_scored_or_refused_with_a_value_error(a: np.ndarray, b: np.ndarray) -> None:
    try:
        s = score_image(a, b)
    except ValueError as exc:
        assert str(exc)
        return
    assert a.shape == b.shape and 0.0 <= s.f1 <= 1.0 and s.object_hausdorff >= 0.0
