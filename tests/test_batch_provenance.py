"""Outputs that know their input (issue #23 items 3 and 4): the record beside each output set, "done" only for the
same input and model, clashing output names refused before any work, one batch per output folder, and a
``summary.csv`` that keeps the rows of earlier batches."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from glandseg_core.batch import predict_files, run_batch
from glandseg_core.batch.lock import folder_lock
from glandseg_core.cli import main
from glandseg_core.errors import FolderBusy, ImageError
from tests.helpers import make_glands
from tests.test_batch_files import Threshold, summary


def image(path: Path, seed: int, n: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_glands(48, 64, n=n, seed=seed)[0]).save(path)
    return path


@dataclass
class WithTTA(Threshold):
    tta: bool = True


def test_each_output_set_records_its_input_and_model(tmp_path: Path) -> None:
    src = image(tmp_path / "a" / "case.png", 0)
    (r,) = run_batch(Threshold(), [src], tmp_path / "out", show_bar=False).results
    rec = json.loads((tmp_path / "out" / "case.input.json").read_text())
    assert r.status == "ok" and rec["input"]["path"] == str(src.resolve())
    assert len(rec["input"]["sha256"]) == 64 and rec["input"]["size"] == src.stat().st_size
    assert rec["config"]["kind"] == "unet" and rec["config"]["tta"] is False
    assert "case_overlay.png" in rec["outputs"]


def test_a_different_input_of_the_same_name_is_refused_not_skipped(tmp_path: Path) -> None:
    """The reproduction: ``predict --out o scans/case7.tif`` then ``predict --out o scans2/`` holding another
    case7.png: case7 was 'skipped, done before' with the tif's result and never segmented."""
    out = tmp_path / "o"
    tif = image(tmp_path / "scans" / "case7.tif", 0, n=2)
    png = image(tmp_path / "scans2" / "case7.png", 1, n=4)
    assert run_batch(Threshold(), [tif], out, show_bar=False).results[0].status == "ok"
    before = (out / "case7.png").read_bytes()
    seg = Threshold()
    (r,) = run_batch(seg, [tmp_path / "scans2"], out, show_bar=False).results
    assert r.status == "error" and seg.calls == 0 and "\n" not in r.error  # type: ignore[operator]
    assert str(tif.resolve()) in r.error and "--overwrite" in r.error  # type: ignore[operator]
    assert (out / "case7.png").read_bytes() == before  # nothing saved was replaced
    (r,) = run_batch(seg, [png], out, overwrite=True, show_bar=False).results
    assert r.status == "ok" and seg.calls == 1
    rec = json.loads((out / "case7.input.json").read_text())
    assert rec["input"]["path"] == str(png.resolve())


def test_done_means_the_same_input_and_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = image(tmp_path / "a" / "x.png", 0)
    run_batch(Threshold(), [src], out, show_bar=False)
    seg = Threshold()
    assert run_batch(seg, [src], out, show_bar=False).results[0].skipped and seg.calls == 0
    copy = tmp_path / "b" / "x.png"
    copy.parent.mkdir()
    shutil.copyfile(src, copy)  # the same pixels at another path: the same input
    assert run_batch(seg, [copy], out, show_bar=False).results[0].skipped
    (r,) = run_batch(WithTTA(), [src], out, show_bar=False).results  # another configuration
    assert r.status == "error" and "TTA" in r.error and "--overwrite" in r.error  # type: ignore[operator]
    (r,) = run_batch(Threshold(), [src], out, mpp=0.5, show_bar=False).results
    assert r.status == "error" and "--mpp 0.5" in r.error  # type: ignore[operator]
    image(src, 5)  # the input itself changed
    (r,) = run_batch(seg, [src], out, show_bar=False).results
    assert r.status == "error" and seg.calls == 0


