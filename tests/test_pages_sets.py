"""The Metrics and drill-down pages on a data set beyond GlaS: an annotation set saved by the Annotate page, scored
into ``<set>/evaluations/<model>/`` (glandseg_dashboard.evaluated_sets), and the background scoring job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from glandseg_core.datasets.glas import find_items, load_item
from glandseg_core.evaluation import evaluate
from glandseg_core.imaging.io import write_label_png
from glandseg_dashboard import annotation_sets, evaluated_sets, jobs

REPO = Path(__file__).resolve().parents[1]
METRICS_PAGE = str(REPO / "pages" / "metrics.py")
DRILL_PAGE = str(REPO / "pages" / "drilldown.py")


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "info", "error", "success")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


@pytest.fixture
def set_env(tmp_path: Path, shared_fake_glas: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An annotation set of four fake GlaS images, scored by two "models" (label maps written here)."""
    ann, models = tmp_path / "annotations", tmp_path / "models"
    for item in find_items(shared_fake_glas, ["train"])[:4]:
        image, gt = load_item(item)
        annotation_sets.save_to_set(ann, "mine", item.name, image, gt, 0.5)
    folder = ann / "mine"
    for kind, shift in (("unet", 3), ("maskrcnn", 0)):
        (models / kind).mkdir(parents=True)
        (models / kind / "config.json").write_text(json.dumps({"model": kind}))
        raw = tmp_path / f"raw_{kind}"
        raw.mkdir()
        for stem in annotation_sets.set_images(folder):
            labels = annotation_sets.renumber(np.asarray(load_label(folder, stem)))
            write_label_png(raw / f"{stem}.png", np.roll(labels, shift, axis=1))
        evaluate(
            folder,
            None,
            evaluated_sets.evaluation_dir(folder, kind),
            predictions=raw,
            save_predictions=True,
        )
    monkeypatch.setenv("GLANDSEG_ANNOTATIONS", str(ann))
    monkeypatch.setenv("GLANDSEG_MODELS", str(models))
    monkeypatch.setenv("GLANDSEG_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("GLANDSEG_DATA", str(shared_fake_glas))
    return {"set": folder, "models": models}


def load_label(folder: Path, stem: str) -> np.ndarray:
    from glandseg_core.imaging.io import read_label_map

    return read_label_map(folder / "labels" / f"{stem}.png")


def test_an_evaluated_annotation_set_is_a_choice_on_metrics_and_the_drilldown(set_env) -> None:
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception
    box = at.selectbox(key="results_set")
    assert box.value == "glas" and "Annotation set mine" in box.options
    box.set_value("annotations:mine").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    ours = table.set_index("method")
    assert list(ours.index) == ["U-Net", "Mask R-CNN"] and set(table["source"]) == {"ours"}
    assert ours.loc["Mask R-CNN", "All images F1"] == pytest.approx(1.0)  # the ground truth itself
    assert ours.loc["U-Net", "All images F1"] < 1.0
    assert "Score both models on this set" in [b.label for b in at.button]
    assert len(at.get("plotly_chart")) == 6

    drill = AppTest.from_file(DRILL_PAGE, default_timeout=60)
    drill.session_state["_kept_choices"] = {("results_set", ""): "annotations:mine"}  # chosen on Metrics
    drill.run()
    assert not drill.exception, drill.exception
    assert drill.selectbox(key="results_set").value == "annotations:mine"
    assert set(drill.dataframe[0].value["image"]) == set(annotation_sets.set_images(set_env["set"]))
    assert len(drill.image) == 4 and "Annotation set mine" in _texts(drill)


def test_an_unscored_set_offers_the_button_and_says_how(set_env, monkeypatch) -> None:
    annotation_sets.save_to_set(
        set_env["set"].parent,
        "fresh",
        "a",
        np.zeros((8, 8, 3), np.uint8),
        np.ones((8, 8), np.int32),
        0.5,
    )
    for kind in ("unet", "maskrcnn"):
        (set_env["models"] / kind / "weights.pt").write_bytes(b"stub")
    launched: list[list[str]] = []
    monkeypatch.setattr(jobs, "_launch", lambda args, out: launched.append(args) or 999_999)
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    at.selectbox(key="results_set").set_value("annotations:fresh").run()
    assert not at.exception and "No scores on Annotation set fresh yet" in _texts(at)
    button = next(b for b in at.button if b.label == "Score both models on this set")
    assert not button.disabled
    button.click().run()
    assert not at.exception
    assert [a[a.index("--model") + 1] for a in launched] == [
        str((set_env["models"] / k).resolve()) for k in ("unet", "maskrcnn")
    ]
    out = evaluated_sets.evaluation_dir(set_env["set"].parent / "fresh", "unet")
    assert launched[0][launched[0].index("--out") + 1] == str(out.resolve())
    assert "--relabel-gt" in launched[0] and "--save-predictions" in launched[0]
    assert (out / "eval.pid").read_text().split() == ["999999", "1"]
    assert evaluated_sets.status(out.parent.parent, "unet")["status"] == "failed"  # no such process


def test_metrics_shows_the_components_convention_when_a_scoring_wrote_it(set_env) -> None:
    folder = set_env["set"]
    out = evaluated_sets.evaluation_dir(folder, "unet")
    evaluate(folder, None, out, predictions=out / "predictions", relabel_gt=True)
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60)
    at.session_state["_kept_choices"] = {("results_set", ""): "annotations:mine"}
    at.run()
    assert not at.exception
    conventions = set(at.dataframe[0].value["convention"])
    assert conventions == {"pooled (official GlaS)", "GT split into components, pooled"}
    at.segmented_control(key="metrics_aggregation").set_value("per-image mean").run()
    conventions = set(at.dataframe[0].value["convention"])
    assert conventions == {"per-image mean", "GT split into components, per-image mean"}
    assert _texts(at).count("GT split into components") == 1
