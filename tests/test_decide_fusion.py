"""`python -m experiments.decide` compares a fusion folder too (docs/EXPERIMENTS.md, row 20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import experiments.decide as decide
from experiments.fusion import FusionPost, read_fusion

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_row_20_fusion_names_the_shipped_members_and_row_14s_best_setting() -> None:
    spec = read_fusion(ROOT / "experiments" / "fusion_row14")
    assert spec.unet == (ROOT / "trained_models" / "unet").resolve()
    assert spec.maskrcnn == (ROOT / "trained_models" / "maskrcnn").resolve()
    best = max(
        (
            json.loads(line)
            for line in (ROOT / "docs/cards/fusion/val_grid.jsonl").read_text().splitlines()
        ),
        key=lambda r: r["f1"],
    )
    assert spec.post == FusionPost(**best["post"])
    assert spec.unet_post is None


def test_a_fusion_folder_is_loaded_as_a_fusion_and_a_model_folder_as_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(decide, "load_fusion", lambda m, tta: calls.append(("fusion", m, tta)))
    monkeypatch.setattr(decide, "load_segmenter", lambda m, tta: calls.append(("model", m, tta)))
    (tmp_path / "fu").mkdir()
    (tmp_path / "fu" / "fusion.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    decide._load(str(tmp_path / "fu"), True)
    decide._load(str(tmp_path / "unet"), False)
    assert calls == [("fusion", str(tmp_path / "fu"), True), ("model", str(tmp_path / "unet"), False)]


def test_a_test_split_is_refused() -> None:
    with pytest.raises(SystemExit):
        decide.main(["trained_models/unet", "experiments/fusion_row14", "--split", "testA"])
