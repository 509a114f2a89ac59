"""Tests for glandseg_core.batch: a batch of image files segmented into a folder.

Regression tests for issue #15: an output never replaces an input (item 2), a FIFO is refused at once and
the batch goes on (item 3), a full disk leaves none of that image's outputs and says so in one line
naming the file (item 5, predict part). A tiny untrained U-Net keeps them fast: the files matter here.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glandseg_core import batch
from glandseg_core.errors import ImageError
from glandseg_core.imaging.inputs import check_input
from glandseg_core.imaging.io import read_label_map
from glandseg_core.segmenters import Segmenter, load_segmenter
from tests.helpers import make_glands

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def segmenter(untrained_unet_run: Path) -> Segmenter:
    return load_segmenter(untrained_unet_run, device="cpu")


def write_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_glands(64, 96, n=3, seed=seed)[0]).save(path)
    return path


def outputs(out_dir: Path, stem: str) -> list[Path]:
    """Every output of an image (``batch.SUFFIXES``: label map, overlay, gland table, GeoJSON, ...)."""
    return [out_dir / f"{stem}{s}" for s in batch.SUFFIXES]


def one_line(msg: str | None) -> str:
    assert msg and "\n" not in msg, msg
    return msg


def assert_done(result: batch.Result, out_dir: Path, stem: str) -> None:
    assert result.error is None, result.error
    assert result.output == out_dir / f"{stem}.png"
    assert all(p.is_file() for p in outputs(out_dir, stem))
    labels = read_label_map(out_dir / f"{stem}.png")
    assert labels.shape == (64, 96) and result.glands == len(np.unique(labels[labels > 0]))


def test_a_batch_writes_four_outputs_per_image(segmenter: Segmenter, tmp_path: Path) -> None:
    a, b = write_png(tmp_path / "in" / "a.png"), write_png(tmp_path / "in" / "sub" / "a.png", seed=1)
    seen: list[batch.Result] = []
    results = batch.predict_files(segmenter, [a, b], tmp_path / "out", report=seen.append)
    assert [r.path for r in results] == [a, b] and seen == results
    assert_done(results[0], tmp_path / "out", "a")
    assert_done(results[1], tmp_path / "out", "a-2")  # two inputs sharing a stem
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


# ----------------------------------------------------------------------- item 2: never over an input


def test_output_folder_holding_the_input_never_overwrites_it(
    segmenter: Segmenter, tmp_path: Path
) -> None:
    d = tmp_path / "D"
    src = write_png(d / "testA_1.png")
    other = write_png(tmp_path / "elsewhere" / "testB_1.png", seed=1)
    before = src.read_bytes()
    results = batch.predict_files(segmenter, [src, other], d)
    assert results[0].output is None and results[0].glands is None
    msg = one_line(results[0].error)
    assert str(src) in msg and "input" in msg
    assert src.read_bytes() == before  # the user's image is not a 16-bit label map now
    assert not any(p.exists() for p in outputs(d, "testA_1")[1:])  # nothing of it was written
    assert_done(results[1], d, "testB_1")  # the batch went on


def test_no_output_replaces_any_input_of_the_batch(segmenter: Segmenter, tmp_path: Path) -> None:
    """Not only the label map: an overlay name, a hard link or a symlink to an input are inputs too."""
    d = tmp_path / "D"
    a = write_png(d / "a.bmp")  # its label map a.png would replace ...
    b = write_png(d / "a.png", seed=1)  # ... this input
    c = write_png(d / "c.bmp", seed=2)
    os.link(c, d / "c_overlay.png")  # c's overlay is a hard link of c itself
    e = write_png(tmp_path / "elsewhere" / "e.png", seed=3)
    (d / "e.png").symlink_to(e)  # e's label map would be written through a link to e
    before = {p: p.read_bytes() for p in (a, b, c, e)}
    results = batch.predict_files(segmenter, [a, b, c, e], d)
    assert str(d / "a.png") in one_line(results[0].error)
    assert_done(results[1], d, "a-2")  # a.png's own outputs take the next free name
    assert str(d / "c_overlay.png") in one_line(results[2].error)
    assert str(d / "e.png") in one_line(results[3].error)
    assert {p: p.read_bytes() for p in before} == before


# ------------------------------------------------------------------------- item 3: not regular files


def test_check_input_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "y.png")
    (tmp_path / "folder.png").mkdir()
    for name, what in (("y.png", "pipe"), ("folder.png", "folder"), ("absent.png", "not found")):
        with pytest.raises(ImageError, match=what) as e:
            check_input(tmp_path / name)
        assert str(tmp_path / name) in one_line(str(e.value))


def test_a_fifo_is_refused_at_once_and_the_batch_goes_on(segmenter: Segmenter, tmp_path: Path) -> None:
    fifo = tmp_path / "in" / "y.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    good = write_png(tmp_path / "in" / "good.png")
    out = tmp_path / "out"
    results: list[batch.Result] = []
    worker = threading.Thread(
        target=lambda: results.extend(batch.predict_files(segmenter, [fifo, good], out)), daemon=True
    )
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # blocked in open(): give it a writer so the thread can end, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(timeout=20)
        pytest.fail("the batch blocked on a FIFO")
    assert len(results) == 2
    msg = one_line(results[0].error)
    assert str(fifo) in msg and "pipe" in msg
    assert not any(p.exists() for p in outputs(out, "y"))
    assert_done(results[1], out, "good")


# ------------------------------------------------------------------------------ item 5: disk full


@pytest.fixture
def disk_full_on(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``disk_full_on(name)``: writes to the temporary file of output ``name`` fail with ENOSPC."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file a descriptor writes to")
    real_fdopen = os.fdopen
    failing: list[str] = []

    def fdopen(fd: int, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        fh = real_fdopen(fd, *args, **kwargs)
        target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if any(target.startswith(f".{name}.") for name in failing):

            def write(data: bytes) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            fh.write = write
        return fh

    monkeypatch.setattr(os, "fdopen", fdopen)
    return failing.append


@pytest.mark.parametrize(
    "failing", ["testB_2.png", "testB_2_overlay.png", "testB_2_glands.csv", "testB_2.geojson"]
)
def test_full_disk_leaves_none_of_the_image_outputs_and_the_batch_goes_on(
    segmenter: Segmenter, tmp_path: Path, disk_full_on, failing: str
) -> None:
    full = write_png(tmp_path / "in" / "testB_2.png")
    nxt = write_png(tmp_path / "in" / "testA_1.png", seed=1)
    out = tmp_path / "out"
    disk_full_on(failing)
    lines: list[str] = []
    results = batch.predict_files(
        segmenter, [full, nxt], out, report=lambda r: lines.append(r.error or "ok")
    )
    msg = one_line(results[0].error)
    assert "testB_2" in msg and "disk full" in msg
    assert results[0].glands is None and results[0].output is None
    assert not any(p.exists() for p in outputs(out, "testB_2"))  # all four or none
    assert not list(out.glob(".*"))  # temporary files removed
    assert lines == [msg, "ok"]
    assert_done(results[1], out, "testA_1")


def test_other_write_errors_name_the_file_and_the_cause(
    segmenter: Segmenter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(files: dict[Path, bytes]) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(next(iter(files))))

    monkeypatch.setattr(batch.run, "write_together", refuse)  # where the loop looks it up
    src = write_png(tmp_path / "in" / "x.png")
    result = batch.predict_files(segmenter, [src], tmp_path / "out")[0]
    msg = one_line(result.error)
    assert str(tmp_path / "out" / "x.png") in msg and os.strerror(errno.EACCES) in msg


def test_write_together_is_all_or_nothing(tmp_path: Path, disk_full_on) -> None:
    old = {tmp_path / "a.txt": b"old a", tmp_path / "b.txt": b"old b"}
    for p, data in old.items():
        p.write_bytes(data)
    disk_full_on("b.txt")
    with pytest.raises(OSError) as e:
        batch.write_together({tmp_path / "a.txt": b"new a", tmp_path / "b.txt": b"new b"})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "b.txt")
    assert {p: p.read_bytes() for p in old} == old  # a.txt was not replaced either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


class RunsOutOfMemoryOnce:
    """A segmenter that fails on its first image as torch does on a CPU without enough memory."""

    def __init__(self, inner: Segmenter, error: BaseException) -> None:
        self.inner, self.error, self.calls = inner, error, 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return self.inner(image)


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: 9 GB"
        ),
    ],
)
def test_an_image_too_large_for_memory_is_one_line_and_the_batch_goes_on(
    segmenter: Segmenter, tmp_path: Path, error: BaseException
) -> None:
    big = write_png(tmp_path / "in" / "big.png")
    nxt = write_png(tmp_path / "in" / "next.png", seed=1)
    out = tmp_path / "out"
    results = batch.predict_files(RunsOutOfMemoryOnce(segmenter, error), [big, nxt], out)  # type: ignore[arg-type]
    msg = one_line(results[0].error)
    assert str(big) in msg and "out of memory" in msg
    assert not any(p.exists() for p in outputs(out, "big"))
    assert_done(results[1], out, "next")


def test_no_room_for_a_temporary_file_names_the_output(
    segmenter: Segmenter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args: object, prefix: str = "", **kwargs: object):  # type: ignore[no-untyped-def]
        if prefix.startswith(".full_overlay.png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{prefix}abc.tmp")
        return real_mkstemp(*args, prefix=prefix, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    full = write_png(tmp_path / "in" / "full.png")
    out = tmp_path / "out"
    result = batch.predict_files(segmenter, [full], out)[0]
    msg = one_line(result.error)
    assert msg.startswith(f"{out / 'full_overlay.png'}: ") and "disk full" in msg
    assert not any(p.exists() for p in outputs(out, "full"))
    assert not list(out.glob(".*"))
