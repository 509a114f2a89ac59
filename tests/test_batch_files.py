"""``glandseg predict`` on many files: inputs from files, folders and globs, skipping finished outputs, the summary
CSV, ``--mpp`` areas, Ctrl-C and SIGTERM mid-batch (glandseg_core.batch, glandseg_core.imaging.inputs).

Most tests use a threshold "segmenter" (no network: milliseconds per image); one runs the CLI with a tiny
untrained U-Net exported as a model folder.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from glandseg_core import batch, cli
from glandseg_core.batch import SUMMARY_COLUMNS, run_batch, write_together
from glandseg_core.config import RunConfig
from glandseg_core.imaging.inputs import find_inputs
from glandseg_core.imaging.io import read_label_map
from tests.helpers import make_glands

OUTPUTS = ("{}.png", "{}_overlay.png", "{}_glands.csv", "{}.geojson", "{}.ome.tif", "{}.input.json")


@dataclass
class Threshold:
    """A stand-in segmenter: purple connected regions are glands. ``hook(n)`` runs before the n-th image."""

    cfg: RunConfig = field(default_factory=RunConfig)
    kind: str = "unet"
    calls: int = 0
    hook: Callable[[int], None] | None = None
    shapes: list = field(default_factory=list)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.shapes.append(image.shape[:2])
        if self.hook is not None:
            self.hook(self.calls)
        labels, _ = ndimage.label(image[..., 1] < 110)
        return labels.astype(np.int32)


def write_images(folder: Path, n: int, ext: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img, _ = make_glands(48, 64, n=3, seed=i)
        paths.append(folder / f"img{i}{ext}")
        Image.fromarray(img).save(paths[-1])
    return paths


def summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [] or list(rows[0]) == list(SUMMARY_COLUMNS)
    return rows


def test_find_inputs_expands_files_folders_and_globs(tmp_path: Path) -> None:
    a = write_images(tmp_path / "a", 2)
    b = write_images(tmp_path / "b" / "deep", 1, ".bmp")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".hidden.png").write_bytes(a[0].read_bytes())
    out = tmp_path / "a" / "out"
    write_images(out, 1)  # a previous run's outputs are not inputs
    (tmp_path / "empty").mkdir()
    specs = [tmp_path / "a", str(tmp_path / "b" / "**" / "*.bmp"), a[0], tmp_path / "missing.png",
             tmp_path / "empty", str(tmp_path / "zz*.png")]  # fmt: skip
    inputs, problems = find_inputs(specs, out_dir=out)
    assert inputs == [*a, *b, tmp_path / "missing.png"]  # folder sorted, duplicate a[0] dropped
    assert [p for p, _ in problems] == [tmp_path / "empty", Path(str(tmp_path / "zz*.png"))]
    assert all("names no image or slide file" in m for _, m in problems)
    _, problems = find_inputs([out], out_dir=out)
    assert "is the output folder" in problems[0][1]


def test_batch_writes_outputs_and_one_summary(tmp_path: Path) -> None:
    good = write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.png").write_text("not a PNG")
    os.mkfifo(tmp_path / "pipe.png")
    out = tmp_path / "out"
    seen = []
    outcome = run_batch(Threshold(), [tmp_path / "in", tmp_path / "pipe.png"], out, report=seen.append)

    assert outcome.summary == out / "summary.csv" and not outcome.interrupted and outcome.total == 5
    assert [r.path.name for r in seen] == ["bad.png", "img0.png", "img1.png", "img2.png", "pipe.png"]
    rows = summary(out / "summary.csv")
    assert [r["status"] for r in rows] == ["error", "ok", "ok", "ok", "error"]
    assert "pipe" in rows[4]["message"] and "bad.png" in rows[0]["message"]
    for row, path in zip(rows[1:4], good, strict=True):
        labels = read_label_map(out / f"{path.stem}.png")
        assert labels.shape == (48, 64) and int(row["glands"]) == len(np.unique(labels)) - 1 > 0
        assert row["area_um2"] == row["mpp"] == "" and float(row["seconds"]) >= 0
        assert all((out / o.format(path.stem)).is_file() for o in OUTPUTS)
    assert dict(outcome.counts) == {"ok": 3, "skipped": 0, "error": 2}
    assert not list(out.glob("bad*")) and not list(out.glob(".*"))


def test_rerun_skips_finished_outputs_and_overwrite_redoes_them(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    first = summary(run_batch(Threshold(), [tmp_path / "in"], out).summary)
    (out / "img1.geojson").unlink()  # an unfinished image (as after a crash) is done again
    seg = Threshold()
    again = summary(run_batch(seg, [tmp_path / "in"], out).summary)
    assert [r["status"] for r in again] == ["skipped", "ok", "skipped"] and seg.calls == 1
    assert [r["glands"] for r in again] == [r["glands"] for r in first]  # read from the gland tables
    assert "--overwrite" in again[0]["message"]
    seg = Threshold()
    redo = run_batch(seg, [str(tmp_path / "in" / "*.png")], out, overwrite=True)
    assert seg.calls == 3 and [r.status for r in redo.results] == ["ok"] * 3
    assert [r.path for r in redo.results] == paths


def test_overwrite_never_replaces_an_input(tmp_path: Path) -> None:
    """Issue #15.2 with --overwrite and a folder: an input named like an output stays as it was."""
    folder = tmp_path / "D"
    (img,) = write_images(folder, 1)
    other = write_images(tmp_path / "src", 1, ".bmp")[0]
    before = img.read_bytes()
    outcome = run_batch(Threshold(), [img, other], folder, overwrite=True)
    assert img.read_bytes() == before
    assert [r.status for r in outcome.results] == ["error", "ok"]
    assert "is an input" in outcome.results[0].error and (folder / "img0-2.png").is_file()


