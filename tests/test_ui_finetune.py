"""Fine-tune on an annotation set from the Train page (issue #20 item 4) and the GPU choices (issue #22 item 5):
the run's own copy of the set with the held-out images as ``test``, the launch arguments, the before/after
scoring and table, and the Train page with CUDA faked as present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from glandseg_core.datasets import as_dataset
from glandseg_core.evaluation.compare_models import compare_models, paired_table
from glandseg_core.imaging.io import write_label_png, write_png
from glandseg_dashboard import before_after, finetune, jobs, promote
from tests.helpers import make_glands, write_fake_glas
from tests.test_app import TIMEOUT, TRAIN, env, texts, tiny_models, write_fake_run

__all__ = ["env", "tiny_models"]  # fixtures, imported for the tests below


def write_set(root: Path, n: int = 4, dataset: dict | None = None) -> Path:
    """An annotation set in the layout Annotate saves: images/<stem>.png, labels/<stem>.png, dataset.json."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, labels = make_glands(seed=i)
        write_png(root / "images" / f"img{i}.png", image)
        write_label_png(root / "labels" / f"img{i}.png", labels)
    (root / "dataset.json").write_text(json.dumps(dataset or {"mpp": 0.62}))
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_data_holds_out_the_marked_images_and_leaves_the_set_alone(tmp_path: Path) -> None:
    user = write_set(tmp_path / "mine", dataset={"mpp": 0.5, "splits": {"val": ["img0", "img3"]}})
    before = _snapshot(user)
    data = finetune.prepare_run_data(user, ["img3"], tmp_path / "run")
    assert _snapshot(user) == before  # the user's set is only read
    spec = json.loads((data / "dataset.json").read_text())
    assert spec["splits"] == {"val": ["img0"], "test": ["img3"]}  # img3 left the set's own val list
    ds = as_dataset(data)
    assert [it.name for it in ds.items(["test"])] == ["img3"]
    assert "img3" not in [it.name for it in ds.items(["train", "val"])]
    assert {it.mpp for it in ds.items()} == {0.5}  # the set's pixel size travels with the copy
    image, labels = ds.items(["test"])[0].load()
    assert np.array_equal(labels, make_glands(seed=3)[1])


