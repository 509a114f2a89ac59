"""Windows to instances and stitching; with the shipped models (slow): a mosaic of GlaS images segmented with
small windows gives the glands of each image segmented whole (no straight cuts at window borders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from glandseg_core.segmenters.instances import Instances, labels_to_instances, paint, shift
from glandseg_core.slides import predict_slide
from glandseg_core.slides.stitch import Stitcher
from glandseg_core.thresholds import MaskRCNNPost
from tests.helpers import REPO, make_glands
from tests.helpers_slides import Mosaic, write_slide

MODELS = REPO / "trained_models"


def test_labels_to_instances_paints_back_to_the_same_map() -> None:
    _, labels = make_glands(h=80, w=120, n=6)
    labels[labels == 3] = 0  # ids need not be consecutive
    score = np.linspace(0, 1, labels.size, dtype=np.float32).reshape(labels.shape)
    inst = labels_to_instances(labels, score)
    assert len(inst) == len(np.unique(labels)) - 1 and not inst.cut.any()
    post = MaskRCNNPost(score_thresh=0.0, min_area=1, min_visible=0.0)
    painted = paint(inst, post, labels.shape)
    assert np.array_equal(painted > 0, labels > 0)
    for k, (m, b) in enumerate(zip(inst.masks, inst.boxes, strict=True)):
        assert inst.scores[k] == pytest.approx(score[b[0] : b[2], b[1] : b[3]][m].mean())
    assert len(labels_to_instances(np.zeros((5, 5), np.int32))) == 0


def test_stitcher_joins_a_gland_cut_by_two_windows_and_keeps_glands_disjoint() -> None:
    """A gland wider than the overlap is cut in both windows: its two views become one; a whole gland that
    overlaps a cut one keeps its pixels (higher score), and nothing is emitted twice."""
    shape_ = (40, 100)
    gland = np.zeros(shape_, bool)
    gland[10:30, 5:95] = True  # cut by window A (cols 0..60) and B (cols 40..100); 2/9 of it in both
    a = labels_to_instances(gland[:, 0:60].astype(np.int32))
    b = labels_to_instances(gland[:, 40:100].astype(np.int32))
    small = np.zeros((40, 60), np.int32)
    small[2:9, 45:55] = 1  # a whole gland in window B
    b2 = labels_to_instances(small)
    b = Instances(
        np.r_[b.scores, 2.0].astype(np.float32),
        np.r_[b.boxes, b2.boxes],
        b.masks + b2.masks,
        np.zeros(2, bool),
    )
    parts = [
        (shift(a, slice(0, 40), slice(0, 60), shape_), np.array([0, 0, 40, 60])),
        (shift(b, slice(0, 40), slice(40, 100), shape_), np.array([0, 40, 40, 100])),
    ]
    assert parts[0][0].cut.tolist() == [True] and parts[1][0].cut.tolist() == [True, False]
    final = Stitcher(min_area=5, min_visible=0.0).add_row(parts, None)
    assert len(final) == 2
    out = paint(final, MaskRCNNPost(score_thresh=0.0, min_area=1, min_visible=0.0), shape_)
    big = final.masks[int(np.argmin(final.scores))]
    assert big.shape == (20, 90) and big.all()  # joined into the whole gland
    assert (out > 0).sum() == gland.sum() + 70


# ------------------------------------------------------------------------------ shipped models (slow)


def _glas(glas_dir: Path, names: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(glas_dir / f"{n}.bmp").convert("RGB")) for n in names]


def _raster(feats: list[dict], shape_: tuple[int, int], oy: int, ox: int) -> np.ndarray:
    """The features as a label map of a source tile (pixel centres inside each polygon)."""
    out = np.zeros(shape_, np.int32)
    yy, xx = np.mgrid[: shape_[0], : shape_[1]] + 0.5
    for k, f in enumerate(feats, start=1):
        g = shape(f["geometry"])
        inside = shapely.contains_xy(g, xx + ox, yy + oy)
        out[inside] = k
    return out


def _matched(ref: np.ndarray, got: np.ndarray, largest: int) -> tuple[int, int]:
    """(matched, total): glands of ``ref`` away from its edge and smaller than ``largest`` px, and how many of
    them a gland of ``got`` covers with IoU >= 0.8."""
    matched = total = 0
    for gid in np.unique(ref[ref > 0]):
        m = ref == gid
        rows, cols = np.nonzero(m)
        edge = (
            rows.min() < 3
            or cols.min() < 3
            or rows.max() > m.shape[0] - 4
            or cols.max() > m.shape[1] - 4
        )
        if edge or max(np.ptp(rows), np.ptp(cols)) >= largest:
            continue  # cut by the image's edge, or larger than the overlap (no window sees it whole)
        total += 1
        ids, counts = np.unique(got[m], return_counts=True)
        best = ids[np.argmax(counts)]
        if best:
            matched += (m & (got == best)).sum() / (m | (got == best)).sum() >= 0.8
    return matched, total


# Share of the glands that fit in the overlap found on the slide with IoU >= 0.8 against the mosaic segmented in
# one window. U-Net: 24 of 29, the same with bf16 autocast (AMX CPU) and with fp32 (autocast off; the label maps
# differ in 0.1% of pixels): two glands beside a large malignant gland are lost because the window whose border
# cuts that gland merges them into it (a cut view), and their partial view from the other window is then
# dropped as unconfirmed (segmenters/views.py drop_unconfirmed); three more are merged or split near a seam.
# Mask R-CNN: 32 of 35 as measured earlier (a detector's proposals and painting depend on the window it sees).
ONE_WINDOW_SHARE = {"unet": 0.8, "maskrcnn": 0.9}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["unet", "maskrcnn"])
def test_mosaic_with_small_windows_matches_each_tile_whole(
    tmp_path: Path, glas_dir: Path, model: str
) -> None:
    """Seams: a 2x2 mosaic of GlaS images cut into 800-px windows overlapping by 320 (GlaS images are 775x522).

    Against the mosaic segmented in one window, the glands that fit in the overlap (some window sees them whole)
    are on the slide with IoU >= 0.8: :data:`ONE_WINDOW_SHARE` (measured, see there). Against each GlaS image
    segmented whole: 60% (U-Net 8 of 11 with and without autocast: in the mosaic, a neighbour's tissue replaces
    the image's mirrored border, and the U-Net's large receptive field sees it).
    """
    from glandseg_core.segmenters import load_segmenter
    from glandseg_core.segmenters.instances import paint
    from glandseg_core.slides.windows import window_instances

    seg = load_segmenter(MODELS / model)
    images = _glas(glas_dir, ["testA_1", "testA_2", "testA_5", "testA_9"])
    mosaic = Mosaic(images, (2, 2), margin=64, gap=0)
    path = write_slide(tmp_path / "m.svs", mosaic, mpp=0.62, levels=2)
    predict_slide(seg, path, tmp_path / "out", name="m", window=800, overlap=320)
    feats = json.loads((tmp_path / "out" / "m.geojson").read_text())["features"]
    full = mosaic.image()
    got = _raster(feats, full.shape[:2], 0, 0)
    one = window_instances(seg, full)
    ref = paint(one, MaskRCNNPost(score_thresh=0.0, min_area=1, min_visible=0.0), full.shape[:2])
    matched, total = _matched(ref, got, 320 - 4)
    assert total > 20 and matched >= ONE_WINDOW_SHARE[model] * total, ("one window", matched, total)
    matched = total = 0
    for k, image in enumerate(images):
        oy, ox = mosaic.origin(k)
        m, t = _matched(seg(image), got[oy : oy + image.shape[0], ox : ox + image.shape[1]], 320 - 4)
        matched, total = matched + m, total + t
    assert total > 10 and matched >= 0.6 * total, ("each image whole", matched, total)


@pytest.mark.slow
def test_maskrcnn_window_equals_the_segmenter_on_a_glas_image(glas_dir: Path) -> None:
    """At GlaS size, a slide window (``window_instances``: the training scale, each mask pasted into its own
    box) gives exactly the segmenter's image path (torchvision's full-image paste): the same glands, boxes,
    scores and masks, and so the same label map."""
    from glandseg_core.segmenters import load_segmenter
    from glandseg_core.segmenters.instances import survivors

    seg = load_segmenter(MODELS / "maskrcnn")
    image = _glas(glas_dir, ["testA_5"])[0]
    raw = seg.raw(image)  # a GlaS-sized image: one window, no tiling
    a = survivors(raw, seg.post, image.shape[:2])
    b = seg.window_instances(image)
    assert len(a) == len(b) > 5
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks, strict=True))
    assert np.array_equal(paint(b, seg.post, image.shape[:2]), seg.labels(raw))
