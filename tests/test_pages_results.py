"""AppTest smoke tests of pages/metrics.py and pages/drilldown.py on a fake models root and a tiny fake
GlaS folder.

The model folders are made by `evaluate` itself from synthetic predictions (shifted / thinned ground
truth), so per_image.csv, summary.json (copied as metrics.json) and predictions/*.png have the real
layout.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from glandseg_core.datasets.glas import find_items, load_item
from glandseg_core.evaluation import evaluate
from glandseg_core.imaging.io import write_label_png
from glandseg_dashboard import drilldown, figures, inference, settings

REPO = Path(__file__).resolve().parents[1]
METRICS_PAGE = str(REPO / "pages" / "metrics.py")
DRILL_PAGE = str(REPO / "pages" / "drilldown.py")
NAMES = ("testA_1", "testA_2", "testA_3", "testB_1", "testB_2")
GRADES = ("benign", "malignant", "benign", "malignant", "benign")


def _unet_pred(gt: np.ndarray) -> np.ndarray:
    return np.roll(gt, 4, axis=1)  # every gland shifted: partial overlaps


def _maskrcnn_pred(gt: np.ndarray) -> np.ndarray:
    pred = gt.copy()
    pred[pred == pred.max()] = 0  # one gland missed
    pred[:5, :5] = 77  # one false positive in the corner
    return pred


def _model_folder(root: Path, glas: Path, tmp: Path, kind: str, make) -> Path:
    raw = tmp / f"raw_{kind}"
    raw.mkdir()
    for item in find_items(glas, ["testA", "testB"]):
        _, gt = load_item(item)
        write_label_png(raw / f"{item.name}.png", make(gt))
    out = root / kind
    evaluate(glas, ["testA", "testB"], out, predictions=raw, save_predictions=True)
    shutil.copy(out / "summary.json", out / "metrics.json")
    (out / "config.json").write_text(json.dumps({"model": kind}))
    return out


@pytest.fixture
def results_env(tmp_path: Path, fake_glas_factory, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    glas = fake_glas_factory(names=NAMES)
    rows = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    rows += [f"{n},{i}, {g}, x" for i, (n, g) in enumerate(zip(NAMES, GRADES, strict=True))]
    (glas / "Grade.csv").write_bytes(("\r".join(rows) + "\r").encode())  # CR line endings, as released
    root = tmp_path / "models"
    folders = {
        "unet": _model_folder(root, glas, tmp_path, "unet", _unet_pred),
        "maskrcnn": _model_folder(root, glas, tmp_path, "maskrcnn", _maskrcnn_pred),
    }
    monkeypatch.setenv("GLANDSEG_MODELS", str(root))
    monkeypatch.setenv("GLANDSEG_DATA", str(glas))
    return {"root": root, "glas": glas, **folders}


def _texts(at: AppTest) -> str:
    return "\n".join(
        e.value for kind in ("markdown", "caption", "warning", "info", "error") for e in at.get(kind)
    )


# ----------------------------------------------------------------------------------------- metrics


PAPER_COLUMNS = ["method", "source", "convention"] + [
    f"{s} {m}" for s in ("Test A", "Test B", "Split not named") for m in ("F1", "Dice", "Hausdorff")
]


def test_metrics_page_shows_table_distributions_and_paired_test(results_env) -> None:
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception
    assert [p.key for p in at.pills] == ["metrics_splits", "metrics_grades"]
    table = at.dataframe[
        0
    ].value  # the paper's layout: methods as rows, Test A / Test B metrics as columns
    assert list(table.columns) == PAPER_COLUMNS
    ours = table[table["source"] == "ours"].set_index("method")
    assert list(ours.index) == ["U-Net", "Mask R-CNN"]
    summary = json.loads((results_env["maskrcnn"] / "metrics.json").read_text())
    for split in ("testA", "testB"):
        name = f"Test {split[-1]}"
        assert ours.loc["Mask R-CNN", f"{name} Dice"] == pytest.approx(
            summary[split]["pooled_object_dice"]
        )
        assert ours.loc["Mask R-CNN", f"{name} F1"] == pytest.approx(summary[split]["pooled_f1"])
        assert ours.loc["Mask R-CNN", f"{name} Hausdorff"] == pytest.approx(
            summary[split]["pooled_object_hausdorff"]
        )
    assert "published" in set(table["source"])
    assert len(at.get("plotly_chart")) == 6  # 3 metrics x (distribution + differences)
    text = _texts(at)
    assert "Wilcoxon signed-rank p " in text and "over 5 paired images" in text
    assert "more than 50%" in text  # the matching rule, where the numbers are
    assert not at.warning

    assert set(table.query("source == 'published'")["convention"]) == {"pooled (official GlaS)"}

    at.segmented_control(key="metrics_aggregation").set_value("per-image mean").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == PAPER_COLUMNS
    assert set(table["source"]) == {
        "ours",
        "poster",
        "published",
    }  # #22 item 6: references in both views
    assert set(table.query("source == 'ours'")["convention"]) == {"per-image mean"}
    assert set(table.query("source == 'published'")["convention"]) == {"pooled (official GlaS)"}
    poster = table.query("source == 'poster'").set_index("method")
    assert poster.loc["U-Net (poster, 15 epochs)", "Split not named F1"] == pytest.approx(0.49)
    assert poster.loc["Mask R-CNN (poster, 200 epochs)", "Split not named Hausdorff"] == pytest.approx(
        153
    )
    assert set(poster["convention"]) == {"per-image mean"}
    df = pd.read_csv(results_env["maskrcnn"] / "per_image.csv")
    mean_b = df[df["split"] == "testB"]["object_hausdorff"].mean()
    ours = table.query("source == 'ours'").set_index("method")
    assert ours.loc["Mask R-CNN", "Test B Hausdorff"] == pytest.approx(mean_b)
    text = _texts(at)
    assert text.count("Split not named") == 1 and text.count("official pooled GlaS figures") == 1


def test_model_colours_and_legends(results_env) -> None:
    """One colour per model in every plot, named in a legend; the paired plot's band and mean are named."""
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    box = charts[0]["data"]
    named = {t["name"]: t["marker"]["color"] for t in box if t.get("type") == "box"}
    assert named == {"U-Net": "#00b43c", "Mask R-CNN": "#00690f"}  # MODEL_COLOURS (docs/PALETTE.md)
    assert all(t.get("showlegend", True) for t in box if t.get("type") == "box")
    paired = {t["name"] for t in charts[1]["data"]}
    assert {"95% CI of the mean difference (bootstrap)", "mean difference"} <= paired
    assert "Models:" in _texts(at)


