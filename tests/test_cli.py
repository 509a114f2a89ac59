"""End-to-end tests of ``python -m glandseg_core train|predict|evaluate`` in subprocesses.

One tiny U-Net is trained once for the module (about 10 s, in a fresh interpreter) and exported; the other
commands each run in a process of their own forked from a server that has imported glandseg_core once
(tests/cliproc.py: a fresh interpreter costs 5-10 s of imports each); the error cases run in parallel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from glandseg_core.checkpoints import export_model
from glandseg_core.imaging.io import read_label_map, write_label_png
from glandseg_core.outputs.export import GLAND_COLUMNS
from glandseg_core.train.locks import training_lock
from tests import cliproc
from tests.helpers import REPO, make_glands, write_fake_glas

pytestmark = pytest.mark.usefixtures("one_thread")

PER_IMAGE_FIRST = [
    "image", "split", "grade", "n_gt", "n_pred", "tp", "fp", "fn", "f1", "object_dice", "object_hausdorff",
    "pixel_iou", "count_score",
]  # fmt: skip
SUMMARY_KEYS = {
    "pooled_f1", "pooled_object_dice", "pooled_object_hausdorff", "mean_f1", "mean_object_dice",
    "mean_object_hausdorff", "tp", "fp", "fn", "n_images",
}  # fmt: skip
TINY = [
    "unet_base=4", "unet_depth=2", "unet_scale=1", "train_crop_size=64", "train_max_images=2",
    "train_steps_per_epoch=2", "train_batch_size=2", "train_warmup_steps=0",
]  # fmt: skip


def cli_env(lock_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GLANDSEG_DATA"}
    env.update(
        GLANDSEG_LOCK_DIR=str(lock_dir),
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def cli(*args: object, lock_dir: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``python -m glandseg_core *args`` in a process of its own, forked from a warm server (tests/cliproc.py)."""
    return cliproc.run(args, cli_env(lock_dir), timeout=timeout)


