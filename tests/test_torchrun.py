"""``glandseg predict`` under ``torchrun``: inputs sharded by rank, per-rank summaries, rank 0's merged summary.

The real run starts two CPU processes with the venv's torchrun (gloo backend) on four small images with a tiny
untrained U-Net; the rest checks the pieces in-process.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from glandseg_core.distributed import World, gather_to_main, process_group, world_from_env
from glandseg_core.errors import ConfigError
from tests.helpers import REPO, make_glands

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_world_from_env() -> None:
    assert world_from_env({}) == World(0, 1, 0) and not World().distributed
    w = world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank, w.distributed, w.main) == (3, 4, 1, True, False)
    for env in (
        {"RANK": "x"},
        {"RANK": "2", "WORLD_SIZE": "2"},
        {"WORLD_SIZE": "0"},
        {"LOCAL_RANK": "-1"},
    ):
        with pytest.raises(ConfigError):
            world_from_env(env)


def test_shard_is_round_robin_and_covers_everything_once() -> None:
    items = list(range(11))
    shards = [World(r, 3).shard(items) for r in range(3)]
    assert shards[0] == [0, 3, 6, 9] and shards[1] == [1, 4, 7, 10] and shards[2] == [2, 5, 8]
    assert sorted(x for s in shards for x in s) == items
    assert World(1, 2, 1).device("cuda") == "cuda:1" and World().device("cuda") == "cuda"
    assert World(1, 2, 1).device("cpu") == "cpu" and World(1, 2, 1).device(None) is None


def test_one_process_needs_no_process_group() -> None:
    import torch.distributed as dist

    with process_group(World()):
        assert not dist.is_initialized()
        assert gather_to_main(World(), [1, 2]) == [1, 2]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file(), reason="no torchrun beside this Python")
def test_torchrun_two_processes_shard_the_inputs(untrained_unet_run: Path, tmp_path: Path) -> None:
    from glandseg_core.checkpoints import export_model

    model = export_model(untrained_unet_run, tmp_path / "model")
    (tmp_path / "in").mkdir()
    images = []
    for i in range(4):
        img, _ = make_glands(48, 64, n=3, seed=i)
        images.append(tmp_path / "in" / f"img{i}.png")
        Image.fromarray(img).save(images[-1])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "glandseg_core", "predict",
           "--model", str(model), "--out", str(out), "--no-bar", str(tmp_path / "in")]  # fmt: skip
    proc = subprocess.run(
        cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert sorted(ln.split(":")[0] for ln in lines[:-1]) == [
        "[rank 0] img0.png", "[rank 0] img2.png", "[rank 1] img1.png", "[rank 1] img3.png"
    ]  # fmt: skip
    assert lines[-1] == f"4 inputs: 4 ok, 0 skipped, 0 failed; summary: {out / 'summary.csv'}"
    for rank, mine in ((0, [0, 2]), (1, [1, 3])):  # rank r takes inputs r, r + 2
        assert [r["image"] for r in read_rows(out / f"summary_rank{rank}.csv")] == [
            str(images[i]) for i in mine
        ]
    merged = read_rows(out / "summary.csv")
    assert [r["image"] for r in merged] == [str(p) for p in images]  # input order
    assert [r["status"] for r in merged] == ["ok"] * 4
    for i in range(4):
        assert all(
            (out / f"img{i}{s}").is_file() for s in (".png", "_overlay.png", "_glands.csv", ".geojson")
        )