def test_metrics_page_filters(results_env) -> None:
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    at.pills(key="metrics_grades").set_value(["benign"]).run()
    assert not at.exception
    ours = at.dataframe[0].value.query("source == 'ours'")
    assert (
        ours[["Test A Dice", "Test B Dice"]].isna().all().all()
    )  # pooled Dice: not under a grade filter
    assert ours[["Test A F1", "Test B F1"]].notna().all().all()
    assert "Grade filter: benign" in _texts(at)
    at.pills(key="metrics_splits").set_value(["Test B"]).run()
    assert not at.exception
    at.pills(key="metrics_splits").set_value([]).run()
    assert not at.exception and "Choose at least one split" in _texts(at)


def test_metrics_page_with_one_model_missing(results_env) -> None:
    shutil.rmtree(results_env["maskrcnn"])
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No Mask R-CNN model folder" in w.value for w in at.warning)
    assert set(at.dataframe[0].value.query("source == 'ours'")["method"]) == {"U-Net"}
    assert "needs results from two models" in _texts(at)


def test_metrics_page_sets_the_poster_recipe_beside_ours(results_env, tmp_path) -> None:
    """A scores-only folder of the poster's recipe (no weights.pt) joins the table and the drill-down."""
    poster = _model_folder(
        results_env["root"], results_env["glas"], tmp_path, "poster-maskrcnn", _unet_pred
    )
    (poster / "config.json").write_text(json.dumps({"model": "maskrcnn", "name": "poster-maskrcnn"}))
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception and not at.warning
    ours = at.dataframe[0].value.query("source == 'ours'")
    assert list(ours["method"]) == ["U-Net", "Mask R-CNN", "Poster recipe"]
    assert "Poster recipe: the poster's own recipe (a Mask R-CNN)" in _texts(at)
    box = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    colours = [t["marker"]["color"] for t in box if t.get("type") == "box"]
    assert len(set(colours)) == 3  # the poster's recipe has its own colour and its own legend entry
    drill = AppTest.from_file(DRILL_PAGE, default_timeout=60).run()
    assert not drill.exception
    assert drill.pills(key="drill_models").value == ["U-Net", "Mask R-CNN"]  # the recipe: one click away
    assert len(drill.dataframe[0].value.columns) == 3 + 2 * 3 and len(drill.image) == 4
    drill.pills(key="drill_models").set_value(["U-Net", "Mask R-CNN", "Poster recipe"]).run()
    assert not drill.exception and len(drill.image) == 5
    assert "Poster recipe F1" in drill.dataframe[0].value.columns
    assert "no weights.pt" not in _texts(drill)


