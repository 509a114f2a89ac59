"""evaluate: any data set or in-memory pairs, nothing written unless asked, test-set history of model folders
(when the caller records it), and the --relabel-gt diagnostic beside the official figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glandseg_core.checkpoints import export_model
from glandseg_core.cli import get_args_parser, main
from glandseg_core.config import save_config
from glandseg_core.datasets import GlasDataset, eval_splits, from_pairs
from glandseg_core.evaluation import (
    PER_IMAGE_COLUMNS,
    TEST_HISTORY,
    evaluate,
    read_relabel_summary,
    read_test_history,
    record_test_scoring,
    relabel_components,
)
from glandseg_core.imaging.io import write_label_png
from glandseg_core.models import build_model
from glandseg_core.progress import Step
from glandseg_core.segmenters import load_segmenter
from tests.helpers import tiny_unet_config, write_fake_glas

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    cfg = tiny_unet_config()
    torch.manual_seed(0)
    save_config(cfg, run / "config.json")
    torch.save(
        {"model": build_model(cfg).state_dict(), "config": dataclasses.asdict(cfg), "epoch": 0},
        run / "best.pt",
    )
    return export_model(run, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def glas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_glas(
        tmp_path_factory.mktemp("glas"), names=("train_1", "testA_1", "testA_2", "testB_1")
    )


def test_every_test_scoring_of_a_model_folder_is_recorded(
    model_dir: Path, glas: Path, tmp_path: Path
) -> None:
    (model_dir / TEST_HISTORY).unlink(missing_ok=True)
    seg = load_segmenter(model_dir, device="cpu")
    evaluate(glas, ["train"], tmp_path / "a", segmenter=seg, record_history=True)
    assert read_test_history(model_dir) == []  # no test split: nothing recorded

    _, summary = evaluate(
        glas, ["testA", "testB"], tmp_path / "b", segmenter=seg, record_history=True, reason="ship check"
    )
    history = read_test_history(model_dir)
    assert [r["split"] for r in history] == ["testA", "testB"]
    for r in history:
        assert r["reason"] == "ship check" and r["tta"] is False and r["commit"]
        assert r["date"].endswith("+00:00")
        assert r["figures"]["pooled_f1"] == summary[r["split"]]["pooled_f1"]
        assert r["figures"]["n_images"] == summary[r["split"]]["n_images"]

    seg.tta = True
    evaluate(glas, ["testB"], tmp_path / "c", segmenter=seg, record_history=True)
    assert [(r["split"], r["tta"]) for r in read_test_history(model_dir)][-1] == ("testB", True)
    assert len((model_dir / TEST_HISTORY).read_text().splitlines()) == 3


def test_scoring_saved_predictions_is_not_a_model_scoring(
    model_dir: Path, glas: Path, tmp_path: Path
) -> None:
    preds = tmp_path / "preds"
    preds.mkdir()
    for name in ("testA_1", "testA_2", "testB_1"):
        write_label_png(preds / f"{name}.png", np.zeros((64, 96), np.int32))
    before = read_test_history(model_dir)
    evaluate(glas, ["testA", "testB"], tmp_path / "out", predictions=preds, record_history=True)
    assert read_test_history(model_dir) == before


def test_pairs_in_memory_score_as_the_files_and_leave_no_trace(
    model_dir: Path, glas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same images as arrays give the same figures as the GlaS folder; nothing is written or recorded."""
    (model_dir / TEST_HISTORY).unlink(missing_ok=True)
    seg = load_segmenter(model_dir, device="cpu")
    table, summary = evaluate(glas, ["testA"], tmp_path / "files", segmenter=seg, record_history=True)
    assert [r["split"] for r in read_test_history(model_dir)] == ["testA"]
    history = (model_dir / TEST_HISTORY).read_text()

    monkeypatch.chdir(tmp_path / "files")
    before = {p: p.stat().st_mtime_ns for p in (*tmp_path.rglob("*"), *model_dir.rglob("*"))}
    pairs = [it.load() for it in GlasDataset(glas).items(["testA"])]
    steps: list[Step] = []
    t2, s2 = evaluate(pairs, segmenter=seg, progress=steps.append)
    assert s2 == {"test": summary["testA"]}
    cols = [c for c in PER_IMAGE_COLUMNS if c not in ("image", "split", "grade", "seconds")]
    assert t2[cols].equals(table[cols]) and list(t2["image"]) == ["test_1", "test_2"]
    assert [(s.phase, s.done, s.total) for s in steps] == [("evaluate", i, 2) for i in range(3)]
    ds = from_pairs([p[0] for p in pairs], [p[1] for p in pairs], split="testA", mpp=0.62)
    assert evaluate(ds, segmenter=seg)[1] == summary  # a test split scored from Python: still no history
    after = {p: p.stat().st_mtime_ns for p in (*tmp_path.rglob("*"), *model_dir.rglob("*"))}
    assert after == before and (model_dir / TEST_HISTORY).read_text() == history


