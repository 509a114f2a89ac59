"""Run configuration: one frozen dataclass per run, with the model kind's own section, presets, JSON load/save.

A :class:`RunConfig` holds what every run has (name, model kind, pixel size, training settings, pretrained start)
and ``params``: the section of its model kind, a frozen dataclass of that kind's own typed fields (a
:class:`Section` subclass, declared by the kind: ``UNetParams``, ``MaskRCNNParams``, a plugin's). A section
field is written ``<kind>_<field>`` outside the section (``unet_base``): in ``config.json``, in ``--set`` and in
the dashboard's forms, so ``config.json`` files written before sections existed still load.

Every field is checked for type and range whenever a config is made (from Python, ``config.json`` or ``--set
KEY=VALUE``), so a hand-edited or damaged value gives one line naming the field, the value and what is allowed,
and no size reaches a network or a batch unchecked (``unet_base=100000`` once tried to allocate 360 GB).
Whole-number fields accept integral floats (JSON ``16.0`` is 16); strings and ``null`` are refused.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from .errors import ConfigError
from .files import atomic_write_text
from .registry import ModelKind, all_kinds, get_kind, kind_names
from .rules import Rule, Section, check_value, float_rule, int_rule

__all__ = [
    "PRESETS",
    "RunConfig",
    "Rule",
    "Section",
    "check_field",
    "coerce_overrides",
    "config_from_dict",
    "config_to_dict",
    "get_preset",
    "load_config",
    "replace_config",
    "save_config",
]

AUGMENT_POLICIES = ("none", "flip", "strong", "strong-mirror")
SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; saved as ``config.json`` next to the weights.

    ``params`` is the model kind's section (None: the kind's defaults; a dict of its fields is checked).
    """

    name: str = "glandseg-unet"
    model: str = "unet"
    data_mpp: float = 0.62  # micrometres per pixel of the training images (GlaS: 20x, 0.62 um/px)
    params: Any = None
    # --- training
    train_epochs: int = 40
    train_batch_size: int = 8
    train_steps_per_epoch: int = 0  # 0 = one pass over the training images
    train_crop_size: int = 256  # crop side (at the network's input scale); 0 = whole images
    train_optimizer: str = "adamw"
    train_lr: float = 1e-3
    train_momentum: float = 0.9
    train_weight_decay: float = 1e-4
    train_lr_schedule: str = "cosine"
    train_lr_step_epochs: int = 3
    train_lr_gamma: float = 0.1
    train_warmup_steps: int = 100
    train_grad_clip: float = 10.0  # 0 = off
    train_augment: str = "strong"
    train_amp: bool = True  # bf16 autocast on CPUs with AMX, fp16/bf16 on CUDA
    train_seed: int = 0
    train_val_every: int = 1
    train_max_images: int = 0  # 0 = all; >0 keeps the first N training images (smoke tests)
    # start from these weights (a run's best.pt/last.pt or a model's weights.pt); "" = scratch
    train_init: str = ""
    pretrained: str = "none"  # or coco, coco-v2, imagenet, a file: models/pretrained.py

    def __post_init__(self) -> None:
        kind = kind_of(self.model)
        for f in fields(self):
            if f.name != "params":
                object.__setattr__(self, f.name, check_field(f.name, getattr(self, f.name)))
        object.__setattr__(self, "params", _section(kind, self.params))
        kind.check(self)

    @property
    def kind(self) -> ModelKind:
        """The model kind object of this run (``registry.get_kind(self.model)``)."""
        return get_kind(self.model)


_RULES: dict[str, Rule] = {
    "name": Rule(str, folder_name=True),  # the default run folder is runs/<name>
    "model": Rule(str),  # a registered kind: checked by kind_of
    "data_mpp": float_rule(0.01, 100.0, lo_open=True),
    "train_epochs": int_rule(1, 100_000),
    "train_batch_size": int_rule(1, 64),
    "train_steps_per_epoch": int_rule(0, 100_000),
    "train_crop_size": int_rule(0, 2048),
    "train_optimizer": Rule(str, choices=OPTIMIZERS),
    "train_lr": float_rule(
        0.0, 10.0
    ),  # 0 is allowed: a frozen run checks that train_init loads the weights
    "train_momentum": float_rule(0.0, 1.0),
    "train_weight_decay": float_rule(0.0, 1.0),
    "train_lr_schedule": Rule(str, choices=SCHEDULES),
    "train_lr_step_epochs": int_rule(1, 100_000),
    "train_lr_gamma": float_rule(0.0, 1.0),
    "train_warmup_steps": int_rule(0, 10_000_000),
    "train_grad_clip": float_rule(0.0, 1e6),
    "train_augment": Rule(str, choices=AUGMENT_POLICIES),
    "train_amp": Rule(bool),
    "train_seed": int_rule(0, 2**31 - 1),
    "train_val_every": int_rule(1, 100_000),
    "train_max_images": int_rule(0, 100_000),
    "train_init": Rule(str),
    "pretrained": Rule(str),  # checked against the model in models/pretrained.py (paths are allowed)
}
COMMON_FIELDS = tuple(_RULES)


def kind_of(model: Any) -> ModelKind:
    """The registered kind called ``model``.

    Raises:
        ConfigError: not a registered kind's name (one line listing them).
    """
    try:
        return get_kind(model) if isinstance(model, str) else get_kind(str(model))
    except KeyError:
        raise ConfigError(f"model must be one of {kind_names()}, got {model!r}") from None


