"""Segmenters own their plan and report progress (issue #19, items 2 and 3): ``Segmenter.plan`` counts the forward
passes a call runs, ``raw``/``__call__`` report them as :class:`glandseg_core.progress.Step` s, the dashboard's
worker and the CLI's bar show the same counts, ``segmenter(image, mpp=)`` segments at the model's scale, and the
Mask R-CNN's native windows change no private attribute of torchvision's model.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glandseg_core.config import PRESETS, RunConfig, replace_config
from glandseg_core.imaging.io import read_image
from glandseg_core.models import build_model
from glandseg_core.models.maskrcnn_view import ViewSettings, inference_view
from glandseg_core.progress import Step, TextBar
from glandseg_core.segmenters import MaskRCNNSegmenter, UNetSegmenter, load_segmenter, make_segmenter
from glandseg_core.segmenters.native import maskrcnn_instances, native_view
from glandseg_core.segmenters.tiling import MASKRCNN_TILE, Tiling
from glandseg_core.thresholds import MaskRCNNPost, UNetPost
from glandseg_dashboard import worker
from tests.helpers import REPO
from tests.test_tiling import FakeDetector, PixelUNet, disc_image

SAMPLE = REPO / "samples" / "testA_1.png"


class Counting(torch.nn.Module):
    """Counts the forward passes of the module it wraps (the network as the segmenter calls it)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0
        self.multiple = getattr(inner, "multiple", 1)

    def forward(self, *args: object) -> object:
        self.calls += 1
        return self.inner(*args)


def unet(tta: bool, tiling: Tiling, scale: float = 1.0) -> UNetSegmenter:
    cfg = replace_config(RunConfig(), model="unet", unet_scale=scale, train_amp=False)
    seg = make_segmenter(Counting(PixelUNet()), cfg, UNetPost(), tta=tta, tiling=tiling)
    assert isinstance(seg, UNetSegmenter)
    return seg


def fake_maskrcnn(tta: bool, tiling: Tiling) -> MaskRCNNSegmenter:
    seg = make_segmenter(
        Counting(FakeDetector()),
        RunConfig(model="maskrcnn"),
        MaskRCNNPost(min_area=10),
        tta=tta,
        tiling=tiling,
    )
    assert isinstance(seg, MaskRCNNSegmenter)
    return seg


def tiny_maskrcnn(tta: bool = False, tiling: Tiling | None = None) -> MaskRCNNSegmenter:
    """An untrained torchvision Mask R-CNN (small input size: fast on a CPU)."""
    torch.manual_seed(0)
    cfg = replace_config(
        PRESETS["glandseg-maskrcnn-cpu"],
        maskrcnn_min_size=128,
        maskrcnn_max_size=192,
        maskrcnn_detections_per_img=8,
        train_amp=False,
    )
    seg = make_segmenter(
        build_model(cfg).eval(), cfg, MaskRCNNPost(score_thresh=0.0), tta=tta, tiling=tiling
    )
    assert isinstance(seg, MaskRCNNSegmenter)
    return seg


def check_steps(steps: list[Step], passes: int, windows: int, views: int) -> None:
    """The steps of one call: the plan (0), then one per forward pass, up to ``passes``."""
    assert [s.done for s in steps] == list(range(passes + 1))
    assert {(s.phase, s.unit, s.total) for s in steps} == {("segment", "passes", passes)}
    assert all(s.detail == {"windows": windows, "views": views} for s in steps)


# ------------------------------------------------------------------------------------- plan = passes

IMAGE, _ = disc_image(300, 420, [(80, 90, 40), (200, 300, 50)])


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize(
    ("tiling", "scale", "windows"),
    [
        (Tiling(), 1.0, 1),  # small image: whole
        (Tiling(tile_above=200, unet_tile=128, unet_overlap=32), 1.0, 3 * 4),
        (
            Tiling(tile_above=200, unet_tile=96, unet_overlap=32),
            0.5,
            2 * 3,
        ),  # windows at the U-Net's scale
    ],
)
def test_unet_plan_counts_the_forward_passes(
    tta: bool, tiling: Tiling, scale: float, windows: int
) -> None:
    seg = unet(tta, tiling, scale)
    plan = seg.plan(IMAGE.shape)
    assert (plan.windows, plan.views, plan.passes) == (
        windows,
        8 if tta else 1,
        windows * (8 if tta else 1),
    )
    assert plan.working_shape == (300, 420) and plan.factor == 1.0
    steps: list[Step] = []
    labels = seg(IMAGE, progress=steps.append)
    assert labels.shape == IMAGE.shape[:2]
    assert seg.model.calls == plan.passes
    check_steps(steps, plan.passes, plan.windows, plan.views)


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("tiled", [False, True])
def test_maskrcnn_plan_counts_the_forward_passes_of_glas_sized_windows(tta: bool, tiled: bool) -> None:
    tiling = Tiling(tile_above=0, maskrcnn_tile=(160, 200), maskrcnn_overlap=60) if tiled else Tiling()
    seg = fake_maskrcnn(tta, tiling)  # not a torchvision Mask R-CNN: GlaS-sized windows
    plan = seg.plan(IMAGE.shape)
    assert plan.windows == (3 * 3 if tiled else 1) and plan.views == (8 if tta else 1)
    steps: list[Step] = []
    seg(IMAGE, progress=steps.append)
    assert seg.model.calls == plan.passes
    check_steps(steps, plan.passes, plan.windows, plan.views)


