"""The bundled samples' shipped results and the inference engine (issue #22, items 1 and 3): each result records
the engine that computed it, ``--ship`` records the one the dashboard ran (``auto``), and a result stays in use
whatever engine the dashboard runs (labels agree within the documented tolerance; glandseg_dashboard.shipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glandseg_core.engines import ENGINES
from glandseg_dashboard import precompute, shipped
from glandseg_dashboard.pool import Segmentation
from tests.helpers import REPO


def test_each_shipped_result_names_the_engine_that_computed_it() -> None:
    results = shipped.read_manifest()["results"]
    assert results
    for key, entry in results.items():
        assert entry.get("engine") in set(ENGINES) - {"auto"}, f"{key}: re-ship the samples' results"


def test_ship_records_the_engine_and_its_results_serve_any_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLANDSEG_CACHE", str(tmp_path / "cache"))
    models, results = tmp_path / "models", tmp_path / "results"
    for role in (
        "unet",
        "maskrcnn",
    ):  # the files a result depends on (never loaded: the job is stood in for)
        (models / role).mkdir(parents=True)
        (models / role / "weights.pt").write_bytes(role.encode())
        (models / role / "config.json").write_text("{}")
    monkeypatch.setattr(precompute, "samples", lambda: [REPO / "samples" / "testA_1.png"])
    asked: list[str] = []

    def job(pool: object, model_dir: str, image: np.ndarray, tta: bool, poll: object, **kw: object):
        asked.append(str(kw.get("engine", "auto")))
        return Segmentation(
            np.ones(image.shape[:2], np.int32), 0.5, engine="onnx"
        )  # auto chose ONNX Runtime

    monkeypatch.setattr(precompute.pool, "run_job", job)
    lines: list[str] = []
    assert precompute.precompute(models, ship=True, out=lines.append, results=results) == 2
    assert asked == ["auto", "auto"]  # what the dashboard runs
    assert {e["engine"] for e in shipped.read_manifest(results)["results"].values()} == {"onnx"}
    assert all(ln.endswith("(ONNX Runtime)") for ln in lines), lines
    # the suite's dashboard would run PyTorch (GLANDSEG_ENGINE=torch): the ONNX Runtime results are still used
    lines.clear()
    assert precompute.precompute(models, out=lines.append, results=results) == 0
    assert all(ln.endswith("shipped, up to date") for ln in lines) and len(lines) == 2