def test_metrics_page_without_models(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLANDSEG_MODELS", str(tmp_path / "nothing"))
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception and at.error


# --------------------------------------------------------------------------------------- drill-down


def test_drilldown_shows_views_and_glands(results_env) -> None:
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="drill_sort").value == "U-Net F1"
    images = at.dataframe[0].value
    assert set(images["image"]) == set(NAMES)
    name = at.selectbox(key="drill_pick").value
    assert name == images.sort_values("U-Net F1").iloc[0]["image"]  # worst first
    assert len(at.image) == 4  # image, ground truth, two models
    glands = at.dataframe[1].value
    assert {"gland", "U-Net Dice", "Mask R-CNN Hausdorff", "Mask R-CNN outcome (partner)"} <= set(
        glands.columns
    )
    gland = int(glands["gland"].iloc[0])
    at.selectbox(key=f"drill_gland_{name}").set_value(gland).run()
    assert not at.exception
    captions = _image_captions(at)
    assert len(captions) == 4 and not at.warning
    assert all(f"gland {gland}" in c for c in captions[2:]), (
        captions
    )  # both models' views follow the gland


def _image_captions(at: AppTest) -> list[str]:
    return [str(c) for img in at.image for c in img.captions]


def test_drilldown_opens_requested_image_and_resorts(results_env) -> None:
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60)
    at.session_state["drill_image"] = "testB_2"
    at.run()
    assert not at.exception
    assert at.selectbox(key="drill_pick").value == "testB_2"
    assert "testB_2" in at.subheader[0].value
    at.selectbox(key="drill_sort").set_value("Mask R-CNN Hausdorff").run()
    at.radio(key="drill_order").set_value("best first").run()
    assert not at.exception
    assert at.selectbox(key="drill_pick").value == "testB_2"  # the chosen image stays
    at.selectbox(key="drill_pick").set_value("testA_3").run()
    assert not at.exception and "testA_3" in at.subheader[0].value