@pytest.mark.slow
def test_maskrcnn_plan_counts_native_windows_and_slide_windows() -> None:
    seg = tiny_maskrcnn(tiling=Tiling(tile_above=300, maskrcnn_window=400, maskrcnn_overlap=64))
    image = np.tile(IMAGE, (2, 2, 1))[:560, :840]  # 2 x 3 even windows of up to 400 px
    backbone = seg.model.backbone
    calls: list[int] = []
    hook = backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        plan = seg.plan(image.shape)
        steps: list[Step] = []
        seg.raw(image, progress=steps.append)
        assert (plan.windows, plan.views) == (2 * 3, 1) and len(calls) == plan.passes
        check_steps(steps, plan.passes, plan.windows, plan.views)
        calls.clear()
        steps.clear()
        wplan = seg.window_plan(image.shape)  # a slide window: one pass at the training scale
        seg.window_instances(image, progress=steps.append)
        assert wplan.passes == len(calls) == 1
        check_steps(steps, 1, 1, 1)
    finally:
        hook.remove()


def test_slide_window_plans_count_the_passes_with_tta() -> None:
    tiling = Tiling(tile_above=200, maskrcnn_tile=(160, 200), maskrcnn_overlap=60, unet_tile=128)
    for seg in (fake_maskrcnn(True, tiling), unet(True, tiling)):
        plan = seg.window_plan(IMAGE.shape)
        steps: list[Step] = []
        seg.window_instances(IMAGE, progress=steps.append)
        assert seg.model.calls == plan.passes == plan.windows * 8
        check_steps(steps, plan.passes, plan.windows, 8)
    assert unet(True, tiling).window_plan(IMAGE.shape).windows == 1  # a U-Net window is not tiled again


def test_plan_with_a_pixel_size_starts_from_the_model_scale() -> None:
    seg = unet(False, Tiling(tile_above=200, unet_tile=128, unet_overlap=32))
    big = seg.plan((600, 840), mpp=0.31)  # twice the model's resolution
    assert big.working_shape == (300, 420) and big.factor == pytest.approx(0.5)
    assert big.windows == seg.plan((300, 420)).windows == 12
    assert seg.plan((300, 420), mpp=0.625).factor == 1.0  # within 2%: as it is
    steps: list[Step] = []
    labels = seg(np.repeat(np.repeat(IMAGE, 2, 0), 2, 1), mpp=0.31, progress=steps.append)
    assert labels.shape == (600, 840) and seg.model.calls == big.passes == steps[-1].total
    with pytest.raises(ValueError, match="mpp"):
        seg(IMAGE, mpp=0.0)


# --------------------------------------------------------------------------- worker and CLI, same counts


def _bar_counts(text: str) -> tuple[int, int]:
    """(done, total) of the last state a tqdm bar drew."""
    done, total = re.findall(r"(\d+)/(\d+)", text)[-1]
    return int(done), int(total)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["unet", "maskrcnn"])
def test_the_dashboard_worker_and_the_cli_bar_show_the_same_counts(
    kind: str, tmp_path: Path, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tiled (above 1024 px): the U-Net with TTA; the Mask R-CNN in 1 x 2 native windows
    tta = kind == "unet"
    image = (
        np.tile(read_image(SAMPLE), (5, 3, 1))[:1100]
        if tta
        else np.tile(read_image(SAMPLE), (5, 3, 1))[:1100, :2100]
    )
    job = tmp_path / "job"
    job.mkdir()
    np.save(job / "image.npy", image)
    (job / "job.json").write_text(json.dumps({"model_dir": str(tiny_models / kind), "tta": tta}))
    written: list[dict] = []
    real = worker._write

    def record(path: Path, text: str) -> None:
        if path.name == "progress.json":
            written.append(json.loads(text))
        real(path, text)

    monkeypatch.setattr(worker, "_write", record)
    worker.run(job, worker.Loaded())
    seg = load_segmenter(tiny_models / kind, tta=tta)
    plan = seg.plan(image.shape)
    stream = io.StringIO()
    steps: list[Step] = []
    bar = TextBar(stream)

    def cli(step: Step) -> None:  # the CLI's bar, and what it was told
        steps.append(step)
        bar(step)

    seg(image, progress=cli)
    last = written[-1]
    assert last["phase"] == "post-processing" and last["done"] == last["total"] == plan.passes
    assert (last["windows"], last["views"]) == (plan.windows, plan.views)
    assert plan.passes > 1 and (plan.views == 8) == tta
    assert _bar_counts(stream.getvalue()) == (plan.passes, plan.passes)
    assert [w["done"] for w in written if w["phase"] != "loading"] == [0] + [s.done for s in steps]
    # the same steps drive both: the worker's writer given the CLI's steps writes what the worker wrote
    again: list[dict] = []
    monkeypatch.setattr(worker, "_write", lambda p, t: again.append(json.loads(t)))
    replay = worker.JobProgress(tmp_path)
    for s in steps:
        replay(s)
    clock = ("started", "last")  # wall-clock times differ between the two writers

    def strip(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in w.items() if k not in clock} for w in records]

    assert strip(again) == strip(written[2:])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_app import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))


