"""``dataset.json``: what a folder of images cannot say itself (docs/DATASETS.md has the schema).

Pixel size, splits (explicit lists of image stems, or a seeded fraction for ``val`` and ``test`` that keeps
each group, e.g. a patient, in one split), per-image group, grade and pixel size, the layout when it should not
be detected, and the QuPath classes that are glands::

    {"layout": "folder", "mpp": 0.5, "val_fraction": 0.2, "test_fraction": 0.0, "seed": 0,
     "splits": {"test": ["a", "b"]}, "images": {"a": {"group": "patient-1", "grade": "benign", "mpp": 0.25}},
     "classes": ["Gland"]}

Every field is optional; an unknown field or a value of the wrong type is one :class:`DatasetError` line naming
the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

SPEC_FILE = "dataset.json"
LAYOUTS = ("glas", "crag", "folder", "qupath")
DEFAULT_VAL_FRACTION = 0.2
_KEYS = {"layout", "mpp", "splits", "val_fraction", "test_fraction", "seed", "images", "classes"}
_IMAGE_KEYS = {"mpp", "group", "grade"}


@dataclass(frozen=True)
class ImageInfo:
    """What ``dataset.json`` says of one image (None: not given)."""

    mpp: float | None = None
    group: str | None = None
    grade: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``dataset.json`` (defaults: no file, or fields left out)."""

    layout: str | None = None
    mpp: float | None = None
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = 0.0
    seed: int = 0
    images: Mapping[str, ImageInfo] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    path: Path | None = None

    def info(self, stem: str) -> ImageInfo:
        """The per-image entry of ``stem`` (empty when it has none)."""
        return self.images.get(stem, ImageInfo())


def _mpp(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 100:
        raise DatasetError(f"{where} must be micrometres per pixel between 0.01 and 100, got {value!r}")
    return float(value)


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise DatasetError(f"{where} must be a fraction in [0, 1), got {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise DatasetError(f"{where} must be a non-empty string, got {value!r}")
    return str(value).strip()


def _images(raw: Any, where: str) -> dict[str, ImageInfo]:
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: 'images' must map image stems to {{mpp, group, grade}}")
    out = {}
    for stem, entry in raw.items():
        at = f"{where}: images.{stem}"
        if not isinstance(entry, dict) or set(entry) - _IMAGE_KEYS:
            extra = sorted(set(entry) - _IMAGE_KEYS) if isinstance(entry, dict) else []
            raise DatasetError(
                f"{at} must be an object with mpp, group, grade{f'; not {extra}' if extra else ''}"
            )
        out[stem] = ImageInfo(
            mpp=_mpp(entry["mpp"], f"{at}.mpp") if "mpp" in entry else None,
            group=_text(entry["group"], f"{at}.group") if "group" in entry else None,
            grade=_text(entry["grade"], f"{at}.grade") if "grade" in entry else None,
        )
    return out


def _splits(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in raw.values()
    ):
        raise DatasetError(f"{where}: 'splits' must map split names to lists of image stems")
    seen: dict[str, str] = {}
    for split, stems in raw.items():
        if not split or split == "all":
            raise DatasetError(f"{where}: {split!r} cannot name a split")
        for stem in stems:
            if stem in seen:
                raise DatasetError(f"{where}: {stem} is listed in both {seen[stem]} and {split}")
            seen[stem] = split
    return {k: tuple(v) for k, v in raw.items()}


def read_json(path: Path, what: str = "JSON") -> Any:
    """The JSON document in ``path``.

    Raises:
        DatasetError: unreadable, or not valid ``what`` (one line naming the file and the place).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid {what} ({e.msg}, line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot be read ({e})") from None


def _load_json(path: Path) -> dict:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: must hold a JSON object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise DatasetError(f"{path}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    return raw


def read_spec(root: Path) -> DatasetSpec:
    """``root/dataset.json`` parsed and checked, or the defaults when the folder has none.

    Raises:
        DatasetError: invalid JSON, an unknown field or a bad value (one line naming the file and the field).
    """
    path = root / SPEC_FILE
    if not path.is_file():
        return DatasetSpec()
    raw = _load_json(path)
    layout = raw.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise DatasetError(f"{path}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"{path}: seed must be a whole number >= 0, got {seed!r}")
    classes = raw.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise DatasetError(f"{path}: classes must be a list of QuPath class names")
    spec = DatasetSpec(
        layout=layout,
        mpp=_mpp(raw["mpp"], f"{path}: mpp") if "mpp" in raw else None,
        splits=_splits(raw.get("splits", {}), str(path)),
        val_fraction=_fraction(raw.get("val_fraction", DEFAULT_VAL_FRACTION), f"{path}: val_fraction"),
        test_fraction=_fraction(raw.get("test_fraction", 0.0), f"{path}: test_fraction"),
        seed=seed,
        images=_images(raw.get("images", {}), str(path)),
        classes=tuple(classes) if classes is not None else None,
        path=path,
    )
    if spec.val_fraction + spec.test_fraction >= 1:
        raise DatasetError(f"{path}: val_fraction + test_fraction must stay below 1")
    return spec


def assign_splits(
    names: Sequence[str], groups: Mapping[str, str | None], spec: DatasetSpec, fixed: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The split of every name, and one line per listed stem that the folder lacks.

    How it works: a name listed in ``spec.splits`` goes there; else a split the layout fixes (``fixed``, e.g.
    CRAG's ``valid/`` is ``test``); the rest is shared out by group (a name without a group is its own group):
    the groups in a seeded random order fill ``test`` up to ``test_fraction`` of them (unless ``test`` is
    listed), then ``val`` up to ``val_fraction`` (at least one group; unless ``val`` is listed), the rest is
    ``train``, which keeps at least one group. A group is never cut between ``train``, ``val`` and ``test``.
    """
    where = spec.path or Path(SPEC_FILE)
    listed = {stem: split for split, stems in spec.splits.items() for stem in stems}
    known = set(names)
    problems = [
        f"{where}: {stem} (split {split}) is not an annotated image of the folder"
        for stem, split in listed.items()
        if stem not in known
    ]
    out = {n: listed.get(n) or fixed[n] for n in names if n in listed or n in fixed}
    rest = [n for n in names if n not in out]
    by_group: dict[str, list[str]] = {}
    for n in rest:
        by_group.setdefault(groups.get(n) or f"\0{n}", []).append(n)
    keys = sorted(by_group)
    order = [keys[i] for i in np.random.default_rng(spec.seed).permutation(len(keys))]
    quotas = [
        ("test", 0 if "test" in spec.splits else math.floor(spec.test_fraction * len(rest) + 0.5)),
        ("val", 0 if "val" in spec.splits else _val_quota(spec.val_fraction, len(rest))),
    ]
    taken = {"test": 0, "val": 0}
    for key in order:
        split = next((s for s, q in quotas if taken[s] < q), "train")
        if split != "train" and key == order[-1] and not any(out.get(n) == "train" for n in rest):
            split = "train"  # keep one group to train on
        taken[split] = taken.get(split, 0) + len(by_group[key])
        out.update(dict.fromkeys(by_group[key], split))
    return out, problems


def _val_quota(fraction: float, n: int) -> int:
    """Images for ``val``: ``fraction`` of ``n`` rounded, at least one when the fraction is above 0."""
    return max(1, math.floor(fraction * n + 0.5)) if fraction > 0 and n > 1 else 0
