"""Post-processing thresholds (tuned on ``val``, saved as ``postprocess.json``) and their validation.

Each model kind names its settings class (``ModelKind.post_type``): a frozen dataclass of bools, whole-number
pixel areas and fractions in [0, 1]. The built-in kinds' classes are defined here. Areas are in pixels of the
input image. Loading validates every field's type and range, so a hand-edited or
damaged file gives one line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .config import RunConfig, kind_of
from .errors import ConfigError
from .files import atomic_write_text


@dataclass(frozen=True)
class UNetPost:
    """U-Net post-processing thresholds (tuned on ``val``; areas in pixels of the input image)."""

    fg_thresh: float = 0.5
    contour_thresh: float = 0.5
    min_marker_area: int = 40
    min_area: int = 150
    instance: bool = True
    marker_dist: float = 0.4  # separation head only: markers where the per-gland distance exceeds this


@dataclass(frozen=True)
class MaskRCNNPost:
    """Mask R-CNN post-processing thresholds (tuned on ``val``; areas in pixels of the input image)."""

    score_thresh: float = 0.5
    mask_thresh: float = 0.5
    min_area: int = 150
    min_visible: float = 0.5  # drop an instance when less than this share of its mask is still unclaimed


# Any kind's settings: a frozen dataclass (UNetPost, MaskRCNNPost or a plugin kind's own class).
Post = Any
_MAX_AREA = 10**9  # pixels; far above any gland, small enough to stay an exact float


def _check_value(kind: str, name: str, value: Any, default: Any) -> Any:
    """One field: bool stays bool; ints accept integral floats (JSON ``150.0``); fractions lie in [0, 1]."""
    where = f"{kind} post-processing field {name!r}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(default, int):
        if value != int(value) or not 0 <= value <= _MAX_AREA:
            raise ConfigError(
                f"{where} must be a whole number of pixels in [0, {_MAX_AREA}], got {value!r}"
            )
        return int(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where} must lie in [0, 1], got {value!r}")
    return float(value)


def post_from_dict(kind: str, d: dict[str, Any]) -> Post:
    """Build the post-processing settings of model ``kind`` from a JSON dict.

    Raises:
        ConfigError: for an unknown kind or key, or a value of the wrong type or out of range.
    """
    cls = kind_of(kind).post_type
    if not isinstance(d, dict):
        raise ConfigError(
            f"{kind} post-processing settings must be a JSON object, got {type(d).__name__}"
        )
    defaults = cls()
    known = {f.name for f in fields(cls)}
    if set(d) - known:
        raise ConfigError(
            f"unknown post-processing keys for {kind}: {', '.join(sorted(set(d) - known))}"
        )
    return cls(**{k: _check_value(kind, k, v, getattr(defaults, k)) for k, v in d.items()})


def load_post(path: str | Path, kind: str) -> Post:
    """Read and validate a ``postprocess.json``.

    Raises:
        ConfigError: naming the file and the problem.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read post-processing settings ({e})") from None
    try:
        return post_from_dict(kind, d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_post(post: Post, path: str | Path) -> None:
    """Write the settings as ``postprocess.json`` (atomically)."""
    atomic_write_text(path, json.dumps(asdict(post), indent=2) + "\n")


def default_post(cfg: RunConfig) -> Post:
    """Untuned post-processing for a config (used during training)."""
    return cfg.kind.default_post(cfg)