def _section(kind: ModelKind, params: Any) -> Any:
    """``params`` as ``kind``'s section: its defaults for None, checked fields for a dict."""
    if params is None:
        return kind.params_type()
    if isinstance(params, kind.params_type):
        return params
    if isinstance(params, dict):
        known = {f.name for f in fields(kind.params_type)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(f'{kind.name}_{k}' for k in unknown)}")
        return kind.params_type(**params)
    raise ConfigError(
        f"{type(params).__name__} settings do not fit a {kind.name} model ({kind.params_type.__name__})"
    )


def rule_for(name: str) -> Rule:
    """The rule of a common field or of any kind's qualified section field (``unet_base``).

    Raises:
        ConfigError: an unknown field.
    """
    if name in _RULES:
        return _RULES[name]
    for kind in all_kinds():
        prefix = f"{kind.name}_"
        section = cast(type[Section], kind.params_type)
        if name.startswith(prefix) and name[len(prefix) :] in section.RULES:
            return section.RULES[name[len(prefix) :]]
    raise ConfigError(f"unknown config key {name!r}")


def check_field(name: str, value: Any) -> Any:
    """Check one config value (common or qualified section field) against its rule; returns it in the field's
    own type.

    Raises:
        ConfigError: one line naming the field, the value and what is allowed; or an unknown field.
    """
    return check_value(name, value, rule_for(name))


class _Presets(Mapping[str, RunConfig]):
    """Every registered kind's presets, by name (a live view: a plugin's presets appear once it registers)."""

    def _all(self) -> dict[str, RunConfig]:
        out: dict[str, RunConfig] = {}
        for kind in all_kinds():
            out.update(kind.presets())
        return out

    def __getitem__(self, name: str) -> RunConfig:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


PRESETS: Mapping[str, RunConfig] = _Presets()


def get_preset(name: str) -> RunConfig:
    """Return the preset called ``name``.

    Raises:
        KeyError: with the list of valid names.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as a flat JSON-ready dict: common fields, then the section's fields as ``<kind>_<field>``."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if f.name == "params":
            for p in fields(cfg.params):
                value = getattr(cfg.params, p.name)
                out[f"{cfg.model}_{p.name}"] = list(value) if isinstance(value, tuple) else value
        else:
            out[f.name] = getattr(cfg, f.name)
    return out


def _split_keys(d: dict[str, Any], kind: ModelKind) -> tuple[dict[str, Any], dict[str, Any]]:
    """(common fields, section fields) of a flat or nested config dict; other kinds' fields are dropped (old
    ``config.json`` files carry every kind's fields)."""
    common: dict[str, Any] = {}
    section: dict[str, Any] = dict(d["params"]) if isinstance(d.get("params"), dict) else {}
    others = {k.name: k for k in all_kinds() if k.name != kind.name}
    unknown = []
    for key, value in d.items():
        if key == "params":
            if not isinstance(value, dict) and value is not None:
                raise ConfigError(f"params must be a JSON object, got {type(value).__name__}")
            continue
        if key in _RULES:
            common[key] = value
        elif key == kind.name and isinstance(value, dict):
            section.update(value)
        elif key.startswith(f"{kind.name}_"):
            section[key[len(kind.name) + 1 :]] = value
        elif not any(
            key.startswith(f"{o}_") and key[len(o) + 1 :] in cast(type[Section], k.params_type).RULES
            for o, k in others.items()
        ):
            unknown.append(key)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return common, section


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a JSON dict (flat ``<kind>_<field>`` keys, or the section under ``params`` or the
    kind's name); unknown keys fail loudly, missing ones take the defaults.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type or out of range (one line naming it).
    """
    if not isinstance(d, dict):
        raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
    kind = kind_of(d.get("model", RunConfig.model))
    common, section = _split_keys(d, kind)
    return RunConfig(**common, params=section)


def replace_config(cfg: RunConfig, **changes: Any) -> RunConfig:
    """``cfg`` with ``changes``: common fields, the kind's section fields by qualified name (``unet_base``), or
    a whole section (``params``); a change of ``model`` starts the new kind's section from its defaults.

    Raises:
        ConfigError: a field of another kind, or as :func:`config_from_dict`.
    """
    kind = kind_of(changes.get("model", cfg.model))
    for key in changes:
        if key not in _RULES and key != "params" and not key.startswith(f"{kind.name}_"):
            raise ConfigError(f"{key} is not a setting of a {kind.name} model")
    d = config_to_dict(cfg)
    if kind.name != cfg.model or "params" in changes:  # the section starts afresh
        d = {k: v for k, v in d.items() if k in _RULES}
    params = changes.pop("params", None)
    if params is not None:
        d["params"] = dataclasses.asdict(params) if isinstance(params, Section) else params
    return config_from_dict({**d, **changes})


def _parse(raw: str) -> Any:
    """A command-line value as a number when it reads as one, else the string itself."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def coerce_overrides(overrides: dict[str, str]) -> dict[str, Any]:
    """Turn ``{"train_lr": "0.01"}`` strings (from the command line) into checked, typed values; section fields
    are named ``<kind>_<field>`` (``unet_base=16``).

    Raises:
        ConfigError: an unknown key, or a value of the wrong type or out of range: the same one-line
            message as in ``config.json`` (see :func:`check_field`).
    """
    out: dict[str, Any] = {}
    for key, raw in overrides.items():
        kind = rule_for(key).kind
        if kind is bool:
            value: Any = {"true": True, "1": True, "false": False, "0": False}.get(
                raw.strip().lower(), raw
            )
        elif kind is tuple:
            value = [_parse(v) for v in raw.split(",")]
        else:
            value = raw if kind is str else _parse(raw)
        out[key] = check_field(key, value)
    return out


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as JSON (atomically)."""
    atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=2) + "\n")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a ``config.json`` written by :func:`save_config` (or by glandseg before sections).

    Raises:
        ConfigError: naming the file and the problem (unreadable, unknown key, bad field value) in one line.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
