"""The bundled samples' shipped results (glandseg_dashboard.shipped) and their install-time precompute (issue #22):
a first visit shows them at once, and they are not used once the model's files change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.imaging.io import read_image
from glandseg_dashboard import diskcache, precompute, shipped
from tests.helpers import REPO
from tests.test_app import make_tiny_models


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLANDSEG_CACHE", str(tmp_path / "cache"))


def test_a_shipped_result_is_used_until_the_model_files_change(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "unet"
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"weights v1")
    (folder / "config.json").write_text("{}")
    root = tmp_path / "results"
    labels = np.zeros((6, 8), np.int32)
    labels[1:3, 2:5], labels[4:6, 6:8] = 1, 2
    shipped.save(folder, "s1", "digest1", labels, 1.25, root=root, engine="torch")
    got = shipped.load(folder, "digest1", root=root)
    assert got is not None and (got[0] == labels).all() and got[1] == 1.25
    assert shipped.load(folder, "other-image", root=root) is None
    assert shipped.load(tmp_path / "elsewhere" / "maskrcnn", "digest1", root=root) is None
    (folder / "postprocess.json").write_text('{"min_area": 10}')  # new settings: the labels may differ
    assert shipped.load(folder, "digest1", root=root) is None
    (folder / "postprocess.json").unlink()
    assert shipped.load(folder, "digest1", root=root) is not None
    (folder / "weights.pt").write_bytes(b"weights v2")  # new weights
    assert shipped.load(folder, "digest1", root=root) is None
    assert (diskcache.cache_dir() / "model_hashes.json").is_file()  # hashes kept between server starts


def test_the_shipped_samples_match_the_shipped_models() -> None:
    """The committed samples/results/ are those of the committed trained_models/ (else the first visit computes
    them: run ``python -m glandseg_dashboard.precompute --ship`` after promoting new shipped models)."""
    manifest = json.loads((shipped.RESULTS_DIR / shipped.MANIFEST).read_text())
    models = REPO / "trained_models"
    for name, entry in manifest["models"].items():
        assert entry["sha256"] == shipped.folder_hash(models / name), (
            f"{name}: re-ship the samples' results"
        )
    stems = {p.stem for p in precompute.samples()}
    for key, entry in manifest["results"].items():
        name, image_id = key.split("/")
        image = read_image(REPO / "samples" / f"{entry['sample']}.png")
        assert diskcache.digest(image) == image_id and entry["sample"] in stems
        hit = shipped.load(models / name, image_id)
        assert hit is not None and hit[0].shape == image.shape[:2] and hit[0].max() > 0
    assert len(manifest["results"]) == len(stems) * len(manifest["models"])


@pytest.mark.slow
def test_precompute_computes_what_is_missing_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = make_tiny_models(tmp_path / "models")
    monkeypatch.setattr(precompute, "samples", lambda: [REPO / "samples" / "testA_1.png"])
    lines: list[str] = []
    assert precompute.precompute(models, out=lines.append) == 2  # both roles, one sample
    assert precompute.precompute(models, out=lines.append) == 0  # idempotent
    assert sum("computed in" in ln for ln in lines) == 2 and sum("disk cache" in ln for ln in lines) == 2
    image = read_image(REPO / "samples" / "testA_1.png")
    key = diskcache.key(str(models / "unet"), False, None, diskcache.digest(image))
    hit = diskcache.load(key)
    assert hit is not None and hit[0].shape == image.shape[:2]
