"""Whole-slide images: reading (levels, pixel size, bad slides), tissue, and the window-by-window pipeline.

The pipeline tests use a deterministic stand-in for the U-Net (dark pixels are gland, connected components are
glands): its window label maps agree with the whole image's away from window borders, so stitching must give
back exactly the whole image's glands. Slides are small mosaics written by ``tests/helpers_slides.py``.
"""

from __future__ import annotations

import itertools
import json
import shutil
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import shapely
from scipy import ndimage as ndi
from shapely.geometry import shape

from glandseg_core.config import RunConfig
from glandseg_core.errors import ImageError
from glandseg_core.segmenters import Tiling
from glandseg_core.segmenters.base import Plan
from glandseg_core.segmenters.instances import Instances, labels_to_instances
from glandseg_core.segmenters.unet import probs_to_labels
from glandseg_core.slides import choose_level, is_slide, open_slide, predict_slide
from glandseg_core.slides.tissue import tissue_mask
from glandseg_core.thresholds import UNetPost
from tests.helpers_slides import Mosaic, break_level, corrupt_compression, write_slide

MIN_AREA = 30


def disks(h: int, w: int, seed: int = 0, n: int = 40) -> np.ndarray:
    """uint8[h, w, 3]: dark non-touching disks (radius 6..30 px) on pink; pink (not white) so it is tissue."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:h, :w]
    taken = np.zeros((h, w), bool)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (235, 170, 200)
    for _ in range(n * 20):
        r = rng.uniform(6, 30)
        cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
        disk = (rr - cy) ** 2 + (cc - cx) ** 2 <= r * r
        if (ndi.binary_dilation(disk, iterations=3) & taken).any():
            continue
        taken |= disk
        img[disk] = (90, 30, 110)
        n -= 1
        if n == 0:
            break
    return img


@dataclass
class DarkIsGland:
    """A stand-in U-Net segmenter: gland probability 1 on dark pixels; glands = connected components."""

    cfg: RunConfig = field(default_factory=lambda: RunConfig(name="dark", model="unet"))
    post: UNetPost = field(default_factory=lambda: UNetPost(instance=False, min_area=MIN_AREA))
    tiling: Tiling = field(default_factory=Tiling)
    tta: bool = False
    kind: str = "unet"
    windows: list = field(default_factory=list)

    def raw(self, image: np.ndarray) -> np.ndarray:
        self.windows.append(image.shape[:2])
        fg = (image.astype(np.int32).sum(axis=2) < 400).astype(np.float32)
        return np.stack([fg, np.zeros_like(fg)])

    def labels(self, raw: np.ndarray, post: UNetPost | None = None) -> np.ndarray:
        return probs_to_labels(raw, post or self.post)

    def __call__(
        self, image: np.ndarray, mpp: float | None = None, progress: object = None
    ) -> np.ndarray:
        return self.labels(self.raw(image))

    def window_plan(self, shape: tuple[int, ...]) -> Plan:
        return Plan((shape[0], shape[1]), 1, 1)

    def window_instances(self, image: np.ndarray, progress: object = None) -> Instances:
        prob = self.raw(image)
        return labels_to_instances(self.labels(prob), prob[0])


def _slide(tmp_path: Path, image: np.ndarray, *, mpp: float = 0.62, scale: float = 1.0, **kw) -> tuple:
    mosaic = Mosaic([image], (1, 1), scale=scale, margin=kw.pop("margin", 64))
    path = write_slide(tmp_path / kw.pop("file", "s.svs"), mosaic, mpp=mpp, levels=2, **kw)
    return path, mosaic


def _features(out: Path, name: str = "s") -> list[dict]:
    return json.loads((out / f"{name}.geojson").read_text())["features"]


# ------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("kind", ["svs", "tiff", "ome"])
def test_slide_levels_pixel_size_and_regions(tmp_path: Path, kind: str) -> None:
    image = disks(300, 400)
    path, mosaic = _slide(
        tmp_path, image, mpp=0.5, file=f"s.{kind}.tif" if kind != "svs" else "s.svs", kind=kind
    )
    assert is_slide(path)
    with open_slide(path) as s:
        assert s.dimensions == (mosaic.shape[1], mosaic.shape[0])
        assert s.mpp == pytest.approx((0.5, 0.5))
        assert len(s.levels) == (
            1 if kind == "ome" else 2
        )  # OpenSlide reads OME SubIFD pyramids at level 0
        oy, ox = mosaic.origin(0)
        np.testing.assert_array_equal(s.read(0, ox + 5, oy + 7, 50, 30), image[7:37, 5:55])


def test_is_slide_by_extension_and_content(tmp_path: Path) -> None:
    import tifffile

    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, disks(64, 64), photometric="rgb")  # striped, one level: an image
    assert not is_slide(plain)
    assert (
        is_slide(tmp_path / "x.ndpi") and is_slide(tmp_path / "x.mrxs") and is_slide(tmp_path / "x.svs")
    )
    assert not is_slide(tmp_path / "x.png") and not is_slide(tmp_path / "missing.tif")


def test_choose_level_never_enlarges_more_than_needed() -> None:
    downs = (1.0, 4.0, 16.0)
    assert choose_level(0.25, downs, 0.62) == choose_level(0.25, downs, 0.62)
    c = choose_level(
        0.25, downs, 0.62
    )  # level 1 is 1.0 um/px: coarser than 0.62, so level 0 shrunk 2.48x
    assert (c.level, c.factor) == (0, pytest.approx(2.48))
    c = choose_level(0.155, downs, 0.62)  # level 1 = 0.62 exactly
    assert (c.level, c.factor, c.scale) == (1, 1.0, 4.0)
    c = choose_level(0.63, downs, 0.62)  # within 2%: read as is
    assert (c.level, c.factor) == (0, 1.0)
    c = choose_level(1.0, downs, 0.62)  # coarser than the model everywhere: level 0, enlarged
    assert (c.level, c.factor) == (0, pytest.approx(0.62))


def test_bad_slides_get_one_line(tmp_path: Path) -> None:
    path, _ = _slide(tmp_path, disks(300, 400))
    cases = {}
    (tmp_path / "notaslide.svs").write_bytes(b"hello, I am not a slide" * 100)
    cases["notaslide.svs"] = "not a whole-slide image"
    (tmp_path / "trunc.svs").write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    cases["trunc.svs"] = "truncated"
    shutil.copy(path, tmp_path / "codec.svs")
    corrupt_compression(tmp_path / "codec.svs")
    cases["codec.svs"] = "Unsupported TIFF compression"
    shutil.copy(path, tmp_path / "level.svs")
    break_level(tmp_path / "level.svs", 0)
    cases["level.svs"] = "level 0 of 2"
    for name, expected in cases.items():
        with pytest.raises(ImageError) as e:
            predict_slide(DarkIsGland(), tmp_path / name, tmp_path / "out", name=name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg and expected in msg, msg
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_pixel_size_asks_for_mpp(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, disks(300, 400), tile=(256, 256), photometric="rgb")
    with pytest.raises(ImageError, match="--mpp"):
        predict_slide(DarkIsGland(), path, tmp_path / "out", name="n")
    assert predict_slide(DarkIsGland(), path, tmp_path / "out", name="n", mpp=0.62).glands > 0


def test_tissue_mask_finds_the_mosaic_not_the_glass(tmp_path: Path) -> None:
    path, mosaic = _slide(tmp_path, disks(600, 800), margin=800)
    with open_slide(path) as s:
        thumb, scale = s.thumbnail(256)
    mask = tissue_mask(thumb)
    oy, ox = mosaic.origin(0)
    inner = mask[
        int(oy / scale) + 2 : int((oy + 600) / scale) - 2,
        int(ox / scale) + 2 : int((ox + 800) / scale) - 2,
    ]
    assert inner.all()
    assert mask.sum() < 1.2 * (600 * 800) / scale**2  # the glass around it is not tissue


# ------------------------------------------------------------------------------------------ pipeline


@pytest.mark.slow
def test_stitched_glands_are_the_whole_image_glands(tmp_path: Path) -> None:
    """No seams, no duplicates: small windows give exactly the glands of the image segmented whole."""
    image = disks(700, 900, seed=1, n=60)
    path, mosaic = _slide(tmp_path, image)
    seg = DarkIsGland()
    whole = seg(image)
    seg.windows.clear()
    result = predict_slide(seg, path, tmp_path / "out", name="s", window=200, overlap=70)
    assert max(seg.windows) <= (200, 200) and len(seg.windows) > 20  # evenly spaced, at most 200 px
    feats = _features(tmp_path / "out")
    assert result.glands == len(feats) == whole.max()
    oy, ox = mosaic.origin(0)
    got = sorted(
        (round(shape(f["geometry"]).area), tuple(np.round(shape(f["geometry"]).bounds))) for f in feats
    )
    want = []
    for k, box in enumerate(ndi.find_objects(whole), start=1):
        area = int((whole[box] == k).sum())
        want.append((area, (box[1].start + ox, box[0].start + oy, box[1].stop + ox, box[0].stop + oy)))
    assert got == sorted(want)  # pixel-edge polygons: area = pixel count, bounds = the gland's box


def test_geojson_is_qupath_ready_and_geometrically_sound(tmp_path: Path) -> None:
    path, _ = _slide(
        tmp_path, disks(500, 700, seed=2), mpp=0.31, scale=2.0
    )  # read at level 0, shrunk 2x
    result = predict_slide(DarkIsGland(), path, tmp_path / "out", name="s", window=160, overlap=70)
    feats = _features(tmp_path / "out")
    geoms = [shape(f["geometry"]) for f in feats]
    assert len(geoms) == result.glands > 20
    assert all(shapely.is_valid(g) for g in geoms)
    pairs = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    assert all(shapely.intersection(geoms[i], geoms[j]).area == 0 for i, j in pairs.T if i < j)
    for f, g in zip(feats, geoms, strict=True):
        p = f["properties"]
        assert p["objectType"] == "detection" and p["classification"]["name"] == "Gland"
        # level-0 pixels are 0.31 um: polygon area x 0.31^2 = the gland's model pixels x 0.62^2
        assert g.area * 0.31**2 == pytest.approx(p["measurements"]["Area µm^2"], rel=1e-6, abs=0.01)
        assert p["measurements"]["Perimeter µm"] > 0
    s = json.loads(result.outputs["summary_json"].read_text())
    assert s["glands"] == result.glands and s["level"] == 0 and s["resample"] == 2.0
    assert s["glands_per_mm2"] == pytest.approx(s["glands"] / s["tissue_area_mm2"], rel=1e-3)
    rows = result.outputs["glands"].read_text().splitlines()
    assert len(rows) == result.glands + 1 and rows[0].startswith("id,centroid_x,centroid_y")
    assert len(result.outputs["summary_csv"].read_text().splitlines()) == 2


def test_glands_map_back_onto_the_source_image(tmp_path: Path) -> None:
    image = disks(500, 700, seed=3)
    path, mosaic = _slide(tmp_path, image, mpp=0.31, scale=2.0, margin=128)
    result = predict_slide(DarkIsGland(), path, tmp_path / "out", name="s", window=200, overlap=70)
    whole = DarkIsGland()(image)
    oy, ox = mosaic.origin(0)
    hit = set()
    for f in _features(tmp_path / "out"):
        c = shape(f["geometry"]).representative_point()
        row, col = int((c.y - oy) / 2), int((c.x - ox) / 2)  # level 0 -> source pixels
        hit.add(int(whole[row, col]))
    assert 0 not in hit and len(hit) == result.glands == whole.max()


@pytest.mark.slow
def test_background_windows_are_skipped(tmp_path: Path) -> None:
    path, _ = _slide(tmp_path, disks(200, 200), margin=900)
    seg = DarkIsGland()
    result = predict_slide(seg, path, tmp_path / "out", name="s", window=256, overlap=64)
    assert result.summary["windows_skipped"] > 0
    assert result.summary["windows"] == len(seg.windows) < result.summary["windows_skipped"]


def test_ctrl_c_leaves_nothing_half_written(tmp_path: Path) -> None:
    path, _ = _slide(tmp_path, disks(500, 700))
    out = tmp_path / "out"

    def stop(p) -> None:
        if p.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_slide(DarkIsGland(), path, out, name="s", window=200, overlap=70, progress=stop)
    assert list(out.iterdir()) == []


def test_progress_reports_windows_and_time_left(tmp_path: Path) -> None:
    path, _ = _slide(tmp_path, disks(400, 500))
    seen = []
    predict_slide(
        DarkIsGland(), path, tmp_path / "out", name="s", window=200, overlap=70, progress=seen.append
    )
    assert [p.done for p in seen] == list(range(len(seen))) and seen[-1].total == len(seen) - 1
    assert {(p.phase, p.unit) for p in seen} == {("slide", "windows")}
    assert seen[0].detail["left"] is None  # the plan, before the first window
    assert seen[-1].detail["left"] == 0 and all(p.detail["left"] >= 0 for p in seen[1:])
    assert all(
        p.detail["passes"] == 1 and p.detail["views"] == 1 for p in seen
    )  # DarkIsGland's window_plan


@pytest.mark.slow
def test_memory_does_not_grow_with_slide_height(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Peak Python/numpy memory is one row of windows: a slide 3x taller costs (about) the same."""
    from glandseg_core.slides import pipeline

    monkeypatch.setattr(pipeline, "THUMBNAIL", 64)  # a real slide's thumbnail is a fixed size too
    peaks = []
    for i, rows in enumerate((1, 3)):
        mosaic = Mosaic([disks(300, 500, seed=s) for s in range(rows)], (rows, 1), margin=32)
        path = write_slide(tmp_path / f"m{i}.svs", mosaic, mpp=0.62, levels=2)
        tracemalloc.start()
        predict_slide(DarkIsGland(), path, tmp_path / f"out{i}", name="s", window=200, overlap=70)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks


@pytest.mark.parametrize(
    ("n", "window", "overlap"),
    [(8338, 2048, 256), (2049, 2048, 256), (100, 2048, 256), (5000, 800, 320)],
)
def test_even_spans_cover_the_axis_with_the_overlap_and_little_more(
    n: int, window: int, overlap: int
) -> None:
    from glandseg_core.slides.pipeline import even_spans

    starts, size = even_spans(n, window, overlap)
    assert size <= window and starts[0] == 0 and starts[-1] + size == n
    assert all(0 < b - a <= size - overlap for a, b in itertools.pairwise(starts))
    if len(starts) > 1:  # one window fewer could not cover the axis with that overlap
        k = len(starts) - 1
        assert k * window - (k - 1) * overlap < n
    assert len(starts) * size <= n + len(starts) * (overlap + 2)