def test_outputs_without_a_record_are_never_replaced_silently(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(Threshold(), [image(tmp_path / "a" / "x.png", 0)], out, show_bar=False)
    (out / "x.input.json").unlink()  # as an older glandseg left them
    (r,) = run_batch(Threshold(), [tmp_path / "a" / "x.png"], out, show_bar=False).results
    assert r.status == "error" and "has no record of its input" in r.error  # type: ignore[operator]
    assert run_batch(
        Threshold(), [tmp_path / "a" / "x.png"], out, overwrite=True, show_bar=False
    ).counts["ok"]


def test_inputs_whose_outputs_share_a_name_are_refused_before_any_work(tmp_path: Path) -> None:
    """The reproduction: ``a/x.png`` and ``b/x_overlay.png`` together; x's overlay was replaced by the other
    input's label map and both reported ok."""
    x = image(tmp_path / "a" / "x.png", 0)
    y = image(tmp_path / "b" / "x_overlay.png", 1)
    seg = Threshold()
    for call in (
        lambda: run_batch(seg, [x, y], tmp_path / "out", show_bar=False),
        lambda: predict_files(seg, [x, y], tmp_path / "out2"),
    ):
        with pytest.raises(ImageError) as info:
            call()
        msg = str(info.value)
        assert f"{x} and {y} would both write" in msg and "x_overlay.png" in msg and "\n" not in msg
    assert seg.calls == 0 and not list((tmp_path / "out").iterdir())
    out = tmp_path / "o3"  # in two batches: the second is refused, naming the owner of the file
    run_batch(Threshold(), [x], out, show_bar=False)
    (r,) = run_batch(Threshold(), [y], out, show_bar=False).results
    assert r.status == "error" and f"is an output of {x.resolve()}" in r.error  # type: ignore[operator]


def test_a_second_batch_into_the_same_folder_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], untrained_unet_run: Path
) -> None:
    """The reproduction: two ``predict --out out`` at once clobbered each other and summary.csv lost rows."""
    from glandseg_core.checkpoints import export_model

    model = export_model(untrained_unet_run, tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    src = image(tmp_path / "a" / "case.png", 0)
    with folder_lock(out):  # batch A holds the folder
        with pytest.raises(FolderBusy, match="another glandseg predict is writing"):
            run_batch(Threshold(), [src], out, show_bar=False)
        rc = main(["predict", "--no-bar", "--model", str(model), "--out", str(out), str(src)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {out}: another glandseg predict"), (
        err
    )
    assert list(out.iterdir()) == []
    assert main(["predict", "--no-bar", "--model", str(model), "--out", str(out), str(src)]) == 0


def test_summary_keeps_the_rows_of_earlier_batches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = image(tmp_path / "a" / "case.png", 0)
    b = image(tmp_path / "b" / "case.png", 1, n=5)
    c = image(tmp_path / "b" / "other.png", 2)
    run_batch(Threshold(), [a], out, show_bar=False)
    outcome = run_batch(Threshold(), [b, c], out, show_bar=False)
    assert [r.status for r in outcome.results] == ["error", "ok"]  # b's case refused: out/case.* are a's
    assert outcome.counts == {"ok": 1, "skipped": 0, "error": 1}  # this batch's inputs only
    rows = {(r["image"], r["status"]) for r in summary(out / "summary.csv")}
    assert rows == {(str(a), "ok"), (str(b), "error"), (str(c), "ok")}
    run_batch(Threshold(), [b], out, overwrite=True, show_bar=False)  # b replaces a's outputs
    rows = {(r["image"], r["status"]) for r in summary(out / "summary.csv")}
    assert rows == {(str(b), "ok"), (str(c), "ok")}


def test_an_unreadable_summary_is_kept_aside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_bytes(b"\xff\xfe not a csv \x00")
    run_batch(Threshold(), [image(tmp_path / "a" / "x.png", 0)], out, show_bar=False)
    assert (out / "summary-1.csv").read_bytes() == b"\xff\xfe not a csv \x00"
    assert [r["status"] for r in summary(out / "summary.csv")] == ["ok"]
