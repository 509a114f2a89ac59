"""Check every path typed in the dashboard before anything is read or written (issue #15, item 1).

Names typed for outputs (model folders, run folders, annotation files) are plain names, one level below their
root: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, so ``..``, ``/``, ``~`` and
absolute paths are refused; a name that is a symbolic link, or resolves outside its root, is refused too. Data
folders may be typed as paths, but must lie inside :func:`glandseg_dashboard.settings.data_root` unless the deployment sets
``GLANDSEG_ALLOW_ANY_PATH=1``. Every refusal is a ``ValueError`` with a one-line message. No streamlit here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from . import settings

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "letters, digits, '.', '_' and '-' only, starting with a letter or digit (at most 100)"


def check_name(name: str, what: str) -> str:
    """``name`` stripped, when it is a plain file or folder name (see the module docstring).

    Raises:
        ValueError: naming ``what`` and the rule.
    """
    name = name.strip()
    if not name:
        raise ValueError(f"{what}: enter a name")
    if not NAME_RE.fullmatch(name) or set(name) == {"."}:
        raise ValueError(f"{what} {name!r}: use {NAME_RULE}")
    return name


def inside(root: Path, name: str, what: str) -> Path:
    """``root/name`` after checking ``name`` and that the path stays directly below ``root``.

    Returns:
        The path with ``root`` resolved (``root`` itself need not exist yet).

    Raises:
        ValueError: a bad name, a symbolic link, or a path that resolves outside ``root``.
    """
    name = check_name(name, what)
    base = root.expanduser().resolve()
    path = base / name
    if path.is_symlink():
        raise ValueError(f"{what} {name!r} is a symbolic link in {base}; choose another name")
    if path.resolve().parent != base:
        raise ValueError(f"{what} {name!r} leads outside {base}")
    return path


def output_file(root: Path, name: str, suffix: str, what: str) -> Path:
    """``root/<name>`` with ``suffix`` added when missing, checked as :func:`inside`."""
    name = name.strip()
    if name.lower().endswith(suffix.lower()):
        name = name[: -len(suffix)]
    return inside(root, check_name(name, what) + suffix, what)


def data_folder(text: str) -> Path:
    """The data folder typed by a user: relative to :func:`settings.data_root` or absolute, resolved.

    Raises:
        ValueError: empty, or outside the data root while ``GLANDSEG_ALLOW_ANY_PATH`` is off.
    """
    text = text.strip()
    if not text:
        raise ValueError("Enter the GlaS folder above first (the one holding train_1.bmp, …).")
    root = settings.data_root().expanduser().resolve()
    path = Path(text).expanduser()
    path = (path if path.is_absolute() else root / path).resolve()
    if not settings.allow_any_data_path() and not path.is_relative_to(root):
        raise ValueError(
            f"data folder {text!r} lies outside {root}, the folder this dashboard reads data from "
            "(an administrator can set GLANDSEG_DATA_ROOT, or GLANDSEG_ALLOW_ANY_PATH=1)"
        )
    return path


def existing(folder: Path, names: Iterable[str]) -> list[str]:
    """Those of ``names`` present in ``folder`` (sub-folders get a trailing ``/``), in the given order."""
    out = []
    for n in names:
        p = folder / n
        if p.is_dir() and not p.is_symlink():
            out.append(f"{n}/")
        elif p.exists() or p.is_symlink():
            out.append(n)
    return out
