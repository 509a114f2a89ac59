"""What a command line names as inputs: files, folders and glob patterns expanded into image and slide files.

Also the checks every input passes before it is read (a regular file, not a FIFO or a folder) and one output
name per input (``a.png`` and ``x/a.bmp`` become ``a`` and ``a-2``).
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..errors import ImageError

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide", ".dcm")


def _wanted(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS + SLIDE_EXTENSIONS


def _expand(spec: str, out_dir: Path | None) -> list[Path]:
    """One command-line input: a file as given; a folder's (or a glob's) image and slide files, sorted,
    except hidden files and files inside ``out_dir`` (a previous run's outputs are not inputs)."""
    path = Path(spec)
    if glob.has_magic(spec) and not path.exists():
        found = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
    elif path.is_dir():
        found = sorted(path.iterdir())
    else:
        return [path]
    out = out_dir.resolve() if out_dir is not None else None
    return [p for p in found if p.is_file() and _wanted(p) and p.resolve().parent != out]


def find_inputs(
    specs: Sequence[str | os.PathLike[str]], out_dir: Path | None = None
) -> tuple[list, list]:
    """Expand files, folders (not recursive) and globs (``**`` recursive) into input files.

    Every process of a ``torchrun`` batch gets the same list from the same arguments.

    Returns:
        (inputs: list[Path] in order, duplicates dropped; problems: list[(Path, message)], one per folder or
        glob that holds no image or slide file).
    """
    inputs, problems, seen = [], [], set()
    out = None if out_dir is None else out_dir.resolve()
    for spec in (os.fspath(s) for s in specs):
        found = _expand(spec, out_dir)
        if not found and Path(spec).is_dir() and Path(spec).resolve() == out:
            why = "is the output folder, whose files are not inputs (choose another --out or name the files)"
            problems.append((Path(spec), f"{spec}: {why}"))
        elif not found:
            what = "folder" if Path(spec).is_dir() else "pattern"
            problems.append((Path(spec), f"{spec}: {what} names no image or slide file"))
        for p in found:
            key = os.path.abspath(p)
            if key not in seen:
                seen.add(key)
                inputs.append(p)
    return inputs, problems


def output_stems(paths: Sequence[Path]) -> list[str]:
    """One output name per input: the file's stem, made unique when two inputs share it (``a.bmp``, ``x/a.png``)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name, n = path.stem, 1
        while name in used:
            n += 1
            name = f"{path.stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of a file (which file it is, whatever the path), None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_input(path: Path) -> None:
    """Refuse at once what is not a regular file (a FIFO would block forever, a folder cannot be read).

    Raises:
        ImageError: naming the file.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        kinds = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a pipe"}
        what = kinds.get(stat.S_IFMT(mode), "not a regular file")
        raise ImageError(f"{path}: refused: {what}, not an image file")
