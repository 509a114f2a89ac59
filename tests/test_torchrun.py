"""``glandseg predict`` under ``torchrun``: inputs sharded by rank, per-rank summaries, rank 0's merged summary.

The real run starts two CPU processes with the venv's torchrun (gloo backend) on four small images with a tiny
untrained U-Net; the rest checks the pieces in-process.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from glandseg_core.distributed import (
    RENDEZVOUS_ENV,
    World,
    gather_to_main,
    process_group,
    rendezvous,
    rendezvous_timeout,
    world_from_env,
)
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
    env["PYTHONUNBUFFERED"] = (
        "1"  # where print's text and newline are separate writes (see the next test)
    )
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


def test_a_ranks_report_line_is_one_write_so_two_ranks_cannot_interleave_it() -> None:
    """Both ranks write to one terminal; a line written in two pieces (text, then newline, as ``print`` does
    unbuffered) let the other rank's line land between them (seen: a merged line and an empty one)."""
    from glandseg_core.cli.commands import _line

    class Recorder(io.StringIO):
        writes: list[str] = []

        def write(self, s: str) -> int:
            self.writes.append(s)
            return super().write(s)

    stream = Recorder()
    _line("[rank 1] img1.png: 3 glands -> out/img1.png", stream)
    assert stream.writes == ["[rank 1] img1.png: 3 glands -> out/img1.png\n"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def master_env(port: int, seconds: str = "0.5") -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), RENDEZVOUS_ENV: seconds}


def test_rendezvous_timeout_comes_from_the_environment() -> None:
    assert rendezvous_timeout({}) == 300.0 and rendezvous_timeout({RENDEZVOUS_ENV: "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigError, match=RENDEZVOUS_ENV):
            rendezvous_timeout({RENDEZVOUS_ENV: bad})


def test_a_rank_that_never_comes_is_one_line_naming_it() -> None:
    """Issue #23 item 9: ``RANK=1 WORLD_SIZE=2`` with no other rank hung silently (a 24 h group timeout)."""
    env = master_env(free_port())
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"rank 1 of 2: rank 0 never came at 127\.0\.0\.1") as info:
        rendezvous(World(1, 2), env=env)
    assert "torchrun --nproc_per_node" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"rank 0 of 3: rank 1, 2 never came within 0\.5 s") as info:
        rendezvous(World(0, 3), env=env)
    assert RENDEZVOUS_ENV in str(info.value) and "torchrun" in str(info.value)
    assert time.monotonic() - t0 < 10
    with pytest.raises(ConfigError, match="needs MASTER_ADDR and MASTER_PORT"):
        rendezvous(World(1, 2), env={RENDEZVOUS_ENV: "0.5"})


def test_two_ranks_that_both_come_meet() -> None:
    import threading

    env, stores, errors = master_env(free_port(), "20"), {}, []

    def join(rank: int) -> None:
        try:
            stores[rank] = rendezvous(World(rank, 2), env=env)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=join, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and sorted(stores) == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize(("verb", "rank"), [("predict", "1"), ("train", "0")])
def test_cli_with_a_missing_rank_ends_in_one_line(verb: str, rank: str, tmp_path: Path) -> None:
    """The commands with ``RANK``/``WORLD_SIZE`` set and no other rank: one ``error:`` line, within seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "RANK": rank}
    env.update(WORLD_SIZE="2", LOCAL_RANK=rank, **master_env(free_port(), "2"))
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    args = {
        "predict": ["--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"), str(tmp_path)],
        "train": ["--data", str(tmp_path / "glas"), "--out", str(tmp_path / "run"), "--no-bar"],
    }[verb]
    proc = subprocess.run(
        [sys.executable, "-m", "glandseg_core", verb, *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    missing = "rank 0 never came" if rank == "1" else "rank 1 never came"
    assert len(lines) == 1 and lines[0].startswith("error: ") and missing in lines[0], proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