def test_mpp_gives_gland_areas_in_square_micrometres(tmp_path: Path) -> None:
    write_images(tmp_path / "in", 1)
    seg = Threshold()
    outcome = run_batch(seg, [tmp_path / "in"], tmp_path / "out", mpp=0.62)  # the model's own scale
    (r,) = outcome.results
    labels = read_label_map(tmp_path / "out" / "img0.png")
    pixels = np.count_nonzero(labels)
    assert seg.shapes == [(48, 64)] and r.mpp == 0.62 and r.area_um2 == pytest.approx(pixels * 0.62**2)
    row = summary(outcome.summary)[0]
    assert float(row["area_um2"]) == pytest.approx(pixels * 0.62**2, abs=0.05) and row["mpp"] == "0.62"
    (again,) = run_batch(Threshold(), [tmp_path / "in"], tmp_path / "out").results  # skipped: area kept
    assert again.skipped and again.area_um2 == pytest.approx(r.area_um2, rel=1e-3)
    table = pd.read_csv(tmp_path / "out" / "img0_glands.csv")
    assert table["area_um2"].sum() == pytest.approx(pixels * 0.62**2, rel=1e-3)
    with tifffile.TiffFile(tmp_path / "out" / "img0.ome.tif") as tif:  # what napari and Fiji open
        assert tif.is_ome and 'PhysicalSizeX="0.62"' in tif.ome_metadata
        assert np.array_equal(tif.asarray(), labels)


def test_pixel_size_from_tiff_metadata_brings_the_image_to_the_models_scale(tmp_path: Path) -> None:
    """A 40x image (0.31 um/px, in its TIFF tags) is segmented at 0.62 um/px, results at the input's size."""
    (tmp_path / "in").mkdir()
    img, _ = make_glands(96, 128, n=3, seed=1)
    tifffile.imwrite(tmp_path / "in" / "x40.tif", img, resolution=(1e4 / 0.31, 1e4 / 0.31),
                     resolutionunit="CENTIMETER", photometric="rgb")  # fmt: skip
    Image.fromarray(img).save(tmp_path / "in" / "plain.png")
    seg = Threshold()
    outcome = run_batch(seg, [tmp_path / "in"], tmp_path / "out")
    assert [r.path.name for r in outcome.results] == ["plain.png", "x40.tif"]
    assert seg.shapes == [(96, 128), (48, 64)]  # the 40x image at half size, the PNG as it is
    plain, x40 = outcome.results
    assert plain.mpp is None and plain.area_um2 is None and x40.mpp == pytest.approx(0.31)
    labels = read_label_map(tmp_path / "out" / "x40.png")
    assert labels.shape == (96, 128) and x40.glands == len(np.unique(labels)) - 1 > 0
    assert x40.area_um2 == pytest.approx(np.count_nonzero(labels) * 0.31**2)
    geo = json.loads((tmp_path / "out" / "x40.geojson").read_text())
    areas = [f["properties"]["measurements"]["Area µm^2"] for f in geo["features"]]
    assert sum(areas) == pytest.approx(x40.area_um2)  # QuPath's measurement, at the input's pixel size
    seg = Threshold()
    run_batch(
        seg, [tmp_path / "in" / "x40.tif"], tmp_path / "out2", mpp=0.62
    )  # --mpp overrides the tags
    assert seg.shapes == [(96, 128)]