@pytest.mark.parametrize(
    ("held", "why"),
    [([], "hold out at least one"), (["nope"], "nope is not"), (["img0", "img1"], "at least 2")],
)
def test_run_data_refuses_bad_held_out_choices(tmp_path: Path, held: list[str], why: str) -> None:
    user = write_set(tmp_path / "mine", n=3)
    with pytest.raises(ValueError, match=why):
        finetune.prepare_run_data(user, held, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_held_out_fraction_is_seeded_and_keeps_groups_whole(tmp_path: Path) -> None:
    groups = {"img0": {"group": "p1"}, "img1": {"group": "p1"}, "img2": {"group": "p2"}}
    user = write_set(tmp_path / "mine", n=6, dataset={"images": groups})
    first = finetune.held_out_by_fraction(user, 0.34, seed=3)
    assert first == finetune.held_out_by_fraction(user, 0.34, seed=3) and first
    assert ("img0" in first) == ("img1" in first)
    with pytest.raises(ValueError, match="between 0 and 1"):
        finetune.held_out_by_fraction(user, 1.0)


def test_start_finetune_launches_on_the_run_copy_with_the_device(
    env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[list[str]] = []
    monkeypatch.setattr(jobs, "_launch", lambda args, out: launched.append(args) or 4242)
    user = write_set(tmp_path / "mine")
    base = env["models"] / "unet"
    cfg = finetune.finetune_config(base)
    assert cfg.name == "finetune-unet" and cfg.train_init == str(base / "weights.pt")
    run = env["runs"] / "ft"
    pid = finetune.start_finetune(cfg, run, set_dir=user, base=base, held_out=["img1"], device="cuda")
    args = launched[0]
    assert pid == 4242 and args[args.index("--data") + 1] == str(run / "data")
    assert args[args.index("--device") + 1] == "cuda"
    assert finetune.read_record(run)["held_out"] == ["img1"]
    assert json.loads((run / "requested_config.json").read_text())["train_init"] == cfg.train_init
    (run / "last.pt").write_bytes(b"x")
    monkeypatch.setattr(jobs.runs, "alive", lambda pid, marker="": False)
    finetune.resume(run, fallback_data=tmp_path / "glas-not-used")
    assert launched[1][launched[1].index("--data") + 1] == str(run / "data")
    assert "--resume" in launched[1] and launched[1][-2:] == ["--device", "cuda"]


def test_before_after_scores_both_models_on_the_held_out_images(
    env: dict[str, Path], tmp_path: Path
) -> None:
    user = write_set(tmp_path / "mine", n=3)
    run = tmp_path / "run"
    data = finetune.prepare_run_data(user, ["img2"], run)
    unet = env["models"] / "unet"
    comparison = compare_models(unet, unet, data, out_dir=run / before_after.OUT, device="cpu")
    assert list(comparison.per_image["base"]["image"]) == ["img2"]
    table = paired_table(comparison, n_boot=200)
    assert list(table["metric"]) == ["F1", "Object Dice", "Object Hausdorff (px)"]
    assert (table["n"] == 1).all() and (table["mean_diff"].fillna(0) == 0).all()
    assert table["note"].str.contains("one paired image").all()
    (run / finetune.RECORD).write_text(json.dumps({"base": str(unet), "held_out": ["img2"]}))
    assert before_after.status(run)["status"] == "done"
    shown, per_image = before_after.results(run)  # type: ignore[misc]
    assert list(per_image[("image", "")]) == ["img2"]
    views = before_after.overlays(run, "img2")
    assert {k: v.shape for k, v in views.items()} == dict.fromkeys(
        ("truth", "base", "tuned"), (64, 96, 3)
    )


def test_train_page_shows_a_finished_finetune_before_and_after(
    env: dict[str, Path], tmp_path: Path
) -> None:
    user = write_set(env["annotations"] / "corrections", n=3)
    run = env["runs"] / "ft-run"
    write_fake_run(run, env["models"] / "unet" / "weights.pt")
    data = finetune.prepare_run_data(user, ["img2"], run)
    unet = env["models"] / "unet"
    record = {"set": str(user), "base": str(unet), "held_out": ["img2"], "device": None}
    (run / finetune.RECORD).write_text(json.dumps(record))
    compare_models(unet, run, data, out_dir=run / before_after.OUT, device="cpu")
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Before vs after, on the held-out images" in [h.value for h in at.subheader]
    assert "One held-out image" in texts(at, "info")
    assert len(at.get("image")) == 3  # ground truth, before, after
    assert at.text_input(key="promote_ft-run").value == "ft-run"  # kept beside the shipped models
    at.text_input(key="promote_ft-run").set_value("unet").run()
    assert "kept beside it" in texts(at, "error")
    assert "corrections" in at.selectbox(key="ft_set").options
    assert at.selectbox(key="ft_base").options[:3] == ["model unet", "model maskrcnn", "run ft-run"]
    promoted = promote.promote(run, tmp_path / "promoted")
    kept = json.loads((promoted / promote.BEFORE_AFTER).read_text())
    assert kept["held_out"] == ["img2"] and kept["tuned"]["test"]["n_images"] == 1


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """CUDA faked as present, and every launch recorded instead of started."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    launched: list[list[str]] = []
    monkeypatch.setattr(jobs, "_launch", lambda args, out: launched.append(args) or 4242)
    return launched


def test_with_a_gpu_the_form_offers_the_device_and_the_run_gets_it(
    env: dict[str, Path], tmp_path: Path, fake_cuda: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no COCO weights there
    glas = write_fake_glas(tmp_path / "glas")
    monkeypatch.setenv("GLANDSEG_DATA", str(glas))
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not at.exception and "Fake GPU" in texts(at, "success")
    radio = at.radio(key="device_poster-maskrcnn")
    assert radio.options == ["GPU (cuda)", "CPU"] and radio.value == "cuda"
    warning = texts(at, "warning")
    assert "maskrcnn_resnet50_fpn_coco" in warning and str(tmp_path / "torch") in warning
    assert "--set" not in texts(at) and "pretrained=none" not in texts(at)
    at.button(key="scratch_cfg_poster-maskrcnn_pretrained").click().run()
    assert at.text_input(key="cfg_poster-maskrcnn_pretrained").value == "none"
    at.button(key="FormSubmitter:train_form_poster-maskrcnn-Start training").click().run()
    assert not at.exception and fake_cuda, texts(at, "error")
    args = fake_cuda[-1]
    assert args[args.index("--device") + 1] == "cuda"
    at.button(key="gpu_poster").click().run()  # the poster's recipe in one click, on the GPU
    assert fake_cuda[-1][fake_cuda[-1].index("--device") + 1] == "cuda"
    cfg = json.loads(Path(fake_cuda[-1][fake_cuda[-1].index("--config") + 1]).read_text())
    assert cfg["name"] == "poster-maskrcnn" and cfg["pretrained"] == "coco"


def test_without_a_gpu_there_is_no_device_choice(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not at.exception and not [r for r in at.radio if str(r.key).startswith("device_")]
    assert not [b for b in at.button if b.key == "gpu_poster"]