def fresh_cli(*args: object, lock_dir: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``python -m glandseg_core *args`` in a fresh interpreter: the entry point itself, imports and all."""
    cmd = [sys.executable, "-m", "glandseg_core", *map(str, args)]
    return subprocess.run(
        cmd,
        check=False,
        env=cli_env(lock_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def predict_errors(stderr: str) -> list[str]:
    """``predict``'s stderr lines but its one ``engine: ...`` line (said once per run, whichever engine)."""
    got = lines(stderr)
    assert sum(ln.startswith("engine: ") for ln in got) == 1, stderr
    return [ln for ln in got if not ln.startswith("engine: ")]


@dataclass
class Trained:
    root: Path
    glas: Path
    run: Path
    model: Path
    lock_dir: Path
    train: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("cli")
    glas = write_fake_glas(root / "glas")
    lock_dir = root / "locks"
    run = root / "runs" / "tiny"
    proc = fresh_cli(
        "train",
        "--data",
        glas,
        "--out",
        run,
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-bar",
        "--set",
        *TINY,
        lock_dir=lock_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = export_model(run, root / "trained_models" / "tiny")
    return Trained(root, glas, run, model, lock_dir, proc)


@pytest.mark.slow
def test_train(trained: Trained) -> None:
    assert "done:" in trained.train.stdout
    cfg = json.loads((trained.run / "config.json").read_text())
    assert (
        cfg["unet_base"] == 4
        and cfg["unet_depth"] == 2
        and cfg["train_epochs"] == 1
        and cfg["unet_scale"] == 1.0
    )
    assert cfg["name"] == "glandseg-unet"  # the default preset
    assert {"log.jsonl", "last.pt", "best.pt", "postprocess.json", "progress.json"} <= {
        p.name for p in trained.run.iterdir()
    }
    assert "Traceback" not in trained.train.stderr


@pytest.mark.slow
def test_predict(trained: Trained, tmp_path: Path) -> None:
    odd, _ = make_glands(67, 131, n=3, seed=9)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    (tmp_path / "bad.png").write_text("this is a text file, not a PNG\n")
    out = tmp_path / "out"
    images = [trained.glas / "testA_1.bmp", tmp_path / "bad.png", tmp_path / "odd.png"]
    proc = cli("predict", "--model", trained.model, "--out", out, *images, lock_dir=trained.lock_dir)

    assert proc.returncode != 0
    err = predict_errors(proc.stderr)
    assert len(err) == 1 and "bad.png" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines(proc.stdout)) == 3  # two images, then the batch line
    for stem, (h, w) in (("testA_1", (64, 96)), ("odd", (67, 131))):
        with Image.open(out / f"{stem}.png") as im:
            assert im.mode.startswith("I;16") and im.size == (w, h)
        labels = read_label_map(out / f"{stem}.png")
        assert labels.shape == (h, w) and labels.dtype == np.int32
        with Image.open(out / f"{stem}_overlay.png") as im:
            assert im.mode == "RGB" and im.size == (w, h)
        table = pd.read_csv(out / f"{stem}_glands.csv")
        assert list(table.columns) == GLAND_COLUMNS
        assert sorted(table["id"]) == sorted(int(i) for i in np.unique(labels) if i)
        geo = json.loads((out / f"{stem}.geojson").read_text())
        assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(table)
    assert not list(out.glob("bad*"))


@pytest.mark.slow
def test_predict_inputs_sharing_a_name_get_separate_outputs(trained: Trained, tmp_path: Path) -> None:
    """``x/a.png`` and ``y/a.png`` (and ``a.bmp``) are three images: none overwrites another's outputs."""
    images = []
    for i, folder in enumerate(("x", "y", "z")):
        img, _ = make_glands(40 + 8 * i, 56, n=2, seed=i)
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / ("a.bmp" if folder == "z" else "a.png")
        Image.fromarray(img).save(path)
        images.append(path)
    out = tmp_path / "out"
    proc = cli("predict", "--model", trained.model, "--out", out, *images, lock_dir=trained.lock_dir)

    assert proc.returncode == 0, proc.stderr
    for name, h in (("a", 40), ("a-2", 48), ("a-3", 56)):
        assert read_label_map(out / f"{name}.png").shape == (h, 56)
        assert (out / f"{name}_glands.csv").is_file() and (out / f"{name}.geojson").is_file()


@pytest.mark.slow
def test_train_init_starts_from_given_weights(trained: Trained, tmp_path: Path) -> None:
    """``train_init`` loads the weights before the first step: with a zero learning rate they come out unchanged."""
    run = tmp_path / "ft"
    init = trained.run / "best.pt"
    proc = cli(
        "train", "--data", trained.glas, "--out", run, "--epochs", "1", "--device", "cpu", "--no-bar",
        "--set", *TINY, f"train_init={init}", "train_lr=0",
        lock_dir=tmp_path / "locks",
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr[-3000:]
    before = torch.load(init, weights_only=True)["model"]
    after = torch.load(run / "last.pt", weights_only=True)["model"]
    weights = [k for k in before if "running_" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
    assert json.loads((run / "config.json").read_text())["train_init"] == str(init)


def check_outputs(out: Path, splits: list[str]) -> tuple[pd.DataFrame, dict]:
    table = pd.read_csv(out / "per_image.csv")
    assert list(table.columns[: len(PER_IMAGE_FIRST)]) == PER_IMAGE_FIRST
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == set(splits) | ({"all"} if len(splits) > 1 else set())
    for s in summary.values():
        assert set(s) >= SUMMARY_KEYS
    return table, summary


@pytest.mark.slow
def test_evaluate_model(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    proc = cli(
        "evaluate",
        "--model",
        trained.model,
        "--data",
        trained.glas,
        "--split",
        "testA",
        "testB",
        "--out",
        out,
        "--save-predictions",
        lock_dir=trained.lock_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table, summary = check_outputs(out, ["testA", "testB"])
    assert list(table["image"]) == ["testA_1", "testB_1"] and list(table["split"]) == ["testA", "testB"]
    assert summary["all"]["n_images"] == 2
    for name in ("testA_1", "testB_1"):
        assert read_label_map(out / "predictions" / f"{name}_labels.png").shape == (64, 96)


@pytest.mark.slow
def test_evaluate_ground_truth_as_predictions(trained: Trained, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    preds.mkdir()
    for name in ("testA_1", "testB_1"):
        write_label_png(preds / f"{name}.png", read_label_map(trained.glas / f"{name}_anno.bmp"))
    out = tmp_path / "eval"
    proc = cli(
        "evaluate",
        "--predictions",
        preds,
        "--data",
        trained.glas,
        "--split",
        "testA",
        "testB",
        "--out",
        out,
        lock_dir=trained.lock_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table, summary = check_outputs(out, ["testA", "testB"])
    assert (
        (table["f1"] == 1).all()
        and (table["object_dice"] == 1).all()
        and (table["object_hausdorff"] == 0).all()
    )
    assert (table["fp"] == 0).all() and (table["fn"] == 0).all() and (table["tp"] == table["n_gt"]).all()
    for s in summary.values():
        assert s["pooled_f1"] == 1 and s["pooled_object_dice"] == 1 and s["pooled_object_hausdorff"] == 0
    assert "1.000" in proc.stdout  # the printed table


@pytest.mark.slow
def test_evaluate_needs_no_train_files(tmp_path: Path) -> None:
    glas = write_fake_glas(tmp_path / "glas", ["testA_1", "testA_2"])
    preds = tmp_path / "preds"
    preds.mkdir()
    for name in ("testA_1", "testA_2"):
        write_label_png(preds / f"{name}.png", np.zeros((64, 96), np.int32))
    proc = cli(
        "evaluate",
        "--predictions",
        preds,
        "--data",
        glas,
        "--split",
        "testA",
        "--out",
        tmp_path / "e",
        lock_dir=tmp_path / "locks",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table, summary = check_outputs(tmp_path / "e", ["testA"])
    assert (table["f1"] == 0).all() and summary["testA"]["tp"] == 0


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {os.environ['GLANDSEG_TEST_MARKER']}",))


@pytest.mark.slow
def test_errors_are_one_line_with_exit_code_2(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The errors of the brief in real processes (run in parallel): one line on stderr, exit code 2."""
    corrupt, evil = tmp_path / "corrupt", tmp_path / "evil"
    for d in (corrupt, evil):
        d.mkdir()
        for f in ("config.json", "postprocess.json"):
            (d / f).write_bytes((trained.model / f).read_bytes())
    (corrupt / "weights.pt").write_bytes((trained.model / "weights.pt").read_bytes()[:300])  # truncated
    marker = tmp_path / "pwned"
    monkeypatch.setenv("GLANDSEG_TEST_MARKER", str(marker))
    torch.save({"model": {}, "x": Evil()}, evil / "weights.pt")  # unpickling would run `touch marker`
    image = trained.glas / "testA_1.bmp"
    cases = {
        "missing data folder": (
            [
                "evaluate",
                "--model",
                trained.model,
                "--data",
                tmp_path / "no_glas",
                "--split",
                "testA",
                "--out",
                tmp_path / "e1",
            ],
            "no_glas",
        ),
        "corrupt checkpoint": (
            ["predict", "--model", corrupt, "--out", tmp_path / "p1", image],
            "weights.pt",
        ),
        "malicious pickle": (
            ["predict", "--model", evil, "--out", tmp_path / "p2", image],
            "weights.pt",
        ),
        "missing model folder": (
            ["predict", "--model", tmp_path / "nope", "--out", tmp_path / "p3", image],
            "nope",
        ),
    }
    procs = {name: cliproc.Proc(args, cli_env(tmp_path / "locks")) for name, (args, _) in cases.items()}
    failures = []
    for name, p in procs.items():
        _out, err = p.communicate(timeout=900)
        err_lines = lines(err)
        if not (
            p.returncode == 2
            and len(err_lines) == 1
            and err_lines[0].startswith("error:")
            and cases[name][1] in err
        ):
            failures.append(f"{name}: rc={p.returncode}, stderr={err[-1500:]!r}")
    assert not failures, "\n".join(failures)
    assert not marker.exists()
    for d in ("p1", "p2", "p3"):
        assert not (tmp_path / d).exists() or not any((tmp_path / d).iterdir())


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing data folder (train)", "no_glas"),
        ("missing model folder (evaluate)", "nope"),
        ("missing predictions folder", "nopreds"),
        ("prediction missing for an image", "testB_1"),
        ("unknown --set key", "unet_bsae"),
        ("--set without =", "KEY=VALUE"),
        ("--epochs 0", "train_epochs"),
        ("run folder taken", "--resume"),
        ("resume without a run", "config.json"),
        ("resume with --set", "--resume continues"),
        ("train_init missing", "checkpoint not found"),
        ("train_init of another shape", "do not fit"),
        ("output folder is a file", "predict_here"),
        ("training lock held", "another training"),
        ("GLANDSEG_DATA unset", "GLANDSEG_DATA"),
    ],
)
def test_more_errors_in_process(
    trained: Trained,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    needle: str,
) -> None:
    """The same contract through ``cli.main`` (no new process: these need no model loading)."""
    from glandseg_core.cli import main

    monkeypatch.setenv("GLANDSEG_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("GLANDSEG_DATA", raising=False)
    preds = tmp_path / "preds"
    preds.mkdir()
    write_label_png(preds / "testA_1.png", np.zeros((64, 96), np.int32))
    glas, tiny = str(trained.glas), ["--no-bar", "--set", *TINY]
    argv = {
        "missing data folder (train)": [
            "train",
            "--data",
            str(tmp_path / "no_glas"),
            "--out",
            str(tmp_path / "r"),
            *tiny,
        ],
        "missing model folder (evaluate)": [
            "evaluate",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            glas,
            "--out",
            str(tmp_path / "e"),
        ],
        "missing predictions folder": [
            "evaluate",
            "--predictions",
            str(tmp_path / "nopreds"),
            "--data",
            glas,
            "--out",
            str(tmp_path / "e"),
        ],
        "prediction missing for an image": [
            "evaluate",
            "--predictions",
            str(preds),
            "--data",
            glas,
            "--split",
            "testA",
            "testB",
            "--out",
            str(tmp_path / "e"),
        ],
        "unknown --set key": [
            "train",
            "--data",
            glas,
            "--out",
            str(tmp_path / "r"),
            "--set",
            "unet_bsae=4",
        ],
        "--set without =": ["train", "--data", glas, "--out", str(tmp_path / "r"), "--set", "unet_base"],
        "--epochs 0": ["train", "--data", glas, "--out", str(tmp_path / "r"), "--epochs", "0", *tiny],
        "run folder taken": ["train", "--data", glas, "--out", str(trained.run), *tiny],
        "resume without a run": ["train", "--resume", "--out", str(tmp_path / "r")],
        "resume with --set": ["train", "--resume", "--out", str(trained.run), "--set", "train_lr=1"],
        "train_init missing": [
            "train",
            "--data",
            glas,
            "--out",
            str(tmp_path / "r"),
            *tiny,
            f"train_init={tmp_path / 'nope.pt'}",
        ],
        "train_init of another shape": [
            "train",
            "--data",
            glas,
            "--out",
            str(tmp_path / "r"),
            *tiny,
            "unet_base=6",
            f"train_init={trained.run / 'best.pt'}",
        ],
        "output folder is a file": [
            "predict",
            "--model",
            str(trained.model),
            "--out",
            str(tmp_path / "predict_here" / "sub"),
            str(trained.glas / "testA_1.bmp"),
        ],
        "training lock held": ["train", "--data", glas, "--out", str(tmp_path / "r"), *tiny],
        "GLANDSEG_DATA unset": [
            "evaluate",
            "--predictions",
            str(preds),
            "--split",
            "testA",
            "--out",
            str(tmp_path / "e"),
        ],
    }[case]
    (tmp_path / "predict_here").write_text("a file where a folder is expected\n")
    if case == "training lock held":
        with training_lock(tmp_path / "someone_else"):
            rc = main(argv)
    else:
        rc = main(argv)
    err = lines(capsys.readouterr().err)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "r" / "last.pt").exists()


# ---------------------------------------------------------------------------- one command line, every verb


@pytest.mark.slow
def test_export_card_and_tta_are_verbs_of_the_one_command(trained: Trained, tmp_path: Path) -> None:
    """``export``, ``card`` and ``tta`` replace inline Python and the ``glandseg_core.tta``/``.modelcard`` mains."""
    model = tmp_path / "models" / "mine"
    proc = cli("export", trained.run, model, lock_dir=trained.lock_dir)
    assert proc.returncode == 0, proc.stderr
    assert {"weights.pt", "config.json", "postprocess.json"} <= {p.name for p in model.iterdir()}
    again = cli("export", trained.run, model, lock_dir=trained.lock_dir)
    assert again.returncode == 2 and "already holds a model" in again.stderr
    assert (
        cli("export", trained.run, model, "--overwrite", "--fp16", lock_dir=trained.lock_dir).returncode
        == 0
    )
    ckpt = torch.load(model / "weights.pt", map_location="cpu", weights_only=True)
    assert any(v.dtype == torch.float16 for v in ckpt["model"].values())

    proc = cli(
        "card", model, "--run", trained.run, "--command", "glandseg train ...", lock_dir=trained.lock_dir
    )
    assert proc.returncode == 0, proc.stderr
    card = (model / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: mine (U-Net)") and "`glandseg train ...`" in card

    out = tmp_path / "tta"
    proc = cli(
        "tta", "--model", model, "--data", trained.glas, "--split", "testA", "--out", out,
        lock_dir=trained.lock_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = pd.read_csv(out / "tta_report.csv")
    assert list(report["split"]) == ["testA"] and {"f1", "f1_tta", "d_f1"} <= set(report.columns)
    assert (out / "plain" / "summary.json").is_file() and (out / "tta" / "summary.json").is_file()


@pytest.mark.slow
def test_predict_never_writes_over_its_input(trained: Trained, tmp_path: Path) -> None:
    """Issue #15.2: ``predict --out D D/testA_1.png`` once turned the input into a 16-bit label map."""
    folder = tmp_path / "D"
    folder.mkdir()
    img, _ = make_glands(64, 96, n=3, seed=4)
    Image.fromarray(img).save(folder / "testA_1.png")
    (tmp_path / "src").mkdir()
    Image.fromarray(img).save(tmp_path / "src" / "other.png")
    before = (folder / "testA_1.png").read_bytes()
    proc = cli("predict", "--model", trained.model, "--out", folder, folder / "testA_1.png",
               tmp_path / "src" / "other.png", lock_dir=trained.lock_dir)  # fmt: skip
    assert proc.returncode == 1
    assert (folder / "testA_1.png").read_bytes() == before
    err = predict_errors(proc.stderr)
    assert len(err) == 1 and "testA_1.png" in err[0] and "input" in err[0], proc.stderr
    assert (folder / "other_glands.csv").is_file()  # the batch went on to the next input
    assert not list(folder.glob("testA_1_*"))  # nothing of the refused input was written


@pytest.mark.slow
def test_predict_refuses_a_fifo_at_once_and_goes_on(trained: Trained, tmp_path: Path) -> None:
    """Issue #15.3: a FIFO among the inputs used to block in open() forever."""
    fifo = tmp_path / "y.png"
    os.mkfifo(fifo)
    img, _ = make_glands(64, 96, n=3, seed=5)
    Image.fromarray(img).save(tmp_path / "good.png")
    out = tmp_path / "out"
    proc = cli("predict", "--model", trained.model, "--out", out, fifo, tmp_path / "good.png",
               lock_dir=trained.lock_dir, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    err = predict_errors(proc.stderr)
    assert len(err) == 1 and "y.png" in err[0] and "pipe" in err[0], proc.stderr
    assert (out / "good.png").is_file()


@pytest.mark.slow
def test_evaluate_refuses_two_candidate_predictions(trained: Trained, tmp_path: Path) -> None:
    """Issue #15.8: with testB_1.png and testB_1.tif, whichever the folder listed last used to win silently."""
    preds = tmp_path / "preds"
    preds.mkdir()
    for name in ("testA_1", "testB_1"):
        write_label_png(preds / f"{name}.png", read_label_map(trained.glas / f"{name}_anno.bmp"))
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(preds / "testB_1.tif")
    proc = cli("evaluate", "--predictions", preds, "--data", trained.glas, "--split", "testA", "testB",
               "--out", tmp_path / "eval", lock_dir=trained.lock_dir)  # fmt: skip
    assert proc.returncode == 2
    err = lines(proc.stderr)
    assert len(err) == 1 and "testB_1.png" in err[0] and "testB_1.tif" in err[0], proc.stderr
    assert not (tmp_path / "eval" / "per_image.csv").exists()


@pytest.mark.slow
def test_evaluate_refuses_a_fifo_prediction_without_hanging(trained: Trained, tmp_path: Path) -> None:
    """Issue #15.3: a FIFO named like a prediction used to block ``evaluate --predictions`` forever."""
    preds = tmp_path / "preds"
    preds.mkdir()
    write_label_png(preds / "testA_1.png", read_label_map(trained.glas / "testA_1_anno.bmp"))
    os.mkfifo(preds / "testB_1.png")
    proc = cli("evaluate", "--predictions", preds, "--data", trained.glas, "--split", "testA", "testB",
               "--out", tmp_path / "eval", lock_dir=trained.lock_dir, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    err = lines(proc.stderr)
    assert len(err) == 1 and "testB_1.png" in err[0], proc.stderr


# ------------------------------------------------------------- issue #20: --data in any layout, --init


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example sets (plain, side by side, QuPath, CRAG) from synthetic 64×96 glands; one image at 2x."""
    from scripts.example_datasets import TRAIN_NAMES, write_sets

    pairs = [(n, *make_glands(seed=i)) for i, n in enumerate(TRAIN_NAMES)]
    info = {n: {"group": f"p{i // 2}"} for i, n in enumerate(TRAIN_NAMES)}
    return write_sets(tmp_path_factory.mktemp("layouts"), pairs, info)


def cli_all(
    runs: dict[str, list[object]], lock_dir: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several commands at once (each in a process of its own), each with its own lock folder under ``lock_dir``."""
    procs = {k: cliproc.Proc(a, cli_env(lock_dir / k)) for k, a in runs.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        out[k] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.mark.slow
def test_evaluate_data_in_every_layout(
    trained: Trained, layouts: dict[str, Path], tmp_path: Path
) -> None:
    """#20 items 2 and 6: every layout is scored with the official metrics (all its images by default, or a
    split of its own: tests/test_datasets_layouts.py); saved label maps are numbered 1..N; the 2x image is segmented at the model's scale."""
    runs: dict[str, list[object]] = {
        k: [
            "evaluate",
            "--model",
            trained.model,
            "--data",
            d,
            "--out",
            tmp_path / k,
            "--save-predictions",
        ]
        for k, d in layouts.items()
    }
    history = trained.model / "test_history.jsonl"  # other tests score GlaS Test A with this model
    before = history.read_text() if history.exists() else ""
    for k, proc in cli_all(runs, trained.lock_dir).items():
        assert proc.returncode == 0, (k, proc.stderr[-2000:])
        assert "official GlaS figures:" in proc.stdout and "Traceback" not in proc.stderr
    for k in layouts:
        table, summary = check_outputs(
            tmp_path / k, ["train", "val", "test"] if k == "crag" else ["train", "val"]
        )
        assert len(table) == 6 and summary["all"]["n_images"] == 6
        for name in table["image"]:
            pred = read_label_map(tmp_path / k / "predictions" / f"{name}_labels.png")
            ids = np.unique(pred[pred > 0])
            assert np.array_equal(ids, np.arange(1, len(ids) + 1))  # 1..N
            expect = (128, 192) if name == "train_3" and k in ("plain", "qupath") else (64, 96)
            assert pred.shape == expect
    after = history.read_text() if history.exists() else ""
    assert after == before  # a user's test split is not GlaS's Test A / B: nothing recorded


@pytest.mark.slow
def test_train_data_in_any_layout_with_init_and_mixing(
    trained: Trained, layouts: dict[str, Path], tmp_path: Path
) -> None:
    """#20 item 3: train on a QuPath set from scratch, fine-tune the model folder on CRAG (its own config, its
    weights as train_init), and on a plain folder with GlaS train added."""
    common = ["--epochs", "1", "--device", "cpu", "--no-bar"]
    runs: dict[str, list[object]] = {
        "scratch": ["train", "--data", layouts["qupath"], "--out", tmp_path / "scratch", *common, "--set", *TINY],
        "init": ["train", "--data", layouts["crag"], "--init", trained.model, "--out", tmp_path / "init",
                 *common, "--set", "train_lr=0"],
        "mix": ["train", "--data", layouts["plain"], "--data", trained.glas, "--init", trained.run,
                "--preset", "glandseg-unet", "--out", tmp_path / "mix", *common, "--set", *TINY],
    }  # fmt: skip
    for k, proc in cli_all(runs, tmp_path / "locks").items():
        assert proc.returncode == 0, (k, proc.stderr[-2000:])
        assert "done:" in proc.stdout
    cfg = json.loads((tmp_path / "init" / "config.json").read_text())
    own = json.loads((trained.model / "config.json").read_text())
    assert cfg["name"] == f"{own['name']}-finetuned" and cfg["train_init"] == str(
        trained.model / "weights.pt"
    )
    assert all(cfg[k] == own[k] for k in own if k.startswith("unet_"))
    before = torch.load(trained.model / "weights.pt", weights_only=True)["model"]
    after = torch.load(tmp_path / "init" / "last.pt", weights_only=True)["model"]
    weights = [k for k in before if "running_" not in k and "num_batches" not in k]
    assert all(torch.equal(before[k].float(), after[k]) for k in weights)  # lr 0: the init weights
    mix = json.loads((tmp_path / "mix" / "config.json").read_text())
    assert mix["train_init"] == str(trained.run / "best.pt") and mix["name"] == "glandseg-unet"


@pytest.mark.slow
def test_bad_data_lines_and_init_errors_in_process(
    trained: Trained,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad item is one warning line naming its file and the others are scored; --init errors are one line."""
    from glandseg_core.cli import main

    monkeypatch.setenv("GLANDSEG_LOCK_DIR", str(tmp_path / "locks"))
    data = tmp_path / "set"
    data.mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        image, labels = make_glands(seed=seed)
        Image.fromarray(image).save(data / f"{name}.png")
        write_label_png(data / f"{name}_labels.png", labels if name == "a" else labels[:32])
    preds = tmp_path / "preds"
    preds.mkdir()
    write_label_png(preds / "a.png", make_glands(seed=0)[1])
    assert (
        main(
            ["evaluate", "--predictions", str(preds), "--data", str(data), "--out", str(tmp_path / "e")]
        )
        == 0
    )
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{data / 'b_labels.png'}: annotation is 96×32 but the image is 96×64"]
    capsys.readouterr()
    assert pd.read_csv(tmp_path / "e" / "per_image.csv")["f1"].tolist() == [1.0]
    code = main(["evaluate", "--predictions", str(preds), "--data", str(data), "--split", "testA",
                 "--out", str(tmp_path / "e2")])  # fmt: skip
    assert code == 2 and "unknown split 'testA'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    for init, needle in (
        (tmp_path / "empty", "no weights.pt, best.pt"),
        (tmp_path / "x.pt", "no weights.pt"),
    ):
        code = main(["train", "--data", str(data), "--init", str(init), "--out", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and len(lines(err)) == 1 and needle in err, err
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "weights.pt").write_bytes((trained.model / "weights.pt").read_bytes())
    assert main(["train", "--data", str(data), "--init", str(lone), "--out", str(tmp_path / "r")]) == 2
    assert "no config.json beside the weights" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
