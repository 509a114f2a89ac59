"""``glandseg data fetch|import``: the GlaS release zip unpacked safely and checked against the shipped sums.

The zips are built here from the real GlaS folder (skipped when it is absent): a few files with a patched sums
list for speed, and the whole release once (slow). No test touches the network: the downloader is replaced.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import pytest

from glandseg_core import cli
from glandseg_core.datasets.glas import release as glas_release
from glandseg_core.datasets.glas.release import check_folder, fetch, import_zip, read_sums
from glandseg_core.errors import DatasetError

TOP = "Warwick QU Dataset (Released 2016_07_08)/"  # the release zip's one folder
SUBSET = ("Grade.csv", "testA_1.bmp", "testA_1_anno.bmp", "train_1.bmp")


@pytest.fixture(scope="module")
def subset_sums(glas_dir: Path) -> dict[str, str]:
    sums = read_sums()
    return {n: sums[n] for n in SUBSET}


def make_zip(path: Path, files: dict[str, bytes], *, top: str = TOP) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(top, b"")  # the folder entry
        for name, data in files.items():
            zf.writestr(top + name, data)
    return path


@pytest.fixture
def subset_zip(tmp_path: Path, glas_dir: Path) -> Path:
    files = {n: (glas_dir / n).read_bytes() for n in SUBSET}
    files["Thumbs.db"] = b"not part of the release"
    return make_zip(tmp_path / glas_release.RELEASE_ZIP, files)


def test_shipped_sums_are_the_release_sums() -> None:
    sums = read_sums()
    assert len(sums) == 331 and "Grade.csv" in sums  # 165 images + 165 annotations + Grade.csv
    assert sum(n.endswith("_anno.bmp") for n in sums) == 165
    shared = Path(__file__).resolve().parents[2] / "shared" / "glas" / "SHA256SUMS"
    if shared.is_file():
        assert glas_release.SUMS_FILE.read_bytes() == shared.read_bytes()


def test_read_sums_refuses_bad_lines(tmp_path: Path) -> None:
    good = "a" * 64
    for text, word in (
        ("xyz  a.bmp\n", "not a sha256sum line"),
        (f"{good}  ../a.bmp\n", "not a plain file name"),
        (f"{good}  a.bmp\n{good}  a.bmp\n", "listed twice"),
    ):
        (tmp_path / "s").write_text(text)
        with pytest.raises(DatasetError, match=word):
            read_sums(tmp_path / "s")
    (tmp_path / "s").write_text(f"# comment\n\n{good.upper()} *a.bmp\n")
    assert read_sums(tmp_path / "s") == {"a.bmp": good}


def test_import_unpacks_flat_and_checks(subset_zip: Path, subset_sums: dict, tmp_path: Path) -> None:
    dest = tmp_path / "glas"
    report = import_zip(subset_zip, dest, sums=subset_sums, show_bar=False)
    assert (report.written, report.present, report.ignored) == (4, 0, (TOP + "Thumbs.db",))
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        SUBSET
    )  # flat, no staging left, no Thumbs.db
    assert check_folder(dest, subset_sums) == ([], [])
    again = import_zip(subset_zip, dest, sums=subset_sums, show_bar=False)  # idempotent
    assert (again.written, again.present) == (0, 4)


def test_import_refuses_a_changed_or_missing_file_and_writes_nothing(
    tmp_path: Path, glas_dir: Path, subset_sums: dict
) -> None:
    files = {n: (glas_dir / n).read_bytes() for n in SUBSET}
    files["testA_1.bmp"] = files["testA_1.bmp"][:-1] + bytes([files["testA_1.bmp"][-1] ^ 1])  # one bit
    del files["train_1.bmp"]
    dest = tmp_path / "glas"
    with pytest.raises(DatasetError) as info:
        import_zip(make_zip(tmp_path / "bad.zip", files), dest, sums=subset_sums, show_bar=False)
    msg = str(info.value)
    assert "\n" not in msg and "testA_1.bmp" in msg and "differ" in msg and "train_1.bmp" in msg
    assert list(dest.iterdir()) == []  # not even the good files: all or nothing


def test_import_does_not_replace_a_different_file(
    subset_zip: Path, subset_sums: dict, tmp_path: Path
) -> None:
    dest = tmp_path / "glas"
    dest.mkdir()
    (dest / "Grade.csv").write_text("mine\n")
    with pytest.raises(DatasetError, match="Grade.csv exists and differs"):
        import_zip(subset_zip, dest, sums=subset_sums, show_bar=False)
    assert (dest / "Grade.csv").read_text() == "mine\n"
    assert sorted(p.name for p in dest.iterdir()) == ["Grade.csv"]


@pytest.mark.parametrize("name", ["../evil.bmp", "/etc/evil.bmp", "a/../../evil.bmp", "C:/evil.bmp"])
def test_import_refuses_entries_escaping_dest(tmp_path: Path, name: str) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, b"x")
    with pytest.raises(DatasetError, match="outside the destination"):
        import_zip(path, tmp_path / "glas", sums={"evil.bmp": "0" * 64}, show_bar=False)
    assert not (tmp_path / "evil.bmp").exists() and list((tmp_path / "glas").iterdir()) == []


def test_import_refuses_symlinks(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    info = zipfile.ZipInfo(TOP + "Grade.csv")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        import_zip(path, tmp_path / "glas", sums={"Grade.csv": "0" * 64}, show_bar=False)


def _patch_entry(path: Path, *, flag: int = 0, method: int | None = None) -> None:
    """Set general purpose flag bits and/or the compression method of the zip's last entry in both its
    local header (offset 6: flags, 8: method) and its central directory record (offset 8: flags, 10: method)."""
    with zipfile.ZipFile(path) as zf:
        local = zf.infolist()[-1].header_offset
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    assert data[local : local + 4] == b"PK\x03\x04" and central > local
    for flags_at, method_at in ((local + 6, local + 8), (central + 8, central + 10)):
        data[flags_at] |= flag
        if method is not None:
            data[method_at : method_at + 2] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("patch", "message"),
    [({"flag": 0x1}, "is encrypted"), ({"method": 99}, "compression method 99")],
    ids=["encrypted", "aes-method"],
)
def test_import_refuses_an_entry_zipfile_cannot_unpack_in_one_line(
    tmp_path: Path, patch: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #23 item 9: an encrypted entry, or a compression method Python refuses, ended in a traceback."""
    path = make_zip(tmp_path / "odd.zip", {"Grade.csv": b"name,grade\n" * 50})
    _patch_entry(path, **patch)
    dest = tmp_path / "glas"
    with pytest.raises(DatasetError, match=message) as info:
        import_zip(path, dest, sums={"Grade.csv": "0" * 64}, show_bar=False)
    assert "Grade.csv" in str(info.value) and "\n" not in str(info.value)
    assert list(dest.iterdir()) == []  # the staging folder is gone
    sums_file = tmp_path / "sums.txt"
    sums_file.write_text(f"{'0' * 64}  Grade.csv\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(glas_release, "SUMS_FILE", sums_file)
        assert cli.main(["data", "import", str(path), "--dest", str(dest), "--no-bar"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_import_turns_an_unreadable_method_zipfile_claims_into_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method that passes the up-front check but fails in zipfile (e.g. lzma missing) is still one line."""
    path = make_zip(tmp_path / "odd.zip", {"Grade.csv": b"x" * 100})
    _patch_entry(path, method=99)
    monkeypatch.setattr(glas_release, "_METHODS", frozenset({0, 8, 99}))
    with pytest.raises(DatasetError, match="cannot be read"):
        import_zip(path, tmp_path / "glas", sums={"Grade.csv": "0" * 64}, show_bar=False)


def test_import_caps_sizes_whatever_the_zip_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_zip(tmp_path / "bomb.zip", {"a.bmp": bytes(5000)})  # 5000 zeros deflate to a few bytes
    monkeypatch.setattr(glas_release, "MAX_MEMBER_BYTES", 4096)
    with pytest.raises(DatasetError, match="too large"):
        import_zip(path, tmp_path / "glas", sums={"a.bmp": "0" * 64}, show_bar=False)
    assert list((tmp_path / "glas").iterdir()) == []


def test_import_of_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "page.zip").write_text("<html>log in</html>")
    with pytest.raises(DatasetError, match="not a readable zip") as info:
        import_zip(tmp_path / "page.zip", tmp_path / "glas", show_bar=False)
    assert glas_release.RELEASE_PAGE in str(info.value)


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, content_type: str = "application/zip") -> None:
        super().__init__(data)
        self.headers = {"Content-Type": content_type, "Content-Length": str(len(data))}


def serve(data: bytes, content_type: str = "application/zip") -> Callable[..., FakeResponse]:
    def urlopen(url: str, timeout: float) -> FakeResponse:
        return FakeResponse(data, content_type)

    return urlopen


def offline(url: str, timeout: float) -> None:
    raise URLError("[Errno -3] Temporary failure in name resolution")


def test_fetch_downloads_unpacks_and_checks(
    subset_zip: Path, subset_sums: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(glas_release, "urlopen", serve(subset_zip.read_bytes()))
    dest = tmp_path / "glas"
    report = fetch(dest, sums=subset_sums, show_bar=False)
    assert report.written == 4 and check_folder(dest, subset_sums) == ([], [])
    assert sorted(p.name for p in dest.iterdir()) == sorted(SUBSET)  # the download is gone
    monkeypatch.setattr(glas_release, "urlopen", offline)  # complete: nothing is downloaded again
    assert fetch(dest, sums=subset_sums, show_bar=False).present == 4


@pytest.mark.parametrize(
    ("urlopen", "cause"),
    [
        (offline, "name resolution"),
        (serve(b"<html>Sign in</html>", "text/html; charset=utf-8"), "web page"),
        (serve(b"plain bytes"), "did not give a zip"),
    ],
)
def test_fetch_failure_is_one_line_saying_where_to_get_the_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, urlopen: Callable, cause: str
) -> None:
    monkeypatch.setattr(glas_release, "urlopen", urlopen)
    dest = tmp_path / "data" / "glas"
    with pytest.raises(DatasetError) as info:
        fetch(dest, show_bar=False)
    msg = str(info.value)
    assert "\n" not in msg and cause in msg
    assert glas_release.RELEASE_PAGE in msg and f"glandseg data import ZIP --dest {dest}" in msg
    assert not dest.exists() and not dest.parent.exists()  # no partial download, no empty folders
    dest.mkdir(parents=True)
    with pytest.raises(DatasetError):
        fetch(dest, show_bar=False)
    assert dest.is_dir() and list(dest.iterdir()) == []  # a folder that was there stays


def test_cli_data_import_and_offline_fetch(
    subset_zip: Path,
    subset_sums: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sums_file = tmp_path / "sums.txt"
    sums_file.write_text("".join(f"{d}  {n}\n" for n, d in subset_sums.items()))
    monkeypatch.setattr(glas_release, "SUMS_FILE", sums_file)
    dest = tmp_path / "glas"
    assert cli.main(["data", "import", str(subset_zip), "--dest", str(dest), "--no-bar"]) == 0
    out = capsys.readouterr().out
    assert "4 files written" in out and "ignored 1 zip entries" in out and f"GLANDSEG_DATA={dest}" in out

    monkeypatch.setattr(glas_release, "urlopen", offline)
    assert cli.main(["data", "fetch", "--dest", str(tmp_path / "other"), "--no-bar"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and glas_release.RELEASE_PAGE in err[0] and "glandseg data import" in err[0]


@pytest.mark.slow
def test_import_of_the_whole_release(tmp_path: Path, glas_dir: Path) -> None:
    """Every file of the release, checked against the shipped sums (about 250 MB unpacked)."""
    path = tmp_path / glas_release.RELEASE_ZIP
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name in read_sums():
            zf.write(glas_dir / name, TOP + name)
    report = import_zip(path, tmp_path / "glas", show_bar=False)
    assert report.written == 331 and report.ignored == ()
    assert check_folder(tmp_path / "glas") == ([], [])
