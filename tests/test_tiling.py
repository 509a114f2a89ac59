"""Tests for glandseg_core.segmenters.tiling: windows, seamless U-Net blending, Mask R-CNN merging across
window borders; the window sizes are passed as a :class:`Tiling`.

The Mask R-CNN tests use a fake detector (one instance per dark connected component of the window it is
given), so every expectation is exact and deterministic.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from glandseg_core.config import RunConfig, replace_config, save_config
from glandseg_core.metrics import score_image
from glandseg_core.models import build_model
from glandseg_core.segmenters import (
    MaskRCNNSegmenter,
    UNetSegmenter,
    load_segmenter,
    make_segmenter,
    tiling,
)
from glandseg_core.segmenters import unet as unet_segment
from glandseg_core.segmenters.instances import masks_to_labels
from glandseg_core.segmenters.tiling import Tiling
from glandseg_core.segmenters.unet import probs_to_labels
from glandseg_core.thresholds import MaskRCNNPost, UNetPost, save_post

PINK, PURPLE = (235, 170, 200), (90, 40, 120)


class FakeDetector(torch.nn.Module):
    """Mask R-CNN stand-in: one detection per 4-connected dark component, score 0.9, mask 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        x = images[0]
        self.shapes.append(tuple(x.shape[-2:]))
        comp, n = ndi.label(x.mean(0).numpy() < 0.5)
        masks = torch.from_numpy((comp[None] == np.arange(1, n + 1)[:, None, None]).astype(np.float32))
        return [
            {
                "scores": torch.full((n,), 0.9),
                "masks": masks[:, None],
                "labels": torch.ones(n, dtype=torch.int64),
            }
        ]


class PixelUNet(torch.nn.Module):
    """U-Net stand-in whose output at a pixel depends only on that pixel (any tiling must reproduce it).

    Like the real U-Net it normalises its [0, 1] input with the ImageNet statistics itself.
    """

    multiple = 8
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        g = x.mean(1, keepdim=True)
        return torch.cat([-3.0 * g, 2.0 * g - 0.5 * x[:, :1]], dim=1)


