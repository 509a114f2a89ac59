"""Tests for glandseg_core.segmenters.tta: view mapping, clustering across views, fading of glands few
views found; TTA as a segmenter option; ``evaluate.compare_tta`` (without and with TTA, side by side).

A fake detector stands in for Mask R-CNN: one detection per dark connected component of each view, with
scores and visibility chosen per call, so every expected mask and score is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from glandseg_core.config import RunConfig, replace_config, save_config
from glandseg_core.evaluation import compare_tta
from glandseg_core.models import build_model
from glandseg_core.segmenters import MaskRCNNSegmenter, UNetSegmenter, make_segmenter, tta
from glandseg_core.thresholds import MaskRCNNPost, UNetPost
from tests.helpers import write_fake_glas

PINK, PURPLE = (235, 170, 200), (90, 40, 120)
H, W = 120, 180
DISCS = [(40, 40, 22), (70, 120, 30), (95, 40, 16)]  # (cy, cx, r); radii make the areas distinct


def disc_image(discs: list[tuple[int, int, int]] = DISCS) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    labels = np.zeros((H, W), np.int32)
    for i, (cy, cx, r) in enumerate(discs, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    image = np.empty((H, W, 3), np.uint8)
    image[:] = PINK
    image[labels > 0] = PURPLE
    return image, labels


class ViewDetector(torch.nn.Module):
    """Detects the dark components of each view it is called on (calls are numbered 0, 1, ...).

    Args:
        score: score of every detection on call i.
        visible: whether a component of a given area is detected on call i.
        ghost: also detect a 10x10 square at the view's top-left corner (another image place per view).
        twice: report every detection twice (two identical detections in one view).
    """

    def __init__(
        self,
        score: Callable[[int], float] = lambda i: 0.9,
        visible: Callable[[int, int], bool] = lambda i, area: True,
        ghost: bool = False,
        twice: bool = False,
    ) -> None:
        super().__init__()
        self.score, self.visible, self.ghost, self.twice, self.calls = score, visible, ghost, twice, 0

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        dark = images[0].mean(0).numpy() < 0.5
        comp, n = ndi.label(dark)
        masks = [comp == k for k in range(1, n + 1) if self.visible(self.calls, int((comp == k).sum()))]
        if self.ghost:
            g = np.zeros_like(dark)
            g[:10, :10] = True
            masks.append(g)
        if self.twice:
            masks = [m for m in masks for _ in range(2)]
        scores = torch.full((len(masks),), self.score(self.calls))
        self.calls += 1
        stack = np.stack(masks) if masks else np.zeros((0, *dark.shape), bool)
        return [{"scores": scores, "masks": torch.from_numpy(stack.astype(np.float32))[:, None]}]


def seg_with(model: torch.nn.Module, *, tta: bool = False, **post: float) -> MaskRCNNSegmenter:
    post_ = MaskRCNNPost(**{"min_area": 20, **post})
    seg = make_segmenter(model, RunConfig(model="maskrcnn"), post_, tta=tta)
    assert isinstance(seg, MaskRCNNSegmenter)
    return seg


def merged(seg: MaskRCNNSegmenter, image: np.ndarray, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    """The detector's views of ``image`` merged (what ``seg.tta = True`` paints)."""
    return tta.merged_views(seg.outputs, image, seg.post, **kw)  # type: ignore[arg-type]


def area_of(r: int) -> int:
    _, labels = disc_image([(60, 90, r)])
    return int((labels > 0).sum())


# ------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(("flip", "k"), tta.VIEWS_8)
def test_unview_inverts_view_image(flip: bool, k: int) -> None:
    rng = np.random.default_rng(k + 4 * flip)
    mask = np.zeros((37, 53), bool)
    mask[5:20, 30:50] = rng.random((15, 20)) > 0.3
    view = tta.view_image(mask, flip, k)
    assert view.shape == ((37, 53) if k % 2 == 0 else (53, 37))
    ys, xs = np.nonzero(view)
    box = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    back_box, back = tta.unview(box, view[box[0] : box[2], box[1] : box[3]], flip, k, view.shape)
    out = np.zeros_like(mask)
    out[back_box[0] : back_box[2], back_box[1] : back_box[3]] = back
    np.testing.assert_array_equal(out, mask)


def test_views_4_are_the_flips() -> None:
    image = np.arange(12).reshape(3, 4)
    views = {tta.view_image(image, f, k).tobytes() for f, k in tta.VIEWS_4}
    flips = {
        np.ascontiguousarray(v).tobytes()
        for v in (image, image[:, ::-1], image[::-1], image[::-1, ::-1])
    }
    assert views == flips


def test_cluster_keeps_views_apart() -> None:
    iou = np.ones((4, 4))
    labels = tta.cluster(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 1]), iou, n_views=2)
    assert sorted(labels.tolist()) == [0, 0, 1, 1] and labels[0] != labels[1]


# ----------------------------------------------------------------------------------------- merged_views


def test_equivariant_detector_gives_each_gland_once_with_full_masks() -> None:
    image, truth = disc_image()
    model = ViewDetector()
    scores, masks = merged(seg_with(model), image)
    assert model.calls == 8
    assert scores.dtype == np.float32 and masks.dtype == np.float32 and masks.shape == (3, H, W)
    np.testing.assert_allclose(scores, 0.9, rtol=1e-6)
    found = sorted((m > 0.5).sum() for m in masks)
    assert found == sorted((truth == i).sum() for i in (1, 2, 3))
    assert set(np.unique(masks)) <= {0.0, 1.0}


