"""Pixel sizes of plain images (TIFF/OME metadata, segmenting at the model's pixel size), label maps as
OME-TIFF, gland tables and GeoJSON in µm, and the GeoJSON edge rule checked with shapely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile
from PIL import Image
from shapely.geometry import shape

from glandseg_core.imaging.formats import image_mpp, label_tiff_bytes, write_label_tiff
from glandseg_core.outputs.export import GLAND_COLUMNS, gland_table, to_geojson
from glandseg_core.slides import segment_at_mpp
from tests.helpers import make_glands
from tests.test_slides import DarkIsGland, disks

# ---------------------------------------------------------------------------------------- image_mpp


def test_image_mpp_from_tiff_tags_ome_and_aperio(tmp_path: Path) -> None:
    rgb = disks(64, 64)
    tifffile.imwrite(
        tmp_path / "cm.tif", rgb, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER"
    )
    tifffile.imwrite(
        tmp_path / "inch.tif", rgb, resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH"
    )
    tifffile.imwrite(tmp_path / "dpi72.tif", rgb, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "none.tif", rgb)
    meta = {"axes": "YXS", "PhysicalSizeX": 310.0, "PhysicalSizeXUnit": "nm"}
    tifffile.imwrite(tmp_path / "o.ome.tif", rgb, ome=True, metadata=meta)
    tifffile.imwrite(
        tmp_path / "a.svs", rgb, description="Aperio Image Library v12\n64x64 |MPP = 0.2527|"
    )
    Image.fromarray(rgb).save(tmp_path / "p.png", dpi=(300, 300))
    got = {p.name: image_mpp(p) for p in sorted(tmp_path.iterdir())}
    assert got["cm.tif"] == pytest.approx(0.25) and got["inch.tif"] == pytest.approx(0.5)
    assert got["o.ome.tif"] == pytest.approx(0.31) and got["a.svs"] == pytest.approx(0.2527)
    assert got["dpi72.tif"] is None and got["none.tif"] is None and got["p.png"] is None


# ----------------------------------------------------------------------------------- segment_at_mpp


def test_segment_at_mpp_brings_glands_to_the_model_scale_and_back() -> None:
    small = disks(200, 300, seed=4)
    big = np.asarray(
        Image.fromarray(small).resize((600, 400), Image.BILINEAR)
    )  # a "40x" scan: 0.31 um/px
    seen = []

    class Spy(DarkIsGland):
        def __call__(
            self, image: np.ndarray, mpp: float | None = None, progress: object = None
        ) -> np.ndarray:
            seen.append(image.shape[:2])
            return super().__call__(image)

    labels = segment_at_mpp(Spy(), big, 0.31)
    assert seen == [(200, 300)]  # segmented at the model's 0.62 um/px
    assert labels.shape == (400, 600) and labels.dtype == np.int32
    ref = DarkIsGland()(small)
    assert labels.max() == ref.max()  # the same glands, ids consecutive
    up = np.asarray(Image.fromarray(ref).resize((600, 400), Image.NEAREST))
    assert np.array_equal(labels > 0, up > 0)
    assert np.array_equal(segment_at_mpp(Spy(), small, 0.625), DarkIsGland()(small))  # within 2%: as is
    with pytest.raises(ValueError, match="mpp"):
        segment_at_mpp(Spy(), small, 0.0)


# --------------------------------------------------------------------------------- label map TIFFs


def test_label_tiff_round_trips_with_pixel_size(tmp_path: Path) -> None:
    _, labels = make_glands()
    write_label_tiff(tmp_path / "l.ome.tif", labels, mpp=0.62)
    with tifffile.TiffFile(tmp_path / "l.ome.tif") as tif:
        assert tif.is_ome and tif.pages.first.dtype == np.uint16
        np.testing.assert_array_equal(tif.asarray(), labels)
    assert image_mpp(tmp_path / "l.ome.tif") == pytest.approx(0.62)
    many = np.arange(70000, dtype=np.int32).reshape(350, 200)
    with tifffile.TiffFile(__import__("io").BytesIO(label_tiff_bytes(many))) as tif:
        assert tif.pages.first.dtype == np.uint32 and np.array_equal(tif.asarray(), many)
    with pytest.raises(ValueError):
        label_tiff_bytes(np.zeros((2, 2, 2), np.int32))


# --------------------------------------------------------------------------------- tables in um


def test_gland_table_and_geojson_in_micrometres_only_when_asked() -> None:
    _, labels = make_glands()
    plain = gland_table(labels)
    assert list(plain.columns) == GLAND_COLUMNS
    um = gland_table(labels, mpp=0.5)
    assert list(um.columns) == [*GLAND_COLUMNS, "area_um2", "perimeter_um"]
    assert um[GLAND_COLUMNS].equals(plain)
    assert np.allclose(um["area_um2"], plain["area"] * 0.25) and np.allclose(
        um["perimeter_um"], plain["perimeter"] * 0.5
    )
    assert to_geojson(labels) == to_geojson(labels, mpp=None)
    for f in to_geojson(labels, mpp=0.5)["features"]:
        p = f["properties"]
        assert p["measurements"]["Area µm^2"] == p["area_um2"] == p["area"] * 0.25
    with pytest.raises(ValueError, match="mpp"):
        gland_table(labels, mpp=-1.0)


def test_geojson_edge_rule_polygons_valid_disjoint_area_is_pixel_count() -> None:
    """docs: polygons run along pixel edges, so each area equals its gland's pixel count exactly."""
    _, labels = make_glands(h=120, w=160, n=12, seed=5)  # touching and overlapping ellipses
    labels[40:44, 10:150] = 99  # a thin gland crossing others: pieces that touch at corners
    feats = to_geojson(labels)["features"]
    geoms = [shape(f["geometry"]) for f in feats]
    assert all(shapely.is_valid(g) for g in geoms)
    for f, g in zip(feats, geoms, strict=True):
        assert g.area == np.count_nonzero(labels == f["properties"]["gland_id"])
    pairs = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    assert all(shapely.intersection(geoms[i], geoms[j]).area == 0 for i, j in pairs.T if i < j)
