"""The on-disk cache of exported graphs: one folder per (weights, part, engine, versions, shape policy).

A folder is built in a temporary sibling and renamed into place once complete (``meta.json`` written last), so a
reader never sees half a graph; two processes building the same entry at once both succeed (the second rename
finds the folder there and drops its own copy). An entry that fails to load is removed and built again.

Where: ``$GLANDSEG_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/glandseg/engines``, else ``~/.cache/glandseg/engines``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SHAPE_POLICY = (
    "dynamic-hw-1"  # dynamic H and W (and detection counts); bump when the exported graphs change
)
META = "meta.json"


def cache_root() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get("GLANDSEG_ENGINE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "glandseg" / "engines"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def entry_key(*parts: str) -> str:
    """A folder name for an entry: the first 24 hex digits of the SHA-256 of its parts."""
    return hashlib.sha256("\0".join((SHAPE_POLICY, *parts)).encode()).hexdigest()[:24]


def _complete(folder: Path) -> bool:
    return (folder / META).is_file()


def build_entry(folder: Path, build: Callable[[Path], None], meta: dict) -> None:
    """Run ``build(tmp)`` in a temporary sibling of ``folder``, write ``meta.json``, rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if folder.exists() and not _complete(folder):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process put a complete entry there first
            if not _complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached(folder: Path, build: Callable[[Path], None], load: Callable[[Path], T], meta: dict) -> T:
    """``load(folder)``, building the entry first when it is missing; an entry that fails to load (a corrupt or
    truncated file) is removed, built again and loaded once more (a second failure propagates)."""
    if _complete(folder):
        try:
            return load(folder)
        except Exception:  # noqa: BLE001 - any reader error means a broken entry: rebuild it
            shutil.rmtree(folder, ignore_errors=True)
    build_entry(folder, build, meta)
    return load(folder)