def test_drilldown_falls_back_to_segment_and_samples(results_env, monkeypatch) -> None:
    (results_env["unet"] / "predictions" / "testA_1_labels.png").unlink()
    (results_env["unet"] / "weights.pt").write_bytes(b"stub")
    calls = []

    def segment(model_dir, image, *, tta=False, what=""):
        calls.append(str(model_dir))
        return inference.Segmentation(np.zeros(image.shape[:2], np.int32), 0.1)

    monkeypatch.setattr(inference, "segment", segment)
    (
        results_env["maskrcnn"] / "predictions" / "testA_1_labels.png"
    ).unlink()  # and no weights: said plainly
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60)
    at.session_state["drill_image"] = "testA_1"
    at.run()
    assert not at.exception
    assert calls == [str(results_env["unet"])]
    text = _texts(at)
    assert "segmented now" in text and "no weights.pt" in text
    assert len(at.image) == 3

    monkeypatch.delenv("GLANDSEG_DATA")  # no data: say how to set it, use samples/ (none here)
    monkeypatch.setattr(settings, "SAMPLES_DIR", results_env["root"] / "no_samples")
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60).run()
    assert not at.exception
    assert "GLANDSEG_DATA is not set" in _texts(at)
    assert any("bundled samples" in w.value for w in at.warning)

    samples = (
        results_env["root"] / "samples"
    )  # one bundled sample: the table keeps only it, and shows it
    samples.mkdir()
    image, gt = load_item(find_items(results_env["glas"], ["testA"])[1])
    Image.fromarray(image).save(samples / "testA_2.png")
    Image.fromarray(gt.astype(np.uint8)).save(samples / "testA_2_anno.png")
    monkeypatch.setattr(settings, "SAMPLES_DIR", samples)
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60).run()
    assert not at.exception and not at.warning
    assert list(at.dataframe[0].value["image"]) == ["testA_2"]
    assert len(at.image) == 4 and "bundled sample" in _texts(at)


def test_clicked_image_reads_customdata() -> None:
    def event(points):
        return types.SimpleNamespace(selection=types.SimpleNamespace(points=points))

    assert figures.clicked_image(event([{"customdata": ["testA_7", "benign"], "x": 0.1}])) == "testA_7"
    assert figures.clicked_image(event([{"customdata": "testB_3"}])) == "testB_3"
    assert figures.clicked_image(event([])) is None and figures.clicked_image(None) is None


def test_single_id_annotations_are_pointed_out(results_env) -> None:
    """An annotation giving all glands one id is named on the Metrics page and in its drill-down."""
    path = results_env["glas"] / "testB_1_anno.bmp"
    labels = np.asarray(Image.open(path))
    Image.fromarray((labels > 0).astype(np.uint8)).save(path)

    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception
    assert "testB_1: the annotation gives all glands one id" in _texts(at)
    at.pills(key="metrics_splits").set_value(["Test A"]).run()
    assert not at.exception and "one id" not in _texts(at)

    drill = AppTest.from_file(DRILL_PAGE, default_timeout=60)
    drill.session_state["drill_image"] = "testB_1"
    drill.run()
    assert not drill.exception and "gives all its glands one id" in _texts(drill)
    drill.selectbox(key="drill_pick").set_value("testA_1").run()
    assert not drill.exception and "one id" not in _texts(drill)


def test_drilldown_table_is_narrow_and_formatted(results_env) -> None:
    """Both models' columns fit: image, grade, glands, then F1 / Dice / Hausdorff per model (3 and 1 decimals)."""
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60).run()
    assert not at.exception
    images = at.dataframe[0].value
    assert list(images.columns) == ["image", "grade", "glands"] + [
        f"{m} {n}" for m in ("U-Net", "Mask R-CNN") for n in ("F1", "Dice", "Hausdorff")
    ]
    config = json.loads(at.dataframe[0].proto.columns)
    assert config["U-Net Hausdorff"]["type_config"]["format"] == "%.1f"
    assert config["Mask R-CNN Dice"]["type_config"]["format"] == "%.3f"
    caption = at.caption[0].value
    assert "**U-Net**: F1 " in caption and " px" in caption
    hausdorff = caption.split("Hausdorff ")[1].split(" px")[0]
    assert len(hausdorff.split(".")[1]) == 1  # one decimal, not 206.1286
    assert "more than 50%" in _texts(at)  # the matching rule where the numbers are


