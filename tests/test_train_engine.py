"""Tests for glandseg_core.train.engine: a short run learns and writes its folder, exact resume, the lock, DDP.

Every test that trains sets GLANDSEG_LOCK_DIR to a temporary folder (the ``lock_dir`` fixture), so it never
meets the machine-wide lock of a real training.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from glandseg_core.checkpoints import read_checkpoint
from glandseg_core.config import PRESETS, replace_config
from glandseg_core.errors import DatasetError, TrainingStopped
from glandseg_core.progress import Step
from glandseg_core.train import fit
from glandseg_core.train.locks import lock_holder
from tests.helpers import REPO, tiny_unet_config, write_fake_glas

pytestmark = pytest.mark.usefixtures("one_thread")

RUN_FILES = {
    "config.json",
    "log.jsonl",
    "last.pt",
    "best.pt",
    "postprocess.json",
    "tuning.json",
    "progress.json",
}
LOG_KEYS = {"epoch", "train_loss", "lr", "val_f1", "val_object_dice", "val_object_hausdorff", "seconds"}


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln.strip()]


def test_short_run_lowers_the_loss_and_writes_the_run_folder(
    lock_dir: Path, fake_glas_dir: Path, tmp_path: Path
) -> None:
    cfg = tiny_unet_config(
        train_epochs=6,
        train_steps_per_epoch=3,
        train_crop_size=0,
        train_augment="none",
        train_val_every=3,
        train_seed=0,
    )
    events: list[dict[str, Any]] = []
    run_dir = tmp_path / "run"
    best = fit(cfg, fake_glas_dir, run_dir, progress=events.append, show_bar=False)

    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    assert not list(run_dir.glob("*.tmp"))
    log = read_log(run_dir)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(
        {"epoch", "train_loss", "lr", "seconds", "loss_gland", "loss_contour", "loss_dice"} <= set(r)
        for r in log
    )
    assert set(log[2]) >= LOG_KEYS and set(log[5]) >= LOG_KEYS and "val_f1" not in log[0]
    assert log[-1]["train_loss"] < 0.95 * log[0]["train_loss"], [r["train_loss"] for r in log]
    assert log[-1]["lr"] < log[0]["lr"]  # cosine schedule

    assert best["epoch"] in (3, 6) and {"val_f1", "val_object_dice", "val_object_hausdorff"} <= set(best)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["status"] == "finished" and progress["epoch"] == 6
    train = [e for e in events if e.phase == "train"]
    assert {e.detail["event"] for e in train} == {"step", "epoch"} and {e.unit for e in train} == {
        "steps"
    }
    assert [e.detail["epoch"] for e in train if e.detail["event"] == "epoch"] == [1, 2, 3, 4, 5, 6]
    assert {e.phase for e in events} == {
        "train",
        "validate",
        "tune",
    }  # one progress type for every phase
    assert all(0 < e.done <= e.total for e in events)

    last = read_checkpoint(run_dir / "last.pt")  # weights_only loading works on our own checkpoints
    assert last["epoch"] == 5 and last["config"]["train_epochs"] == 6
    assert {"model", "optimizer", "scheduler", "best", "rng_numpy", "rng_torch"} <= set(last)
    best_ckpt = read_checkpoint(run_dir / "best.pt")
    assert best_ckpt["epoch"] + 1 == best["epoch"]
    assert json.loads((run_dir / "config.json").read_text())["train_epochs"] == 6
    tuning = json.loads((run_dir / "tuning.json").read_text())
    assert tuning["best_epoch"] == best["epoch"] and "post" in tuning
    post = json.loads((run_dir / "postprocess.json").read_text())
    assert post == tuning["post"]
    assert lock_holder() is None  # the lock is released


def _stop_at_epoch_2(step: Step) -> None:
    """Progress callback: SIGTERM ourselves at the first step of epoch 2, as the dashboard's Stop button does."""
    if step.phase == "train" and step.detail.get("event") == "step" and step.detail.get("epoch") == 2:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_resume_is_exact(lock_dir: Path, fake_glas_dir: Path, tmp_path: Path) -> None:
    # Half scale: 64x96 images become 32x48, so the 64-pixel crops also exercise the padded resampling path.
    cfg = tiny_unet_config(
        train_epochs=2, train_steps_per_epoch=2, train_augment="strong", train_seed=3, unet_scale=0.5
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fit(cfg, fake_glas_dir, straight, show_bar=False)

    with pytest.raises(TrainingStopped):
        fit(cfg, fake_glas_dir, resumed, progress=_stop_at_epoch_2, show_bar=False)
    assert json.loads((resumed / "progress.json").read_text())["status"] == "stopped"
    assert read_checkpoint(resumed / "last.pt")["epoch"] == 0
    assert len(read_log(resumed)) == 1
    assert (
        signal.getsignal(signal.SIGTERM) is not None
    )  # the handler was restored (pytest is still alive)

    with pytest.raises(FileExistsError):  # starting again into the same folder needs resume
        fit(cfg, fake_glas_dir, resumed, show_bar=False)
    other = tiny_unet_config(train_epochs=5, train_lr=1.0)  # ignored: resume uses the run's config.json
    fit(other, fake_glas_dir, resumed, resume=True, show_bar=False)

    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["optimizer"]["state"]:
        for name, v in a["optimizer"]["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][k][name])), (
                k,
                name,
            )
    assert a["scheduler"] == b["scheduler"]

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in ("seconds", "val_seconds")} for r in rows]

    assert strip(read_log(straight)) == strip(read_log(resumed))
    assert json.loads((straight / "postprocess.json").read_text()) == json.loads(
        (resumed / "postprocess.json").read_text()
    )


