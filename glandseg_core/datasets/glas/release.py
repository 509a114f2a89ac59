"""Get the official GlaS release onto a fresh machine: download or import its zip, unpack it safely, check it.

Every file is checked against the SHA-256 sums of the original release shipped with the package
(``glas_sha256sums.txt``, ``sha256sum`` format: ``<64 hex>  <name>``, one file a line). The release zip holds
the files in one folder (``Warwick QU Dataset (Released 2016_07_08)/``); they are unpacked flat into the
destination, the layout :func:`glandseg_core.datasets.glas.find_items` reads.

Safety: nothing is written outside the destination (entry names with ``..`` or absolute paths, and symlink
entries, are refused), each member and the whole release are capped in size while they are read (the sizes a
zip declares are not trusted), and files go to a hidden staging folder first: the destination receives them
only when every file is present and matches its sum, so an interrupted or failed import leaves nothing
half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import URLError
from urllib.request import urlopen

from tqdm import tqdm

from ...errors import DatasetError

RELEASE_ZIP = "warwick_qu_dataset_released_2016_07_08.zip"
RELEASE_PAGE = "https://warwick.ac.uk/fac/cross_fac/tia/data/glascontest/download/"
RELEASE_URLS = (  # the TIA centre's download page, then the address the challenge published in 2016
    RELEASE_PAGE + RELEASE_ZIP,
    "https://warwick.ac.uk/fac/sci/dcs/research/tia/glascontest/download/" + RELEASE_ZIP,
)
SUMS_FILE = Path(__file__).with_name("glas_sha256sums.txt")
MAX_MEMBER_BYTES = 32 * 2**20  # the largest GlaS file is a 1.2 MB BMP
MAX_RELEASE_BYTES = 1 * 2**30  # unpacked; the release is about 250 MB
MAX_DOWNLOAD_BYTES = 512 * 2**20  # the zip is about 173 MB
_CHUNK = 2**20
_METHODS = frozenset(  # the compression methods zipfile unpacks (bzip2 and lzma when Python has them)
    (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
)


def where_to_get(dest: Path) -> str:
    """The hint that ends every download error: where the zip is and the command that imports it."""
    return f"download {RELEASE_ZIP} from {RELEASE_PAGE} and run: glandseg data import ZIP --dest {dest}"


@dataclass(frozen=True)
class Report:
    """What an import did: files written, files already in place (same sums), zip entries ignored."""

    dest: Path
    written: int
    present: int
    ignored: tuple[str, ...] = ()

    @property
    def files(self) -> int:
        """Files of the release now in ``dest``, all checked."""
        return self.written + self.present


def read_sums(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Read a ``sha256sum`` file (default :data:`SUMS_FILE`): ``{file name: lower-case hex digest}``.

    Blank lines and ``#`` comments are skipped.

    Raises:
        DatasetError: a line that is not ``<64 hex> <name>``, a name with a folder in it, or a repeated name.
    """
    path = SUMS_FILE if path is None else path
    sums: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        name = name.strip().removeprefix("*")  # "*name": sha256sum's binary-mode marker
        if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest) or not name:
            raise DatasetError(f"{path}:{n}: not a sha256sum line: {line[:80]!r}")
        if "/" in name or "\\" in name or name in (".", ".."):
            raise DatasetError(f"{path}:{n}: {name!r} is not a plain file name")
        if name in sums:
            raise DatasetError(f"{path}:{n}: {name} is listed twice")
        sums[name] = digest.lower()
    return sums


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_folder(dest: str | os.PathLike[str], sums: dict[str, str] | None = None) -> tuple[list, list]:
    """Check a folder against the sums: ``(missing names, names whose content differs)``, both sorted."""
    sums = read_sums() if sums is None else sums
    missing, differ = [], []
    for name, digest in sorted(sums.items()):
        path = Path(dest) / name
        if not path.is_file():
            missing.append(name)
        elif file_sha256(path) != digest:
            differ.append(name)
    return missing, differ


