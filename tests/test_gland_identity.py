"""Gland identity colours (glandseg_core.outputs.overlays.identity) and the three disjoint colour roles of
glandseg_core.outputs.overlays.palette: outcomes, gland identity and models never share a colour, and touching
glands never share an identity colour."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from glandseg_core.imaging.io import read_label_map
from glandseg_core.outputs.overlays import colour_for, gland_colours, overlay, palette
from glandseg_core.outputs.overlays.identity import adjacency, colour_indices

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _clashes(labels: np.ndarray, gap: int = 1) -> list[tuple[int, int]]:
    """Pairs of glands within ``gap`` pixels (touching when 1) that got the same identity colour."""
    colours = gland_colours(labels)
    return [
        (a, b) for a, near in adjacency(labels, gap).items() for b in near if colours[a] == colours[b]
    ]


def _tiles(n: int, size: int = 12) -> np.ndarray:
    """An n × n grid of touching square glands, ids 1..n² row by row (each touches up to 8 others)."""
    ids = np.arange(1, n * n + 1, dtype=np.int32).reshape(n, n)
    return np.kron(ids, np.ones((size, size), np.int32))


def _voronoi(n: int, shape: tuple[int, int] = (160, 200), seed: int = 0) -> np.ndarray:
    """n touching glands filling the image: the Voronoi cells of random seeds."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    rows, cols = rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)
    seeds[rows, cols] = np.arange(1, n + 1)
    _, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    return seeds[ir, ic]


# ------------------------------------------------------------------------------------------ the three sets


def test_the_three_colour_sets_are_disjoint_and_apart() -> None:
    """No RGB value in two roles, and the smallest ΔE00 between roles as measured (docs/PALETTE.md):
    >= 17 with normal vision, >= 6 as simulated for deuteranopia and protanopia."""
    sets = palette.colour_sets()
    for a, b in itertools.combinations(sets, 2):
        assert not set(sets[a].values()) & set(sets[b].values()), (a, b)
        cross = palette.cross_check(sets[a], sets[b])
        assert cross["cross normal"] >= 17, (a, b, cross)
        assert cross["cross deuteranopia"] >= 6 and cross["cross protanopia"] >= 6, (a, b, cross)
    assert len(set(palette.GLAND_PALETTE)) == len(palette.GLAND_PALETTE) == 6
    assert {
        "A only": palette.MODEL_COLOURS["unet"],
        "B only": palette.MODEL_COLOURS["maskrcnn"],
    } == palette.DISAGREEMENT_COLOURS
    assert "gland vs outcome" in palette.report()


# ------------------------------------------------------------------------------------- colour by adjacency


def test_touching_glands_differ_where_ids_would_repeat() -> None:
    labels = np.zeros((20, 40), np.int32)
    labels[2:18, 2:20], labels[2:18, 20:38] = 1, 7  # 7 = 1 + 6: the same colour when cycled by id
    assert colour_for(1) == colour_for(7)
    assert colour_for(1, labels) != colour_for(7, labels)
    assert _clashes(labels) == []
    with pytest.raises(ValueError, match="gland 3"):
        colour_for(3, labels)


def test_glands_a_few_pixels_apart_are_neighbours_far_ones_may_share() -> None:
    labels = np.zeros((20, 60), np.int32)
    labels[2:18, 2:10], labels[2:18, 12:20], labels[2:18, 50:58] = 1, 2, 3  # 2 px gap, then far away
    assert adjacency(labels) == {1: {2}, 2: {1}, 3: set()}
    colours = gland_colours(labels)
    assert colours[1] != colours[2] and colours[3] == colours[1]  # far apart: free to share


@pytest.mark.parametrize("labels", [_tiles(5), _voronoi(60)], ids=["5x5 tiles", "60 voronoi cells"])
def test_many_touching_glands_never_share_a_colour(labels: np.ndarray) -> None:
    """More glands than colours: neighbours (touching or within the 3 px gap) still differ."""
    assert len(np.unique(labels)) > len(palette.GLAND_PALETTE)
    assert _clashes(labels, gap=1) == [] and _clashes(labels, gap=3) == []
    assert gland_colours(labels) == gland_colours(labels.copy())  # deterministic


@pytest.mark.parametrize("name", ["testA_1_anno.png", "testB_2_anno.png"])
def test_real_label_maps_touching_glands_differ(name: str) -> None:
    labels = read_label_map(SAMPLES / name)
    assert labels.max() > len(palette.GLAND_PALETTE)  # more glands than colours
    assert _clashes(labels, gap=3) == []
    image = np.full((*labels.shape, 3), 200, np.uint8)
    drawn = overlay(image, labels, alpha=1.0, outlines=False)
    for gid, colour in gland_colours(labels).items():
        assert tuple(drawn[labels == gid][0]) == colour  # the overlay draws these colours


def test_dsatur_falls_back_to_the_least_used_colour() -> None:
    clique = {g: {h for h in range(1, 5) if h != g} for g in range(1, 5)}  # 4 glands all touching
    assert sorted(colour_indices(clique, 4).values()) == [0, 1, 2, 3]
    index = colour_indices(clique, 3)  # one colour too few: exactly one clash
    assert sorted(index.values()) == [0, 0, 1, 2]
    assert colour_indices({}, 6) == {}