def test_resume_without_a_checkpoint(lock_dir: Path, fake_glas_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="last.pt"):
        fit(tiny_unet_config(), fake_glas_dir, tmp_path / "empty", resume=True, show_bar=False)


def test_missing_data_fails_before_training(lock_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        fit(tiny_unet_config(), tmp_path / "no_glas", tmp_path / "run", show_bar=False)
    assert not (tmp_path / "run" / "last.pt").exists()
    assert lock_holder() is None


def test_a_refused_data_folder_leaves_no_run_folder(lock_dir: Path, tmp_path: Path) -> None:
    """Issue #23 item 9: a run folder holding only ``.train.lock`` was left after a refused data folder; the
    folders the run created go (parents too), a folder that was there stays as it was."""
    run = tmp_path / "runs" / "new"
    with pytest.raises(DatasetError, match="does not exist"):
        fit(tiny_unet_config(), tmp_path / "no_glas", run, show_bar=False)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    with pytest.raises(DatasetError, match="does not exist"):
        fit(tiny_unet_config(), tmp_path / "no_glas", tmp_path / "mine", show_bar=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [".train.lock", "notes.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError):
        fit(tiny_unet_config(), tmp_path / "no_glas", tmp_path / "empty", show_bar=False)
    assert (tmp_path / "empty").is_dir()
    assert lock_holder() is None


def few_proposals(build: Callable[[Any], torch.nn.Module]) -> Callable[[Any], torch.nn.Module]:
    """Wrap a model builder so that Mask R-CNN keeps 50 proposals at inference (torchvision's 1000 cost ~1 s/image)."""

    def wrapped(cfg: Any) -> torch.nn.Module:
        model = build(cfg)
        if hasattr(model, "rpn"):
            model.rpn._pre_nms_top_n["testing"] = 100
            model.rpn._post_nms_top_n["testing"] = 50
        return model

    return wrapped


@pytest.mark.slow
def test_maskrcnn_smoke_run(
    lock_dir: Path, shared_fake_glas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glandseg_core.checkpoints
    import glandseg_core.train.setup

    for module in (glandseg_core.train.setup, glandseg_core.checkpoints):  # training; tuning
        monkeypatch.setattr(module, "build_model", few_proposals(module.build_model))
    cfg = replace_config(
        PRESETS["glandseg-maskrcnn-cpu"],
        name="tiny-maskrcnn",
        maskrcnn_backbone="resnet18",
        maskrcnn_min_size=64,  # the fake images' own size: no upscaling
        maskrcnn_max_size=96,
        maskrcnn_anchor_sizes=(8, 16, 32, 64, 128),
        maskrcnn_rpn_post_nms_top_n_train=100,
        maskrcnn_box_batch_size_per_image=32,
        maskrcnn_detections_per_img=3,
        train_epochs=1,
        train_steps_per_epoch=2,
        train_batch_size=1,
        train_max_images=2,
        train_augment="flip",
        train_warmup_steps=0,
        train_amp=False,
    )
    run_dir = tmp_path / "mrcnn"
    fit(cfg, shared_fake_glas, run_dir, show_bar=False)
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    (rec,) = read_log(run_dir)
    assert {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    } <= set(rec)
    assert set(rec) >= LOG_KEYS
    assert set(json.loads((run_dir / "postprocess.json").read_text())) == {
        "score_thresh", "mask_thresh", "min_area", "min_visible"
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A 2-epoch tiny U-Net run under ``torchrun --nproc_per_node 2`` (gloo, CPU)."""
    root = tmp_path_factory.mktemp("ddp")
    glas = write_fake_glas(root / "glas")
    run_dir = root / "run"
    env = {
        **os.environ,
        "GLANDSEG_LOCK_DIR": str(root / "locks"),
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
    }
    sets = [
        "unet_base=4", "unet_depth=2", "unet_scale=1", "train_crop_size=64", "train_max_images=4",
        "train_steps_per_epoch=2", "train_batch_size=1", "train_warmup_steps=0", "train_amp=false",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "glandseg_core", "train", "--data", str(glas),
        "--out", str(run_dir), "--epochs", "2", "--device", "cpu", "--no-bar", "--set", *sets,
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    return proc, run_dir


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(ddp_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, run_dir = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done:" in proc.stdout
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    assert [r["epoch"] for r in read_log(run_dir)] == [1, 2]
    ckpt = read_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 1
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model is saved
    assert json.loads((run_dir / "progress.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_ddp_checkpoint_keeps_every_rank_rng(
    ddp_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Every rank's numpy RNG is checkpointed (regression: only rank 0's was, so on ``--resume`` rank 1
    restarted from its initial seed and replayed epoch 1's crops and augmentations)."""
    proc, run_dir = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_checkpoint(run_dir / "last.pt")["rng_numpy"]) == 2


@pytest.mark.slow
def test_workers_and_time_limit_shorten_the_schedule(
    lock_dir: Path, fake_glas_dir: Path, tmp_path: Path
) -> None:
    """A budget of a few seconds: after two epochs the run fits its schedule to it, ends it, tunes, records it."""
    cfg = tiny_unet_config(
        train_epochs=500, train_steps_per_epoch=2, train_val_every=1, train_warmup_steps=0
    )
    run_dir = tmp_path / "run"
    fit(cfg, fake_glas_dir, run_dir, show_bar=False, workers=2, time_limit=6.0)
    log = read_log(run_dir)
    fitted = json.loads((run_dir / "config.json").read_text())["train_epochs"]
    assert 3 <= len(log) <= fitted < 500
    assert len(log) == fitted or log[-1].get("stopped_at_time_limit")
    assert (run_dir / "tuning.json").is_file() and "val_f1" in log[-1]
    if len(log) == fitted:
        assert log[-1]["lr"] < 0.05 * cfg.train_lr  # the cosine schedule ran to its end


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_and_predict_on_cuda(lock_dir: Path, fake_glas_dir: Path, tmp_path: Path) -> None:
    from glandseg_core.segmenters import load_segmenter

    cfg = tiny_unet_config(train_epochs=1, train_amp=True)
    fit(cfg, fake_glas_dir, tmp_path / "run", device="cuda", show_bar=False)
    segmenter = load_segmenter(tmp_path / "run", device="cuda", tta=True)
    assert next(segmenter.model.parameters()).is_cuda
    image = np.full((67, 131, 3), 200, np.uint8)
    assert segmenter(image).shape == (67, 131)


def test_the_unet_is_fed_float_images_in_0_1() -> None:
    """The U-Net normalises its own input now (models/unet.py), so the train step passes the batch as is
    (regression guard: the step used to apply the ImageNet normalisation itself)."""
    from types import SimpleNamespace

    from glandseg_core.train import epoch

    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, 2, 8, 8)
    state = SimpleNamespace(cfg=tiny_unet_config(), net=Recorder())
    losses = epoch._losses(state, (x, y), torch.device("cpu"))  # type: ignore[arg-type]
    torch.testing.assert_close(seen[0], x)
    assert set(losses) == {"loss_gland", "loss_contour", "loss_dice"}