# --------------------------------------------------------------------------------------- pixel size


@pytest.mark.slow
def test_a_glas_image_enlarged_twice_at_half_the_pixel_size_gives_the_same_glands() -> None:
    seg = load_segmenter(REPO / "trained_models" / "unet", device="cpu")
    image = read_image(SAMPLE)
    h, w = image.shape[:2]
    big = np.asarray(Image.fromarray(image).resize((2 * w, 2 * h), Image.BICUBIC))
    assert seg.plan(big.shape, mpp=0.31).working_shape == (h, w)
    at_model = seg(image, mpp=0.62)
    enlarged = seg(big, mpp=0.31)
    assert enlarged.shape == (2 * h, 2 * w) and enlarged.dtype == np.int32
    n = len(np.unique(at_model)) - 1
    assert n >= 3 and abs((len(np.unique(enlarged)) - 1) - n) <= 1
    assert np.array_equal(at_model, seg(image))  # the model's own pixel size: nothing resampled


# ------------------------------------------------------------------------- native windows, public API


@pytest.mark.slow
def test_native_windows_change_no_attribute_of_the_model() -> None:
    seg = tiny_maskrcnn()
    model = seg.model
    before = (
        dict(model.rpn._pre_nms_top_n),
        dict(model.rpn._post_nms_top_n),
        model.roi_heads.detections_per_img,
        model.transform.min_size,
        model.transform.max_size,
    )
    pre_nms = model.rpn._pre_nms_top_n
    image = np.tile(IMAGE, (3, 3, 1))  # 900 x 1260: 2.8 GlaS images, caps grown
    inst = maskrcnn_instances(seg, image)
    assert inst.shape == image.shape[:2]
    after = (
        dict(model.rpn._pre_nms_top_n),
        dict(model.rpn._post_nms_top_n),
        model.roi_heads.detections_per_img,
        model.transform.min_size,
        model.transform.max_size,
    )
    assert after == before and model.rpn._pre_nms_top_n is pre_nms


@pytest.mark.slow
def test_native_windows_equal_the_model_with_its_caps_grown() -> None:
    """The view built from constructor arguments detects exactly what the model itself detects with the same
    input size and caps (the reference sets them on a copy, as native.py did before)."""
    seg = tiny_maskrcnn()
    image = np.tile(IMAGE, (2, 2, 1))  # 600 x 840
    h, w = image.shape[:2]
    p = seg.cfg.params
    scale = min(p.min_size / MASKRCNN_TILE[0], p.max_size / MASKRCNN_TILE[1])
    area = h * w / (MASKRCNN_TILE[0] * MASKRCNN_TILE[1])
    ref = copy.deepcopy(seg.model)
    ref.transform.min_size, ref.transform.max_size = (min(h, w) * scale,), max(h, w) * scale
    for d in (ref.rpn._pre_nms_top_n, ref.rpn._post_nms_top_n):
        d["testing"] = math.ceil(d["testing"] * area)
    ref.roi_heads.detections_per_img = math.ceil(ref.roi_heads.detections_per_img * area)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        ours, theirs = native_view(seg.model, (h, w), scale)([x])[0], ref([x])[0]
    assert len(theirs["scores"]) > 0 and ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0)


def test_an_inference_view_shares_the_weights_and_is_cached_per_setting() -> None:
    model = tiny_maskrcnn().model
    settings = ViewSettings(300.0, 400.0, 2000, 2000, 200)
    view = inference_view(model, settings)
    assert view is inference_view(model, settings)
    assert all(a is b for a, b in zip(view.parameters(), model.parameters(), strict=True))
    assert not view.training and not view.rpn.training and view.rpn.pre_nms_top_n() == 2000
    assert view.roi_heads.detections_per_img == 200 and view.transform.min_size == (300.0,)
    model.roi_heads.score_thresh = 0.3  # a loaded segmenter raises it: the view follows
    other = inference_view(model, settings)
    assert other is not view and other.roi_heads.score_thresh == 0.3