def test_drilldown_toggles_work_in_every_mode(results_env) -> None:
    at = AppTest.from_file(DRILL_PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("merge: one prediction over several glands" in m.value for m in at.markdown)  # legend

    def model_views() -> list[str]:
        return [img.proto.imgs[0].url for img in at.image[2:]]

    outcome = model_views()
    at.toggle(key="drill_ids").set_value(True).run()
    assert not at.exception
    outcome_ids = model_views()
    assert all(a != b for a, b in zip(outcome, outcome_ids, strict=True))  # ids drawn in outcome mode
    at.toggle(key="drill_outcome").set_value(False).run()
    assert not at.exception
    plain_ids = model_views()
    assert not any("merge: one prediction" in m.value for m in at.markdown)
    at.toggle(key="drill_ids").set_value(False).run()
    assert all(a != b for a, b in zip(plain_ids, model_views(), strict=True))  # and without it


def test_gland_and_prediction_tables_name_merges_and_splits() -> None:
    gt = np.zeros((30, 40), np.int32)
    gt[2:8, 2:8], gt[2:8, 9:15] = 1, 2  # merged by prediction 5
    gt[12:22, 2:12] = 3  # split 60 / 40 into 7 and 8
    pred = np.zeros_like(gt)
    pred[2:8, 2:15] = 5
    pred[12:22, 2:8], pred[12:22, 8:12] = 7, 8
    klass, rows = drilldown.analyse(pred, gt)
    glands = drilldown.gland_rows({"M": (klass, rows)}).set_index("gland")
    assert glands["M outcome (partner)"].to_dict() == {
        1: "found, in a merge (5)",
        2: "missed, in a merge (5)",
        3: "found, split in 2 (7)",
    }
    preds = drilldown.pred_rows(klass, rows).set_index("prediction")
    assert preds["outcome"].to_dict() == {5: "merge (TP)", 7: "split (TP)", 8: "split (FP)"}
    assert (
        drilldown.number_format("M Hausdorff") == "%.1f" and drilldown.number_format("M Dice") == "%.3f"
    )


def test_near_misses_name_the_50_percent_rule() -> None:
    gt = np.zeros((10, 10), np.int32)
    gt[:, :] = 2
    pred = np.zeros_like(gt)
    pred[:, :5] = 4  # covers exactly half: Dice 2*50/150 = 0.667, missed
    rows = drilldown.analyse(pred, gt)[1]
    assert drilldown.near_misses(pred, gt, rows) == ["gland 2: Dice 0.667, covers 50%"]
    assert drilldown.near_misses(pred, gt, rows, min_dice=0.7) == []


def test_metrics_shows_the_components_convention_from_a_models_components_folder(results_env) -> None:
    """#21 item 7: official pooled, and ground truth split into components (pooled and per-image mean)."""
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert "--relabel-gt --out <model folder>/components" in _texts(
        at
    )  # how to get the second convention
    for kind in ("unet", "maskrcnn"):
        folder = results_env[kind]
        evaluate(
            results_env["glas"],
            ["testA", "testB"],
            folder / "components",
            predictions=folder / "predictions",
            relabel_gt=True,
        )
    at = AppTest.from_file(METRICS_PAGE, default_timeout=60).run()
    assert not at.exception
    ours = at.dataframe[0].value.query("source == 'ours'")
    assert (
        list(ours["convention"])
        == ["pooled (official GlaS)"] * 2 + ["GT split into components, pooled"] * 2
    )
    at.segmented_control(key="metrics_aggregation").set_value("per-image mean").run()
    ours = at.dataframe[0].value.query("source == 'ours'")
    assert set(ours["convention"]) == {"per-image mean", "GT split into components, per-image mean"}
    assert "--relabel-gt --out" not in _texts(at)
