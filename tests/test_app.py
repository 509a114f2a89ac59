"""AppTest smoke and behaviour tests of the Compare, Train and Annotate pages on tiny model folders built here.

The model folders hold untrained networks (a 4-channel U-Net and a ResNet-18 Mask R-CNN at 128 px), so the
overlays are noise, but every path from upload to downloads runs. Nothing touches the real ``runs/``,
``trained_models/``, ``annotations/`` or the machine-wide training lock: every folder comes from an env var.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from glandseg_core.config import PRESETS, config_to_dict, replace_config, save_config
from glandseg_core.errors import ImageError
from glandseg_core.imaging.io import png_bytes, read_label_map
from glandseg_core.models import build_model
from glandseg_core.train.locks import training_lock

REPO = Path(__file__).resolve().parents[1]
COMPARE, TRAIN, ANNOTATE = (str(REPO / "pages" / f"{p}.py") for p in ("compare", "train", "annotate"))
TIMEOUT = 400  # two shared cores: model loading and the first inference can be slow


def tiny_configs() -> dict[str, object]:
    """Tiny but real configs of both roles (fp32, so results do not depend on the CPU's bf16 support)."""
    return {
        "unet": replace_config(PRESETS["glandseg-unet"], name="tiny-unet", unet_base=4, unet_depth=2, train_amp=False),
        "maskrcnn": replace_config(
            PRESETS["glandseg-maskrcnn-cpu"], name="tiny-maskrcnn", maskrcnn_min_size=128, maskrcnn_max_size=192,
            maskrcnn_detections_per_img=8, train_amp=False,
        ),
    }  # fmt: skip


def make_tiny_models(root: Path) -> Path:
    """``root/unet`` and ``root/maskrcnn`` model folders (weights.pt + config.json) with untrained networks."""
    torch.manual_seed(0)
    for role, cfg in tiny_configs().items():
        folder = root / role
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.half() if v.is_floating_point() else v for k, v in build_model(cfg).state_dict().items()
        }
        torch.save(
            {"model": state, "config": dataclasses.asdict(cfg), "epoch": 0}, folder / "weights.pt"
        )
        save_config(cfg, folder / "config.json")
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def env(tmp_path: Path, tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Private folders for runs, annotations and the training lock; the shared tiny models (read-only: the
    cached segmentations are keyed by folder, so sharing keeps reruns fast; see ``own_models``)."""
    paths = {"models": tiny_models, **{k: tmp_path / k for k in ("runs", "annotations", "locks")}}
    for key, var in (
        ("models", "MODELS"),
        ("runs", "RUNS"),
        ("annotations", "ANNOTATIONS"),
        ("locks", "LOCK_DIR"),
    ):
        monkeypatch.setenv(f"GLANDSEG_{var}", str(paths[key]))
    for var in ("GLANDSEG_DATA", "GLANDSEG_DATA_ROOT", "GLANDSEG_ALLOW_ANY_PATH", "GLANDSEG_READONLY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GLANDSEG_MEMORY_BUDGET_MB", "4096")  # the same budget on every machine
    monkeypatch.setenv("GLANDSEG_CACHE", str(tmp_path / "cache"))  # kept segmentations: private too
    return paths


def own_models(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, keep: tuple[str, ...] = ("unet", "maskrcnn")
) -> Path:
    """A private copy of the tiny models with only the ``keep`` folders, for tests that change the folder."""
    root = env["runs"].parent / "models"
    root.mkdir()
    for role in keep:
        shutil.copytree(env["models"] / role, root / role)
    monkeypatch.setenv("GLANDSEG_MODELS", str(root))
    env["models"] = root
    return root


def texts(at: AppTest, *kinds: str) -> str:
    return "\n".join(
        str(e.value)
        for kind in kinds or ("markdown", "caption", "warning", "info", "error", "success")
        for e in at.get(kind)
    )


def metric_labels(at: AppTest) -> list[str]:
    return [m.label for m in at.metric]


# ---------------------------------------------------------------------------------------------- Compare


@pytest.mark.slow
def test_compare_shows_both_models_scores_and_downloads_on_the_default_sample(
    env: dict[str, Path],
) -> None:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert not at.error
    assert at.selectbox(key="cmp_source").value == "sample:testA_1"  # a bundled test sample, at once
    assert "testA_1" in texts(at, "caption") and "9 glands" in texts(at, "caption")
    labels = metric_labels(at)
    assert labels.count("Glands") == 2 and labels.count("Inference") == 2
    assert labels.count("Mean area µm²") == 2
    assert "more than 50 %" in texts(at, "caption") and "more than half" in texts(at, "info")
    assert (
        labels.count("F1") == 2
        and labels.count("Object Dice") == 2
        and labels.count("Object Hausdorff") == 2
    )
    assert len(at.get("image")) == 4  # two overlays, the disagreement map, the ground truth
    assert len(at.get("download_button")) == 8
    assert "agree on" in texts(at, "caption")
    assert "found (TP)" in texts(at, "markdown") and "only U-Net" in texts(at, "markdown")
    assert at.selectbox(key="cmp_model_unet").value == "unet"
    assert at.number_input(key="cmp_mpp_sample:testA_1").value == pytest.approx(0.62)


@pytest.mark.slow
def test_compare_display_options_tta_and_another_sample(env: dict[str, Path]) -> None:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    at.sidebar.toggle(key="cmp_outcome").set_value(False)
    at.sidebar.toggle(key="cmp_ids").set_value(True)
    at.sidebar.toggle(key="cmp_outlines").set_value(False)
    at.sidebar.slider(key="cmp_alpha").set_value(0.8)
    at.sidebar.checkbox(key="cmp_tta").check()
    at.run()
    assert not at.exception and not at.error
    assert metric_labels(at).count("Glands") == 2
    at.sidebar.checkbox(key="cmp_tta").uncheck()
    at.selectbox(key="cmp_source").set_value("sample:testB_2").run()
    at.sidebar.selectbox(key="cmp_gt").set_value("none").run()
    assert not at.exception
    assert "testB_2" in texts(at, "caption") and "no ground truth" in texts(at, "caption")
    assert "F1" not in metric_labels(at) and metric_labels(at).count("Glands") == 2


@pytest.mark.slow
def test_compare_says_plainly_when_a_model_folder_is_missing(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    own_models(env, monkeypatch, keep=("unet",))
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    assert not at.exception
    warning = texts(at, "warning")
    assert "No Mask R-CNN model" in warning and str(env["models"] / "maskrcnn") in warning
    assert metric_labels(at).count("Glands") == 2 or metric_labels(at).count("Glands") == 1
    # the U-Net panel works; the Mask R-CNN panel offers the other folder but picks nothing by itself
    assert at.selectbox(key="cmp_model_maskrcnn").value is None
    assert metric_labels(at).count("Glands") == 1 and "Needs both" in texts(at, "info")


def test_compare_without_any_model(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    own_models(env, monkeypatch, keep=())
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert texts(at, "warning").count("model: the folder") == 2
    assert "Glands" not in metric_labels(at)


@pytest.mark.slow
def test_compare_offers_a_drop_zone_in_the_main_area(env: dict[str, Path]) -> None:
    """#14: the upload field is on the page itself on arrival, not behind a sidebar radio button."""
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    assert not at.exception
    uploaders = list(at.main.get("file_uploader"))
    assert uploaders and not at.sidebar.get("file_uploader") and not at.sidebar.get("radio")
    assert "Drop your own H&E image" in str(uploaders[0].proto.label)


@pytest.mark.slow
def test_compare_pixel_size_changes_the_areas(env: dict[str, Path]) -> None:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    area = next(m for m in at.metric if m.label == "Mean area µm²")
    assert "0.62 µm per pixel" in area.help
    at.number_input(key="cmp_mpp_sample:testA_1").set_value(0.31).run()  # segmented at the model's 0.62
    assert not at.exception and not at.error
    area = next(m for m in at.metric if m.label == "Mean area µm²")
    assert "0.31 µm per pixel" in area.help and metric_labels(at).count("Glands") == 2


@pytest.mark.slow
def test_compare_marks_training_images_and_explains_single_id_annotations(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, glas_dir: Path
) -> None:
    """#14: a GlaS train_* image says the models have seen it; testB_3's one-id annotation is explained."""
    monkeypatch.setenv("GLANDSEG_DATA", str(glas_dir))
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    options = at.selectbox(key="cmp_source").options
    first_train = next(i for i, o in enumerate(options) if "training image" in o)
    first_val = next(i for i, o in enumerate(options) if "validation image" in o)
    assert all("Test" in o for o in options[:first_val]) and first_val < first_train  # test images first
    at.selectbox(key="cmp_source").set_value("glas:train_1").run()
    assert not at.exception and "is a GlaS training image" in texts(at, "warning")
    at.selectbox(key="cmp_source").set_value("glas:testB_3").run()
    assert not at.exception
    assert "one id" in texts(at, "warning") and "F1 0.000" in texts(at, "warning")


def test_bad_uploads_give_one_line_errors() -> None:
    from glandseg_dashboard import loaders

    image = np.full((40, 50, 3), 200, np.uint8)
    good = png_bytes(image)
    assert loaders.decode_upload(good, "ok.png").shape == (40, 50, 3)
    for data, expected in (
        (b"%PDF-1.4 not an image", "not an image"),
        (good[: len(good) // 2], "truncated"),
        (b"", "empty"),
    ):
        with pytest.raises(ImageError, match=expected) as info:
            loaders.decode_upload(data, "scan.png")
        assert "\n" not in str(info.value) and "scan.png" in str(info.value)
    with pytest.raises(ImageError, match="annotation is 50×40 but the image is 60×40"):
        loaders.decode_upload_labels(png_bytes(image), "anno.png", (40, 60))


# ------------------------------------------------------------------------------------------- Annotate


def save_button(at: AppTest):
    return next(b for b in at.button if b.label == "Save to set")


def test_annotate_saves_into_a_set_confirms_a_replace_and_compare_scores_against_it(
    env: dict[str, Path],
) -> None:
    at = AppTest.from_file(ANNOTATE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.radio(key="ann_mode").value == "polygon"
    assert at.metric[0].value == "0"
    assert [b.label for b in at.button].count("Undo") == 1  # the canvas's own toolbar is hidden
    at.selectbox(key="ann_start").set_value("anno").run()
    assert not at.exception and at.metric[0].value == "9"
    assert at.text_input(key="ann_set").label == "Annotation set"
    at.text_input(key="ann_set").set_value("../escape").run()
    assert "Annotation set" in texts(at, "error") and save_button(at).disabled
    at.text_input(key="ann_set").set_value("colon-set").run()
    save_button(at).click().run()
    folder = env["annotations"] / "colon-set"
    saved = folder / "labels" / "testA_1.png"
    assert saved.is_file() and len(np.unique(read_label_map(saved))) == 10
    assert (folder / "images" / "testA_1.png").is_file()
    assert json.loads((folder / "dataset.json").read_text())["mpp"] == pytest.approx(0.62)
    assert str(folder) in texts(at, "success") and "holds 1 image" in texts(at, "success")
    assert (
        "Annotation set colon-set (testA_1.png)" in at.selectbox(key="ann_start").options
    )  # start again
    # the same image again: only after ticking the box, and only its own label map
    assert save_button(at).disabled
    at.checkbox(key="ann_replace_colon-set_testA_1").check().run()
    assert not save_button(at).disabled
    save_button(at).click().run()
    assert "Replaced the annotation of testA_1" in texts(at, "success")

    cmp = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    gt = cmp.sidebar.selectbox(key="cmp_gt")
    assert "Annotation set colon-set (testA_1.png)" in gt.options
    gt.set_value(f"saved:{saved}").run()
    assert not cmp.exception and metric_labels(cmp).count("F1") == 2
    assert "Annotation set colon-set" in texts(cmp, "caption")


def test_old_flat_annotations_still_show_up_read_only(env: dict[str, Path]) -> None:
    env["annotations"].mkdir(parents=True)
    shutil.copy(REPO / "samples" / "testA_1_anno.png", env["annotations"] / "testA_1.png")
    at = AppTest.from_file(ANNOTATE, default_timeout=TIMEOUT).run()
    flat = f"saved:{env['annotations'] / 'testA_1.png'}"
    assert "Saved annotation (annotations/testA_1.png)" in at.selectbox(key="ann_start").options
    at.selectbox(key="ann_start").set_value(flat).run()
    assert not at.exception and at.metric[0].value == "9"


@pytest.mark.slow  # Compare runs both tiny models twice (~100 s on two busy cores)
def test_choices_survive_a_visit_to_another_page(env: dict[str, Path]) -> None:
    """#22 item 7: Annotate's "Start from" and Compare's ground truth stay as chosen after a page switch
    (Streamlit drops the state of widgets a run leaves unrendered)."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()  # opens on Compare
    at.switch_page("pages/annotate.py").run()
    at.selectbox(key="ann_Bundle").set_value("sample:testA_13").run()
    at.selectbox(key="ann_start").set_value("anno").run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    gt = at.sidebar.selectbox(key="cmp_gt")
    assert gt.value == "anno"
    gt.set_value("none").run()
    assert [s.label for s in at.sidebar.selectbox].count("Ground truth") == 1
    at.switch_page("pages/annotate.py").run()
    assert not at.exception and at.selectbox(key="ann_Bundle").value == "sample:testA_13"
    assert at.selectbox(key="ann_start").value == "anno" and at.metric[0].value != "0"
    at.switch_page("pages/compare.py").run()
    assert at.sidebar.selectbox(key="cmp_gt").value == "none"
    assert "no ground truth" in texts(at, "caption")


def test_annotate_starts_from_a_model_prediction(env: dict[str, Path]) -> None:
    at = AppTest.from_file(ANNOTATE, default_timeout=TIMEOUT).run()
    at.selectbox(key="ann_start").set_value("model:unet").run()
    assert not at.exception and not at.error
    assert at.metric[0].label == "Glands drawn"
    at.radio(key="ann_mode").set_value("freedraw").run()
    assert not at.exception


# ---------------------------------------------------------------------------------------------- Train


def test_train_form_is_prefilled_from_the_poster_preset(
    env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root = tmp_path / "data"
    monkeypatch.setenv("GLANDSEG_DATA_ROOT", str(data_root))
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.selectbox(key="train_preset").value == "poster-maskrcnn"
    assert "GPU" in texts(at, "info", "success") and (
        "cuda" in texts(at, "info", "success") or "CPU" in texts(at, "info")
    )
    assert at.number_input(key="cfg_poster-maskrcnn_train_lr").value == pytest.approx(0.005)
    assert at.number_input(key="cfg_poster-maskrcnn_train_epochs").value == 200
    assert at.selectbox(key="cfg_poster-maskrcnn_train_optimizer").value == "sgd"
    assert at.text_input(key="cfg_poster-maskrcnn_maskrcnn_anchor_sizes").value == "32,64,128,256,512"
    n_fields = len(config_to_dict(PRESETS["poster-maskrcnn"]))  # common fields + the Mask R-CNN section
    widgets = [
        w
        for kind in ("number_input", "checkbox", "selectbox", "text_input")
        for w in at.get(kind)
        if str(w.key).startswith("cfg_")
    ]
    assert len(widgets) == n_fields
    assert "No runs yet" in texts(at, "info")
    at.selectbox(key="train_preset").set_value("glandseg-unet").run()
    assert at.number_input(key="cfg_glandseg-unet_unet_base").value == 32
    # no GlaS folder: refused before anything is launched or written
    at.button(key="FormSubmitter:train_form_glandseg-unet-Start training").click().run()
    assert "Enter the GlaS folder" in texts(at, "error")
    at.text_input(key="train_data").set_value(str(env["runs"] / "nowhere")).run()
    at.button(key="FormSubmitter:train_form_glandseg-unet-Start training").click().run()
    assert "lies outside" in texts(at, "error")  # not inside the data root (GLANDSEG_DATA_ROOT)
    at.text_input(key="train_data").set_value(str(data_root / "nowhere")).run()
    at.button(key="FormSubmitter:train_form_glandseg-unet-Start training").click().run()
    assert "does not exist" in texts(at, "error")
    assert not env["runs"].exists() or not any(env["runs"].iterdir())


def test_train_start_is_refused_while_a_training_runs(env: dict[str, Path]) -> None:
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    with training_lock(Path("/elsewhere/run")):
        at.run()
        assert "already running" in texts(at, "warning")
        at.button(key="FormSubmitter:train_form_poster-maskrcnn-Start training").click().run()
        assert "already running" in texts(at, "error")
    assert not any(env["runs"].iterdir()) if env["runs"].exists() else True


def write_fake_run(run: Path, weights_from: Path) -> None:
    """A finished two-epoch run folder (config, log, progress, best.pt) without training."""
    run.mkdir(parents=True)
    cfg = tiny_configs()["unet"]
    save_config(cfg, run / "config.json")
    rows = [
        {"epoch": e, "train_loss": 1.0 / e, "loss_gland": 0.5 / e, "lr": 1e-3, "val_f1": 0.3 * e,
         "val_object_dice": 0.35 * e, "val_object_hausdorff": 100.0 / e, "seconds": 1.0}
        for e in (1, 2)
    ]  # fmt: skip
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    progress = {
        "event": "done",
        "epoch": 2,
        "epochs": 2,
        "step": 3,
        "steps": 3,
        "status": "finished",
        "time": time.time(),
        "pid": 1,
    }
    (run / "progress.json").write_text(json.dumps(progress))
    shutil.copy(weights_from, run / "best.pt")


def test_train_lists_runs_with_curves_and_promotes_with_confirmation(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    own_models(env, monkeypatch)
    write_fake_run(env["runs"] / "tiny-run", env["models"] / "unet" / "weights.pt")
    before = (env["models"] / "unet" / "weights.pt").stat().st_mtime_ns
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.selectbox(key="train_selected").value == "tiny-run"
    assert len(at.get("plotly_chart")) == 2
    assert len(at.get("arrow_data_frame")) >= 1 or len(at.dataframe) >= 1
    assert "finished" in texts(at, "markdown", "caption") or any(
        "finished" in str(p.proto) for p in at.get("progress")
    )
    buttons = {b.label: b for b in at.button}
    assert (
        buttons["Stop"].disabled
        and buttons["Resume"].disabled
        and not buttons["Evaluate on val"].disabled  # issue #12: val first
        and buttons["Evaluate on Test A + Test B (recorded)"].disabled  # only after val, and confirmed
    )
    # the target folder holds a model: Promote waits for the box that names what it replaces
    assert at.text_input(key="promote_tiny-run").value == "unet"
    assert buttons["Promote"].disabled
    box = at.checkbox(key="promote_ok_tiny-run_unet")
    assert "weights.pt" in box.label and "config.json" in box.label
    box.check().run()
    next(b for b in at.button if b.label == "Promote").click().run()
    assert not at.exception and "Promoted tiny-run" in texts(at, "success")
    assert (env["models"] / "unet" / "weights.pt").stat().st_mtime_ns != before
    assert (env["models"] / "unet" / "MODEL_CARD.md").is_file()
    # a new folder name needs no confirmation
    at.text_input(key="promote_tiny-run").set_value("unet-v2").run()
    next(b for b in at.button if b.label == "Promote").click().run()
    assert (env["models"] / "unet-v2" / "weights.pt").is_file()
