"""Typed config fields: what each field allows (:class:`Rule`), the one check of a value against it, and
:class:`Section`, the base of a model kind's own config section.

Whole-number fields accept integral floats (JSON ``16.0`` is 16); strings and ``null`` are refused where a
number is expected; every refusal is one line naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import ConfigError

MAX_NAME = 100  # characters of a folder name field (file systems allow 255 bytes)


@dataclass(frozen=True)
class Rule:
    """What one field allows: its type, an inclusive range for numbers (``lo_open``: lo excluded), choices,
    and for tuples of whole numbers their ``length``; ``folder_name``: a string that names one folder (a run's
    default folder is ``runs/<name>``), see :func:`check_folder_name`."""

    kind: type
    lo: float = 0
    hi: float = 0
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    length: int = 0
    folder_name: bool = False

    def allowed(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.folder_name:
            return FOLDER_NAME
        if self.choices:
            return f"one of {self.choices}"
        if self.kind is str:
            return "a string"
        what = "a whole number" if self.kind in (int, tuple) else "a number"
        return f"{what} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


FOLDER_NAME = (
    f"a plain folder name: a string of 1 to {MAX_NAME} characters "
    "without '/', '\\', ':', a leading '.' or control characters"
)


def check_folder_name(name: str, value: Any) -> str:
    """``value`` when it names one folder inside another: not empty, at most ``MAX_NAME`` characters, no
    ``/``, ``\\`` or ``:`` (a drive on Windows), no leading ``.`` (``.``, ``..``, hidden), no control
    characters.

    Raises:
        ConfigError: one line naming the field, the value and what is allowed.
    """
    ok = (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME
        and not value.startswith(".")
        and not any(c in "/\\:" or ord(c) < 32 or ord(c) == 127 for c in value)
    )
    if not ok:
        raise ConfigError(f"{name} must be {FOLDER_NAME}, got {value!r}")
    return value


def int_rule(lo: int, hi: int) -> Rule:
    """A whole number in [lo, hi]."""
    return Rule(int, lo, hi)


def float_rule(lo: float, hi: float, lo_open: bool = False) -> Rule:
    """A number in [lo, hi] (or (lo, hi] when ``lo_open``)."""
    return Rule(float, lo, hi, lo_open)


def _number(name: str, value: Any, rule: Rule) -> int | float:
    """A number within ``rule``'s range; whole-number fields accept integral floats."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
    if rule.kind in (int, tuple) and value != int(value):
        raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
    too_low = value <= rule.lo if rule.lo_open else value < rule.lo
    if too_low or value > rule.hi:
        raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
    return float(value) if rule.kind is float else int(value)


def check_value(name: str, value: Any, rule: Rule) -> Any:
    """``value`` checked against ``rule`` and returned in the field's own type.

    Raises:
        ConfigError: one line naming the field, the value and what is allowed.
    """
    if rule.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} takes true or false, got {value!r}")
        return value
    if rule.folder_name:
        return check_folder_name(name, value)
    if rule.kind is str:
        if not isinstance(value, str) or (rule.choices and value not in rule.choices):
            raise ConfigError(f"{name} must be {rule.allowed()}, got {value!r}")
        return value
    if rule.kind is tuple:
        try:
            if not isinstance(value, (list, tuple)) or len(value) != rule.length:
                raise ConfigError("wrong length")
            return tuple(_number(name, v, rule) for v in value)
        except ConfigError:
            raise ConfigError(
                f"{name} needs {rule.length} sizes, each {rule.allowed()}, got {value!r}"
            ) from None
    return _number(name, value, rule)


@dataclass(frozen=True)
class Section:
    """Base of a model kind's config section: a frozen dataclass whose fields ``RULES`` describes.

    Subclasses set ``KIND`` (the kind's name, the prefix of the fields' qualified names) and ``RULES`` (one
    :class:`Rule` per field), and may override :meth:`check` for rules across fields.
    """

    KIND: ClassVar[str] = ""
    RULES: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        for f in fields(
            self
        ):  # frozen: checked values (16.0 -> 16, a JSON list -> tuple) are set directly
            value = check_value(f"{self.KIND}_{f.name}", getattr(self, f.name), self.RULES[f.name])
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a combination of this section's values that cannot run."""
