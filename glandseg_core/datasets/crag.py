"""CRAG (colorectal adenocarcinoma glands; Graham et al., MILD-Net, 2019) as it is distributed.

``train/Images/<stem>.png`` with ``train/Annotation/<stem>.png`` (instance label maps, 0 = background), and the
same under ``valid/``. CRAG's ``valid/`` is the set published results are scored on, so it is split ``test``
here; ``val`` is carved from ``train/`` (``val_fraction`` of ``dataset.json``, default 0.2, seeded). The images
are 20x at 0.55 µm per pixel (MILD-Net's paper); ``dataset.json`` may say otherwise.
"""

from __future__ import annotations

from pathlib import Path

from .filesets import IMAGE_EXTS, LABEL_EXTS, Entry, Found, pair_by_stem, stem_of

CRAG_MPP = 0.55
CRAG_PARTS = {
    "train": None,
    "valid": "test",
}  # folder -> the split it fixes (None: the spec shares it out)
_IMAGES, _ANNOTATION = ("images",), ("annotation", "annotations", "labels")


def _sub(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The subfolder of ``folder`` named one of ``names``, in any case (``Images``, ``Annotation``)."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() in names), None)


def _files(folder: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file():
            out.setdefault(stem_of(p), []).append(p)
    return out


def is_crag(root: Path) -> bool:
    """Whether ``root`` has ``train/`` or ``valid/`` with both ``Images/`` and ``Annotation/``."""
    return any(_sub(root / part, _IMAGES) and _sub(root / part, _ANNOTATION) for part in CRAG_PARTS)


def crag_folder(root: Path) -> Found:
    """The pairs of a CRAG folder; ``valid/`` ones fixed to ``test``. A stem in both parts is one problem line."""
    found = Found()
    seen: dict[str, Path] = {}
    for part, split in CRAG_PARTS.items():
        images, annotation = _sub(root / part, _IMAGES), _sub(root / part, _ANNOTATION)
        if images is None or annotation is None:
            continue
        pairs = pair_by_stem(
            _files(images, IMAGE_EXTS), _files(annotation, LABEL_EXTS), str(root / part)
        )
        found.problems += pairs.problems
        for e in pairs.entries:
            if e.name in seen:
                found.problems.append(f"{e.image}: {e.name} is also {seen[e.name]} (left out)")
                continue
            seen[e.name] = e.image
            found.entries.append(Entry(e.name, e.image, e.labels, split))
    return found