def test_saved_predictions_score_the_same_on_pairs_as_on_files(glas: Path, tmp_path: Path) -> None:
    """Non-trivial figures: half of each image's glands predicted, read from a folder for both data sets."""
    items = GlasDataset(glas).items(["testA", "testB"])
    preds = tmp_path / "preds"
    preds.mkdir()
    for it in items:
        gt = it.load()[1]
        write_label_png(preds / f"{it.name}.png", np.where(gt % 2 == 1, gt, 0).astype(np.int32))
    table, summary = evaluate(glas, ["testA", "testB"], predictions=preds)
    loaded = [it.load() for it in items]
    pairs = from_pairs(
        [im for im, _ in loaded], [lab for _, lab in loaded], names=[it.name for it in items], split="x"
    )
    t2, s2 = evaluate(pairs, predictions=preds)
    assert (
        s2["x"] == summary["all"]
        and 0 < summary["all"]["tp"] < summary["all"]["tp"] + summary["all"]["fn"]
    )
    cols = [c for c in PER_IMAGE_COLUMNS if c not in ("split", "grade", "seconds")]
    assert t2[cols].equals(table[cols])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds"]  # nothing written


def test_images_at_another_pixel_size_are_segmented_at_the_models(model_dir: Path, glas: Path) -> None:
    """An item at 0.31 µm/px (twice the model's resolution) reaches the network at half its size."""
    seg = load_segmenter(model_dir, device="cpu")
    seen: list[tuple[int, ...]] = []
    raw = seg.raw
    seg.raw = lambda image, *a, **k: seen.append(image.shape) or raw(image, *a, **k)  # type: ignore[method-assign]
    image, labels = GlasDataset(glas).items(["testA"])[0].load()
    table, _ = evaluate(from_pairs([image], [labels], mpp=0.31), segmenter=seg)
    assert seen == [(32, 48, 3)] and len(table) == 1
    seen.clear()
    evaluate(from_pairs([image], [labels]), segmenter=seg)  # pixel size unknown: as it is
    assert seen == [(64, 96, 3)]


def test_files_are_written_only_into_an_out_dir() -> None:
    with pytest.raises(ValueError, match="give out_dir"):
        evaluate([], predictions="p", save_predictions=True)


def test_history_reader_skips_torn_lines_and_record_ignores_val(tmp_path: Path) -> None:
    assert record_test_scoring(tmp_path, {"val": {"pooled_f1": 1.0}}) == 0
    assert not (tmp_path / TEST_HISTORY).exists()
    assert record_test_scoring(tmp_path, {"testA": {"pooled_f1": 0.5, "n_images": 60}}, reason="r") == 1
    with open(tmp_path / TEST_HISTORY, "a") as f:
        f.write('{"date": "2026-12-01", "split": "te')  # an interrupted write
    assert [r["figures"] for r in read_test_history(tmp_path)] == [{"pooled_f1": 0.5, "n_images": 60}]


# ------------------------------------------------------------------------------------- --relabel-gt


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


@pytest.fixture
def single_id(tmp_path: Path) -> tuple[Path, Path]:
    """A GlaS folder whose testA_1 annotation gives two separate glands one id, and a per-gland prediction."""
    root = write_fake_glas(tmp_path / "glas", names=("testA_1",))
    big, small = _disc(64, 96, 20, 20, 12), _disc(64, 96, 20, 70, 8)
    gt = np.zeros((64, 96), np.uint8)
    gt[big | small] = 1  # one id, two pieces
    gt[_disc(64, 96, 50, 45, 9)] = 2
    Image.fromarray(gt).save(root / "testA_1_anno.bmp")
    preds = tmp_path / "preds"
    preds.mkdir()
    write_label_png(preds / "testA_1.png", relabel_components(gt))
    return root, preds


def test_relabel_components_splits_ids_into_pieces() -> None:
    gt = np.zeros((5, 9), np.int32)
    gt[1:3, 1:3] = 7
    gt[1:3, 6:8] = 7  # same id, a second piece
    gt[3:5, 3:5] = 300
    out = relabel_components(gt)
    assert out.dtype == np.int32 and len(np.unique(out[out > 0])) == 3
    assert out[1, 1] != out[1, 6] and (out > 0).sum() == (gt > 0).sum()


def test_relabel_gt_is_reported_beside_never_instead(
    single_id: tuple[Path, Path], tmp_path: Path
) -> None:
    root, preds = single_id
    plain_table, plain = evaluate(root, ["testA"], tmp_path / "plain", predictions=preds)
    table, summary = evaluate(root, ["testA"], tmp_path / "diag", predictions=preds, relabel_gt=True)
    assert summary == plain  # the official figures do not move
    assert table.drop(columns="seconds").equals(plain_table.drop(columns="seconds"))
    assert json.loads((tmp_path / "diag" / "summary.json").read_text()) == plain
    # official: the smaller piece of the two-piece gland is a false positive (one id is one object)
    assert (summary["testA"]["tp"], summary["testA"]["fp"], summary["testA"]["fn"]) == (2, 1, 0)
    diag = read_relabel_summary(tmp_path / "diag")
    assert (diag["testA"]["tp"], diag["testA"]["fp"], diag["testA"]["fn"]) == (3, 0, 0)
    raw = json.loads((tmp_path / "diag" / "summary_relabel_gt.json").read_text())
    assert "NOT the official" in raw["diagnostic"]
    assert (tmp_path / "diag" / "per_image_relabel_gt.csv").is_file()
    assert read_relabel_summary(tmp_path / "plain") == {}


def test_cli_prints_the_diagnostic_after_the_official_table(
    single_id: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, preds = single_id
    argv = ["evaluate", "--predictions", str(preds), "--data", str(root), "--split", "testA"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--relabel-gt"]) == 0
    out = capsys.readouterr().out
    assert out.index("official GlaS figures") < out.index("DIAGNOSTIC, not the official figures")
    default = get_args_parser().parse_args(["evaluate", "--model", "m", "--out", "o"]).split
    assert eval_splits(GlasDataset(root), default) == ["val"]  # GlaS: val; other sets: all