def test_score_is_the_mean_over_the_views_that_found_the_gland() -> None:
    image, _ = disc_image()
    small = area_of(16)
    model = ViewDetector(score=lambda i: 0.5 + 0.05 * i, visible=lambda i, area: area != small or i < 5)
    scores, masks = merged(seg_with(model, score_thresh=0.3), image)
    assert len(scores) == 3
    by_area = {int((m > 0).sum()): s for s, m in zip(scores, masks, strict=True)}
    assert by_area[small] == pytest.approx(0.5 + 0.05 * 2)  # calls 0..4
    others = [s for a, s in by_area.items() if a != small]
    assert others == pytest.approx([0.5 + 0.05 * 3.5] * 2)  # calls 0..7
    assert list(scores) == sorted(scores, reverse=True)


def test_gland_found_by_few_views_fades() -> None:
    image, truth = disc_image()
    small, middle = area_of(16), area_of(22)
    seen = {small: range(3), middle: range(5)}  # the small gland in 3 of 8 views, the first in 5 of 8
    model = ViewDetector(visible=lambda i, area: i in seen.get(area, range(8)), ghost=True)
    scores, masks = merged(seg_with(model), image, min_score=0.0)
    assert len(scores) == 2  # small gland (3/8) and the ghosts (1/8 each) never exceed mask_thresh
    areas = sorted(int((m > 0).sum()) for m in masks)
    assert areas == sorted([middle, area_of(30)])
    peak = {int((m > 0).sum()): float(m.max()) for m in masks}
    assert peak[middle] == pytest.approx(5 / 8)
    labels = seg_with(
        ViewDetector(visible=lambda i, a: i in seen.get(a, range(8)), ghost=True), tta=True
    )(image)
    assert labels.max() == 2 and not (labels[truth == 3]).any()


def test_two_detections_of_one_view_stay_apart_and_painting_keeps_one() -> None:
    image, truth = disc_image()
    scores, _ = merged(seg_with(ViewDetector(twice=True)), image)
    assert len(scores) == 6
    labels = seg_with(ViewDetector(twice=True), tta=True)(image)
    assert labels.max() == 3
    np.testing.assert_array_equal(labels > 0, truth > 0)


def test_four_views_and_no_detections() -> None:
    image, _ = disc_image()
    model = ViewDetector()
    scores, masks = merged(seg_with(model), image, views=tta.VIEWS_4)
    assert model.calls == 4 and len(scores) == 3
    empty = np.full((H, W, 3), 230, np.uint8)
    scores, masks = merged(seg_with(ViewDetector()), empty)
    assert scores.shape == (0,) and masks.shape == (0, H, W)


def test_unet_tta_of_an_equivariant_model_changes_nothing() -> None:
    class Pixel(torch.nn.Module):
        multiple = 8

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([-3 * x.mean(1, keepdim=True), x[:, 1:2]], dim=1)

    cfg = replace_config(RunConfig(), model="unet", unet_scale=1.0, train_amp=False)
    seg = make_segmenter(Pixel(), cfg, UNetPost(min_area=20), tta=True)
    assert isinstance(seg, UNetSegmenter)
    image, _ = disc_image()
    with_tta = seg.raw(image)
    seg.tta = False
    np.testing.assert_allclose(with_tta, seg.raw(image), atol=1e-6)


def test_mean_of_views_calls_forward_once_per_view_and_maps_back() -> None:
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    shapes = []

    def forward(v: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(v.shape[-2:]))
        return v * 2

    torch.testing.assert_close(tta.mean_of_views(forward, x), x * 2)
    assert len(shapes) == 8 and set(shapes) == {(3, 5), (5, 3)}
    torch.testing.assert_close(tta.mean_of_views(forward, x, tta.VIEWS_4), x * 2)


def test_maskrcnn_tta_option_paints_the_merged_views() -> None:
    image, truth = disc_image()
    seg = seg_with(ViewDetector(), tta=True)
    raw = seg.raw(image)
    assert seg.model.calls == 8 and raw.shape == (H, W)
    np.testing.assert_array_equal(seg.labels(raw) > 0, truth > 0)
    assert seg.labels(raw).max() == 3


# ------------------------------------------------------------------------------------------ compare_tta


@pytest.mark.slow
def test_compare_tta_compares_plain_and_tta(tmp_path: Path) -> None:
    data = write_fake_glas(tmp_path / "glas", names=("testA_1", "testA_2", "testB_1"))
    cfg = replace_config(
        RunConfig(), model="unet", unet_base=4, unet_depth=2, unet_scale=1.0, train_amp=False
    )
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save(
        {"model": build_model(cfg).state_dict(), "config": asdict(cfg), "epoch": 0},
        model_dir / "weights.pt",
    )
    save_config(cfg, model_dir / "config.json")
    report = compare_tta(model_dir, data, ["testA", "testB"], tmp_path / "out")
    assert list(report["split"]) == ["testA", "testB", "all"]
    assert list(report["n_images"]) == [2, 1, 3]
    for col in ("f1", "f1_tta", "d_f1", "object_dice_tta", "d_object_hausdorff", "sec_per_image_tta"):
        assert col in report.columns
    assert (report["d_f1"] == report["f1_tta"] - report["f1"]).all()
    assert (tmp_path / "out" / "tta_report.csv").is_file()
    assert (tmp_path / "out" / "tta" / "summary.json").is_file()