def _interrupt_at(n: int, how: Callable[[], None]) -> Callable[[int], None]:
    def hook(call: int) -> None:
        if call == n:
            how()

    return hook


def _ctrl_c() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "how", [_ctrl_c, lambda: os.kill(os.getpid(), signal.SIGTERM)], ids=["ctrl-c", "sigterm"]
)
def test_interrupt_keeps_whole_outputs_and_the_summary_of_what_was_done(
    tmp_path: Path, how: Callable[[], None]
) -> None:
    write_images(tmp_path / "in", 4)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    outcome = run_batch(Threshold(hook=_interrupt_at(3, how)), [tmp_path / "in"], out)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    assert outcome.interrupted and [r.status for r in outcome.results] == ["ok", "ok"]
    assert [r["image"] for r in summary(out / "summary.csv")] == [
        str(tmp_path / "in" / f"img{i}.png") for i in (0, 1)
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.csv", *(o.format(f"img{i}") for i in (0, 1) for o in OUTPUTS)]
    )  # img2 wholly absent, no temporary file left
    rerun = run_batch(Threshold(), [tmp_path / "in"], out)  # the same command finishes the batch
    assert [r.status for r in rerun.results] == ["skipped", "skipped", "ok", "ok"]


def test_write_together_finishes_its_renames_when_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {tmp_path / f"f{i}": b"new" for i in range(4)}
    real_replace = os.replace
    calls = []

    def replace(src: str, dst: Path) -> None:
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the first and the second rename

    monkeypatch.setattr(batch.writing.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_together(files)
    assert all(p.read_bytes() == b"new" for p in files) and len(calls) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0", "f1", "f2", "f3"]


def test_cli_predict_with_a_model_folder(
    untrained_unet_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    from glandseg_core.checkpoints import export_model

    model = export_model(untrained_unet_run, tmp_path / "model")
    write_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = ["predict", "--model", str(model), "--out", str(out), "--no-bar", "--mpp", "0.5"]
    assert cli.main([*args, str(tmp_path / "in"), str(tmp_path / "nope.png")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"error: {tmp_path / 'nope.png'}: file not found"]
    lines = captured.out.strip().splitlines()
    assert len(lines) == 3 and "um^2" in lines[0] and lines[0].startswith("img0.png: ")
    assert lines[2] == f"3 inputs: 2 ok, 0 skipped, 1 failed; summary: {out / 'summary.csv'}"
    assert cli.main([*args, str(tmp_path / "in")]) == 0
    assert "0 ok, 2 skipped, 0 failed" in capsys.readouterr().out


def test_slides_go_to_predict_slide_and_bad_slides_take_one_line(
    untrained_unet_run: Path, tmp_path: Path, one_thread: None
) -> None:
    """A folder with a slide, a plain image and a broken slide: the batch goes through all three."""
    from glandseg_core.segmenters import load_segmenter
    from tests.helpers_slides import Mosaic, write_slide

    folder = tmp_path / "in"
    write_images(folder, 1)
    tiles = [make_glands(96, 128, n=3, seed=s)[0] for s in range(4)]
    write_slide(folder / "s.svs", Mosaic(tiles, (2, 2), margin=64), mpp=0.62, levels=2)
    (folder / "broken.svs").write_bytes(b"II*\x00" + bytes(100))  # a TIFF header and nothing else
    segmenter = load_segmenter(untrained_unet_run, device="cpu")
    out = tmp_path / "out"
    outcome = run_batch(segmenter, [folder], out, show_bar=False)

    rows = {Path(r["image"]).name: r for r in summary(outcome.summary)}
    assert rows["broken.svs"]["status"] == "error" and "broken.svs" in rows["broken.svs"]["message"]
    assert "\n" not in rows["broken.svs"]["message"]
    assert rows["img0.png"]["status"] == rows["s.svs"]["status"] == "ok"
    assert rows["s.svs"]["mpp"] == "0.62" and rows["s.svs"]["glands"] != ""
    assert (
        (out / "s.geojson").is_file()
        and (out / "s_summary.csv").is_file()
        and not list(out.glob("broken*"))
    )
    again = run_batch(segmenter, [folder / "s.svs"], out, show_bar=False)
    assert [r.status for r in again.results] == ["skipped"] and again.results[0].glands == int(
        rows["s.svs"]["glands"]
    )


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "abc", "1e6"])
def test_cli_refuses_a_pixel_size_that_is_not_one(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--model", "m", "--mpp", value, "x.png"])
    assert info.value.code == 2 and "--mpp" in capsys.readouterr().err