def _member_name(info: zipfile.ZipInfo) -> str | None:
    """The file name an entry unpacks to (None for folders); refuses names that escape and symlinks."""
    raw = info.filename
    parts = PurePosixPath(raw.replace("\\", "/")).parts
    if raw.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DatasetError(f"zip entry {raw!r} points outside the destination; refusing this zip")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(f"zip entry {raw!r} is a symbolic link; refusing this zip")
    return None if info.is_dir() or not parts else parts[-1]


_REZIP = "use the original release zip, or re-zip the files without a password and with plain deflate"
_ENCRYPTED = 0x1  # general purpose bit 0 of an entry: the entry is encrypted (a password is needed)


def _check_readable(info: zipfile.ZipInfo) -> None:
    """Refuse an entry that Python's zipfile cannot unpack: encrypted, or an unsupported compression method."""
    if info.flag_bits & _ENCRYPTED:
        raise DatasetError(f"zip entry {info.filename!r} is encrypted (password-protected); {_REZIP}")
    if info.compress_type not in _METHODS:
        raise DatasetError(
            f"zip entry {info.filename!r} uses compression method {info.compress_type}, which Python's "
            f"zipfile cannot unpack (99 is AES encryption); {_REZIP}"
        )


def _unpack_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, to: Path, budget: int) -> tuple[str, int]:
    """Copy one entry to ``to`` while hashing it, capped at ``MAX_MEMBER_BYTES`` and ``budget`` bytes."""
    h, size, cap = hashlib.sha256(), 0, min(MAX_MEMBER_BYTES, budget)
    with zf.open(info) as src, open(to, "xb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > cap:
                which = "the release" if cap == budget else "one file"
                raise DatasetError(
                    f"zip entry {info.filename!r} is too large ({which} may hold {cap} bytes)"
                )
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest(), size


def _stage(
    zf: zipfile.ZipFile, sums: dict[str, str], staging: Path, show_bar: bool
) -> tuple[list, list]:
    """Unpack the release's files into ``staging``; returns (ignored entries, names whose sums differ)."""
    ignored, differ, seen, budget = [], [], set(), MAX_RELEASE_BYTES
    for info in tqdm(zf.infolist(), desc="unpack", unit="file", disable=None if show_bar else True):
        name = _member_name(info)
        if name is None:
            continue
        if name not in sums:
            ignored.append(info.filename)
            continue
        if name in seen:
            raise DatasetError(f"the zip holds {name} twice; refusing it")
        seen.add(name)
        _check_readable(info)
        try:
            digest, size = _unpack_member(zf, info, staging / name, budget)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise DatasetError(f"zip entry {info.filename!r} is corrupt ({e})") from None
        except (NotImplementedError, RuntimeError) as e:  # a method or an encryption the flags hid
            raise DatasetError(f"zip entry {info.filename!r} cannot be read ({e}); {_REZIP}") from None
        budget -= size
        if digest != sums[name]:
            differ.append(name)
    return ignored, differ


def _problems(missing: Iterable[str], differ: Iterable[str]) -> str:
    parts = []
    for names, what in ((list(differ), "differ from their SHA-256"), (list(missing), "missing")):
        if names:
            more = ", ..." if len(names) > 3 else ""
            parts.append(f"{len(names)} file(s) {what} ({', '.join(names[:3])}{more})")
    return "; ".join(parts)


def _install(staging: Path, dest: Path, sums: dict[str, str]) -> tuple[int, int]:
    """Move the checked files into ``dest``; identical files already there stay. Returns (written, present)."""
    clash = [n for n in sums if (dest / n).exists() and file_sha256(dest / n) != sums[n]]
    if clash:
        raise DatasetError(
            f"{dest / clash[0]} exists and differs from the release ({len(clash)} such file(s)); "
            "choose an empty --dest or move them away first"
        )
    written = present = 0
    for name in sorted(sums):
        if (dest / name).exists():
            present += 1
            continue
        os.replace(staging / name, dest / name)
        written += 1
    return written, present


def import_zip(
    zip_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    sums: dict[str, str] | None = None,
    show_bar: bool = True,
) -> Report:
    """Unpack the GlaS release zip into ``dest`` (created) and check every file against the sums.

    Args:
        zip_path: the release zip (e.g. ``warwick_qu_dataset_released_2016_07_08.zip``).
        dest: the folder for the flat GlaS layout (``train_1.bmp``, ``train_1_anno.bmp``, ..., ``Grade.csv``).
        sums: ``{name: sha256}``; default: the sums shipped with the package (:data:`SUMS_FILE`).
        show_bar: a progress bar on a terminal.

    Returns:
        A :class:`Report`; ``dest`` then holds every file of ``sums``, checked.

    Raises:
        DatasetError: not a zip, an unsafe or oversized entry, files missing or differing from their sums, or
            a file in ``dest`` that differs from the release (nothing is written to ``dest`` in each case).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    sums = read_sums() if sums is None else sums
    if not zip_path.is_file():
        raise DatasetError(f"{zip_path}: no such file; {where_to_get(dest)}")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{zip_path}: not a readable zip file ({e}); {where_to_get(dest)}") from None
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".glas-import-", dir=dest))
    try:
        with zf:
            ignored, differ = _stage(zf, sums, staging, show_bar)
        missing = [n for n in sorted(sums) if not (staging / n).is_file()]
        if missing or differ:
            raise DatasetError(f"{zip_path}: not the GlaS release: {_problems(missing, differ)}")
        written, present = _install(staging, dest, sums)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Report(dest, written, present, tuple(ignored))


def download(url: str, to: Path, *, timeout: float = 60.0, show_bar: bool = True) -> None:
    """Download ``url`` to the file ``to`` (at most :data:`MAX_DOWNLOAD_BYTES`); a web page instead is an error.

    Raises:
        DatasetError: one line with the cause (no network, HTTP error, a login page, too large).
    """
    try:
        resp = urlopen(url, timeout=timeout)
    except (URLError, OSError, ValueError) as e:
        raise DatasetError(f"cannot download {url} ({getattr(e, 'reason', None) or e})") from None
    with resp, open(to, "wb") as out:
        if "html" in (resp.headers.get("Content-Type") or ""):
            raise DatasetError(f"{url} gave a web page, not the zip (the site may ask you to log in)")
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = tqdm(
            total=total, desc="download", unit="B", unit_scale=True, disable=None if show_bar else True
        )
        size = 0
        with bar:
            try:
                while chunk := resp.read(_CHUNK):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise DatasetError(
                            f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes; not the release"
                        )
                    out.write(chunk)
                    bar.update(len(chunk))
            except (URLError, OSError) as e:
                raise DatasetError(f"download of {url} broke off ({e})") from None


def fetch(
    dest: str | os.PathLike[str],
    *,
    urls: Iterable[str] = RELEASE_URLS,
    sums: dict[str, str] | None = None,
    show_bar: bool = True,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Download the GlaS release zip, unpack it into ``dest`` and check it (see :func:`import_zip`).

    A ``dest`` that already holds every file with the right sums is left as it is (nothing downloaded).

    Raises:
        DatasetError: one line; when no address worked, it says where to get the zip and how to import it.
    """
    dest, sums = Path(dest), read_sums() if sums is None else sums
    if dest.is_dir() and check_folder(dest, sums) == ([], []):
        return Report(dest, 0, len(sums))
    created = [p for p in (dest, *dest.parents) if not p.exists()]  # deepest first
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".glas-download-", suffix=".zip", dir=dest)
    os.close(fd)
    causes = []
    try:
        for url in urls:
            if log is not None:
                log(f"downloading {url}")
            try:
                download(url, Path(tmp), show_bar=show_bar)
            except DatasetError as e:
                causes.append(str(e))
                continue
            if zipfile.is_zipfile(tmp):
                return import_zip(tmp, dest, sums=sums, show_bar=show_bar)
            causes.append(f"{url} did not give a zip file")
        raise DatasetError(
            f"{causes[-1] if causes else 'no address to download from'}; {where_to_get(dest)}"
        )
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        for folder in created:  # only when empty: a failed fetch leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