def disc_image(h: int, w: int, discs: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Pink image with purple discs (cy, cx, r), and their label map (ids 1..n)."""
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int32)
    for i, (cy, cx, r) in enumerate(discs, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    image = np.empty((h, w, 3), np.uint8)
    image[:] = PINK
    image[labels > 0] = PURPLE
    return image, labels


def same_instances(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps hold the same objects (pixel for pixel), whatever their ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[a > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def fake_maskrcnn(post: MaskRCNNPost | None = None, tiling: Tiling | None = None) -> MaskRCNNSegmenter:
    seg = make_segmenter(
        FakeDetector(), RunConfig(model="maskrcnn"), post or MaskRCNNPost(min_area=10), tiling=tiling
    )
    assert isinstance(seg, MaskRCNNSegmenter)
    return seg


def windows(tile: tuple[int, int], overlap: int) -> Tiling:
    """Mask R-CNN windows of ``tile`` overlapping by ``overlap``, for every image (however small)."""
    return Tiling(tile_above=0, maskrcnn_tile=tile, maskrcnn_overlap=overlap)


def pixel_unet(post: UNetPost | None = None, tiling: Tiling | None = None) -> UNetSegmenter:
    cfg = replace_config(RunConfig(), model="unet", unet_scale=1.0, train_amp=False)
    seg = make_segmenter(PixelUNet(), cfg, post or UNetPost(), tiling=tiling)
    assert isinstance(seg, UNetSegmenter)
    return seg


# ----------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("n", "tile", "overlap"), [(10, 20, 5), (20, 20, 5), (21, 20, 5), (1000, 256, 64), (4000, 522, 256)]
)
def test_tile_starts_cover_with_overlap(n: int, tile: int, overlap: int) -> None:
    starts = tiling.tile_starts(n, tile, overlap)
    size = min(tile, n)
    assert starts[0] == 0 and starts[-1] + size == n
    assert all(
        b - a <= size - overlap for a, b in itertools.pairwise(starts)
    )  # neighbours overlap enough
    assert all(b > a for a, b in itertools.pairwise(starts))


def test_tile_starts_rejects_overlap_not_below_tile() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tiling.tile_starts(100, 32, 32)


def test_tiles_cover_every_pixel() -> None:
    cover = np.zeros((700, 1100), np.int32)
    for rows, cols in tiling.tiles(cover.shape, (256, 300), 64):
        assert rows.stop - rows.start == 256 and cols.stop - cols.start == 300
        cover[rows, cols] += 1
    assert cover.min() >= 1


@pytest.mark.parametrize(
    ("n", "tile", "overlap", "align"),
    [(50, 64, 16, 8), (1000, 256, 64, 32), (1500, 768, 256, 32), (777, 100, 30, 16)],
)
def test_aligned_spans_start_on_the_grid_and_overlap(
    n: int, tile: int, overlap: int, align: int
) -> None:
    spans = tiling.aligned_spans(n, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(s % align == 0 for s, _ in spans)
    assert all(e - s <= tile + align - 1 for s, e in spans)
    assert all(
        a_end - b_start >= min(overlap, n) for (_, a_end), (b_start, _) in itertools.pairwise(spans)
    )


def test_ramps_of_neighbours_sum_to_one() -> None:
    n, tile, overlap = 400, 160, 40
    total = np.zeros(n)
    for s in tiling.tile_starts(n, tile, overlap):
        total[s : s + tile] += tiling.ramp(tile, s, n, overlap)
    assert total.min() > 0
    starts = tiling.tile_starts(n, tile, overlap)
    assert starts == [0, 120, 240]  # evenly spaced: the mirrored ramps sum to exactly 1
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_needs_tiling_threshold() -> None:
    assert not tiling.needs_tiling((tiling.TILE_ABOVE, tiling.TILE_ABOVE, 3))
    assert tiling.needs_tiling((tiling.TILE_ABOVE + 1, 10, 3))
    assert tiling.needs_tiling((10, 50), limit=40)
    assert Tiling().tile_above == tiling.TILE_ABOVE
    assert not Tiling().needed((tiling.TILE_ABOVE, tiling.TILE_ABOVE, 3))
    assert Tiling().needed((tiling.TILE_ABOVE + 1, 10, 3))
    assert Tiling(tile_above=40).needed((10, 50)) and not Tiling(tile_above=50).needed((10, 50))


# ------------------------------------------------------------------------------------------------ U-Net


def test_unet_tiled_equals_untiled_for_a_pointwise_model() -> None:
    seg = pixel_unet(tiling=Tiling(unet_tile=128, unet_overlap=32))
    image = np.random.default_rng(0).integers(0, 256, (300, 412, 3), dtype=np.uint8)
    x = seg.prepare(image)
    whole = seg.prepared_probs(x, tiled=False)
    tiled = seg.prepared_probs(x, tiled=True)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    direct = tiling.blend_windows(seg.window, x, tile=128, overlap=32, align=8)
    torch.testing.assert_close(direct, whole, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_unet_tiled_agrees_with_untiled_on_a_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = replace_config(
        RunConfig(), model="unet", unet_base=4, unet_depth=3, unet_scale=0.5, train_amp=False
    )
    model = build_model(cfg).eval()
    post = UNetPost(fg_thresh=0.5, min_area=20, min_marker_area=5)
    discs = [(80, 90, 40), (200, 300, 50), (330, 120, 45), (120, 560, 60), (300, 520, 35)]
    image, _ = disc_image(420, 660, discs)
    whole = make_segmenter(model, cfg, post).raw(image)
    # unet_tile is at the U-Net's scale: 3x4 windows over a 210x330 input
    seg = make_segmenter(model, cfg, post, tiling=Tiling(tile_above=256, unet_tile=96, unet_overlap=40))
    calls = []
    real = unet_segment.blend_windows
    monkeypatch.setattr(unet_segment, "blend_windows", lambda *a, **k: calls.append(1) or real(*a, **k))
    tiled = seg.raw(image)
    assert calls, "a large image must go through tiling"
    assert tiled.shape == whole.shape == (2, 420, 660)
    assert np.abs(tiled - whole).max() < 1e-3  # untrained: probabilities span about 0.46..0.56
    assert np.abs(tiled - whole).mean() < 1e-5
    # thresholds at the medians make the label maps as sensitive to small differences as they can be
    post = UNetPost(
        fg_thresh=float(np.median(whole[0])), contour_thresh=float(np.median(whole[1])), min_area=20
    )
    a, b = probs_to_labels(whole, post), probs_to_labels(tiled, post)
    assert ((a > 0) == (b > 0)).mean() > 0.999


def test_unet_predict_on_a_large_image_keeps_glands_whole_across_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seg = pixel_unet(UNetPost(min_area=20), Tiling(tile_above=200, unet_tile=128, unet_overlap=32))
    image, truth = disc_image(
        300, 400, [(150, 128, 40), (60, 300, 30)]
    )  # the first disc sits on a border
    spans = []
    real = unet_segment.blend_windows
    monkeypatch.setattr(unet_segment, "blend_windows", lambda *a, **k: spans.append(k) or real(*a, **k))
    labels = seg(image)
    assert spans == [
        {"tile": 128, "overlap": 32, "align": 8}
    ]  # the large image went through the windows
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    assert labels.max() == 2 and same_instances(labels, truth)


# ------------------------------------------------------------------------------------------- Mask R-CNN


def test_gland_crossing_a_window_border_is_neither_duplicated_nor_cut() -> None:
    seg = fake_maskrcnn(tiling=windows((300, 400), 150))
    # windows (300, 400) with overlap 150: columns start at 0, 250, 400; the disc spans x 210..290
    image, truth = disc_image(300, 800, [(150, 250, 40)])
    labels = seg(image)
    assert labels.max() == 1
    np.testing.assert_array_equal(labels > 0, truth > 0)
    assert max(seg.model.shapes) <= (300, 400)  # the model only ever saw windows


def test_tiled_maskrcnn_matches_untiled_on_many_glands() -> None:
    rng = np.random.default_rng(3)
    discs, taken = [], np.zeros((640, 900), bool)
    yy, xx = np.mgrid[:640, :900]
    while len(discs) < 14:
        r = int(rng.integers(15, 45))
        cy, cx = int(rng.integers(r, 640 - r)), int(rng.integers(r, 900 - r))
        d = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 3) ** 2
        if not (d & taken).any():
            discs.append((cy, cx, r))
            taken |= d
    image, truth = disc_image(640, 900, discs)
    seg = fake_maskrcnn(tiling=windows((200, 260), 100))
    scores, masks = seg.outputs(image)
    whole = masks_to_labels(scores, masks, seg.post, shape=image.shape[:2])
    tiled = seg(image)
    assert same_instances(whole, truth)
    assert same_instances(tiled, truth)
    assert score_image(tiled, whole).f1 == 1.0


def test_gland_larger_than_the_overlap_is_joined_from_its_cut_pieces() -> None:
    seg = fake_maskrcnn(tiling=windows((200, 200), 60))
    # a 200 px disc with windows of 200 px overlapping by 60: no window holds it whole
    image, truth = disc_image(200, 500, [(100, 250, 99)])
    labels = seg(image)
    assert labels.max() == 1
    np.testing.assert_array_equal(labels > 0, truth > 0)


def test_predict_routes_large_images_through_tiling() -> None:
    seg = fake_maskrcnn(tiling=Tiling(tile_above=512, maskrcnn_tile=(300, 400), maskrcnn_overlap=120))
    image, truth = disc_image(600, 900, [(300, 450, 50), (100, 100, 40), (500, 800, 45)])
    labels = seg(image)
    assert same_instances(labels, truth)
    assert max(seg.model.shapes) == (300, 400)
    small = fake_maskrcnn(tiling=seg.tiling)
    small(image[:500, :500])  # not above tile_above: one pass over the whole image
    assert small.model.shapes == [(500, 500)]


@pytest.mark.slow
def test_load_segmenter_skips_unpaintable_detections_without_changing_labels(tmp_path: Path) -> None:
    cfg = replace_config(
        RunConfig(),
        model="maskrcnn",
        maskrcnn_backbone="resnet18",
        maskrcnn_min_size=128,
        maskrcnn_max_size=192,
        maskrcnn_detections_per_img=20,
        train_amp=False,
    )
    torch.manual_seed(0)
    torch.save(
        {"model": build_model(cfg).state_dict(), "config": asdict(cfg), "epoch": 0},
        tmp_path / "weights.pt",
    )
    save_config(cfg, tmp_path / "config.json")
    image, _ = disc_image(128, 192, [(60, 60, 30), (70, 140, 25)])
    for thresh in (0.51, 0.52):  # the untrained model scores 0.50..0.54: some pass, some do not
        save_post(
            MaskRCNNPost(score_thresh=thresh, min_area=1, min_visible=0.1), tmp_path / "postprocess.json"
        )
        seg = load_segmenter(tmp_path)
        assert isinstance(seg, MaskRCNNSegmenter)
        assert thresh - 1e-6 < seg.model.roi_heads.score_thresh < thresh
        scores, _ = seg.outputs(image)
        assert (scores >= thresh).all()
        labels = seg(image)
        seg.model.roi_heads.score_thresh = 0.05  # torchvision's: every detection, then painting filters
        all_scores, all_masks = seg.outputs(image)
        np.testing.assert_array_equal(
            labels, masks_to_labels(all_scores, all_masks, seg.post, (128, 192))
        )
