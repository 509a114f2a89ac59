"""Outputs that know their input: each output set's record, what "done" means, and names two inputs would share.

Beside the outputs of ``<name>`` a batch writes ``<name>.input.json`` (:data:`RECORD_SUFFIX`), in the same
all-or-nothing set: the input (resolved path, size, mtime and, up to :data:`HASH_LIMIT`, its SHA-256), the
configuration (model folder, its files' sizes and mtimes, kind, TTA, ``--mpp``) and the output files. Outputs
are "done" only for the same input (same SHA-256, else same path, size and mtime) and the same configuration;
any other input or configuration is refused in one line (``--overwrite`` redoes it; a run without ``--mpp``
accepts outputs made with one), and so are outputs that no record explains (an older glandseg, another program, or another input's ``_overlay.png``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoints import POSTPROCESS, weights_file
from ..errors import ImageError

RECORD_SUFFIX = ".input.json"
HASH_LIMIT = 256 * 2**20  # larger inputs (slides) are known by path, size and mtime
_MODEL_FILES = ("config.json", POSTPROCESS)


def record_path(out_dir: Path, name: str) -> Path:
    """The record of the output set ``name``."""
    return out_dir / f"{name}{RECORD_SUFFIX}"


def _stat(path: Path) -> dict[str, Any]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def input_identity(path: Path) -> dict[str, Any]:
    """Which input this is: resolved path, size, mtime (ns) and, for files up to :data:`HASH_LIMIT`, SHA-256."""
    ident: dict[str, Any] = {"path": str(path.resolve()), **_stat(path)}
    if ident["size"] <= HASH_LIMIT:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        ident["sha256"] = digest.hexdigest()
    return ident


def config_identity(segmenter: object, mpp: float | None) -> dict[str, Any]:
    """What makes the outputs: the model folder and its files (size, mtime), kind, TTA and ``--mpp``."""
    folder = getattr(segmenter, "path", None)
    files: dict[str, Any] = {}
    if folder is not None:
        folder = Path(folder)
        for f in (weights_file(folder), *(folder / n for n in _MODEL_FILES)):
            if f.is_file():
                files[f.name] = _stat(f)
    return {
        "model": None if folder is None else str(folder.resolve()),
        "files": files,
        "kind": getattr(segmenter, "kind", None),
        "tta": bool(getattr(segmenter, "tta", False)),
        "mpp": mpp,
    }


def record_bytes(source: dict[str, Any], config: dict[str, Any], outputs: Sequence[Path]) -> bytes:
    """The content of an output set's record."""
    rec = {"input": source, "config": config, "outputs": [p.name for p in outputs]}
    return (json.dumps(rec, indent=1) + "\n").encode()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    ok = (
        isinstance(rec, dict)
        and isinstance(rec.get("input"), dict)
        and isinstance(rec.get("config"), dict)
    )
    return rec if ok else None


def _same_input(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if "sha256" in a and "sha256" in b:
        return bool(a["sha256"] == b["sha256"])
    return all(a.get(k) == b.get(k) for k in ("path", "size", "mtime_ns"))


def _same_config(done: dict[str, Any], now: dict[str, Any]) -> bool:
    """The same model files, kind and TTA; a pixel size counts only when this run names one (``--mpp``)."""
    keep = [k for k in now if k != "mpp"]
    same = all(done.get(k) == now[k] for k in keep)
    return same and (now.get("mpp") is None or done.get("mpp") == now["mpp"])


def _describe(config: dict[str, Any]) -> str:
    tta = ", TTA" if config.get("tta") else ""
    mpp = f", --mpp {config['mpp']}" if config.get("mpp") is not None else ""
    return f"model {config.get('model') or config.get('kind')}{tta}{mpp}"


def owner(out_dir: Path, filename: str) -> Path | None:
    """The record whose output set holds ``filename`` (None when no record lists it)."""
    for rec_path in sorted(out_dir.glob(f"*{RECORD_SUFFIX}")):
        rec = _read(rec_path)
        if rec is not None and filename in rec.get("outputs", ()):
            return rec_path
    return None


def is_done(
    path: Path, targets: Sequence[Path], record: Path, source: dict[str, Any], config: dict[str, Any]
) -> bool:
    """Whether ``path``'s outputs are finished: True to skip it, False to (re)do it (none there, or only
    part of its own set).

    Raises:
        ImageError: one line, when the outputs there belong to another input, another configuration, or no
            record explains them (``--overwrite`` redoes them; nothing is written).
    """
    present = [t for t in targets if t.is_file()]
    if not present and not record.is_file():
        return False
    rec = _read(record)
    out_dir = record.parent
    if rec is None:
        holder = owner(out_dir, present[0].name) if present else None
        whose = (
            f"is an output of {_read_input(holder)} ({holder.name})"
            if holder
            else "has no record of its input"
        )
        raise ImageError(
            f"{path}: {present[0] if present else record} {whose}; refusing to replace it (choose another "
            "--out, or --overwrite)"
        )
    if not _same_input(rec["input"], source):
        raise ImageError(
            f"{path}: {out_dir}/{record.name.removesuffix(RECORD_SUFFIX)}.* hold the outputs of another input, "
            f"{rec['input'].get('path')}; refusing to replace them (choose another --out, or --overwrite)"
        )
    if not _same_config(rec["config"], config):
        raise ImageError(
            f"{path}: its outputs in {out_dir} were made with {_describe(rec['config'])}, not "
            f"{_describe(config)}; --overwrite redoes them"
        )
    return len(present) == len(targets)


def _read_input(record: Path) -> str:
    rec = _read(record)
    return str(rec["input"].get("path")) if rec else "another input"


def check_names(inputs: Sequence[Path], outputs: Sequence[Sequence[Path]]) -> None:
    """Refuse, before any work, a batch in which two inputs would write a file of the same name
    (``a/x.png`` and ``b/x_overlay.png`` both make ``x_overlay.png``).

    Raises:
        ImageError: one line naming both inputs and the file.
    """
    claimed: dict[str, Path] = {}
    for path, files in zip(inputs, outputs, strict=True):
        for f in files:
            first = claimed.setdefault(f.name, path)
            if first != path:
                raise ImageError(
                    f"{first} and {path} would both write {f}; rename one, or predict them into different "
                    "--out folders (nothing was done)"
                )
