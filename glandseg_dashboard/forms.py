"""The Train page's run form: one widget per RunConfig field, generated from the dataclass, with human labels,
units and help lines (:mod:`glandseg_dashboard.field_help`), and progress wording.

``field_specs`` and ``config_from_values`` are plain functions (tested on their own); ``config_widget`` draws
one spec as a Streamlit widget; ``run_folder`` and ``run_form`` are the layout that a new training and a
fine-tune share on the Train page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import streamlit as st

from glandseg_core.config import RunConfig, config_from_dict, config_to_dict, rule_for
from glandseg_core.registry import kind_names

from . import field_help, jobs, safepaths


def groups(cfg: RunConfig) -> tuple[str, ...]:
    """The form's tabs: general fields, training fields, and the model kind's own section."""
    return ("General", "Training", cfg.kind.title)


def field_specs(cfg: RunConfig) -> list[dict[str, Any]]:
    """One spec per config field (the common ones, then the model kind's section as ``<kind>_<field>``), for
    generating a form.

    Returns:
        ``[{"name", "kind", "value", "choices", "group"}]`` in field order; kind is ``bool``, ``int``,
        ``float``, ``choice``, ``str`` or ``ints`` (a tuple, edited as "a,b,c" text); group is one of
        :func:`groups`.
    """
    specs = []
    for name, value in config_to_dict(cfg).items():
        choices = kind_names() if name == "model" else rule_for(name).choices or None
        if choices:
            kind = "choice"
        elif isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, (tuple, list)):
            kind, value = "ints", ",".join(str(v) for v in value)
        else:
            kind = {int: "int", float: "float"}.get(type(value), "str")
        prefix = name.split("_", 1)[0]
        group = "Training" if prefix == "train" else cfg.kind.title if prefix == cfg.model else "General"
        specs.append({"name": name, "kind": kind, "value": value, "choices": choices, "group": group})
    return specs


def config_from_values(values: dict[str, Any]) -> RunConfig:
    """A RunConfig from form values (``ints`` fields as "a,b,c" text).

    Raises:
        ValueError: a value is malformed or fails RunConfig's checks (one line).
    """
    d = dict(values)
    for key, value in d.items():
        try:
            field_type = rule_for(key).kind
        except ValueError:
            continue  # an unknown key: config_from_dict names it
        if field_type is tuple and isinstance(value, str):
            try:
                d[key] = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
            except ValueError:
                raise ValueError(
                    f"{key} takes whole numbers separated by commas, got {value!r}"
                ) from None
        elif field_type is int and isinstance(value, float) and value.is_integer():
            d[key] = int(value)
    if not str(d.get("name", "")).strip():
        raise ValueError("name must not be empty")
    return config_from_dict(d)


DEVICES = ("cuda", "cpu")
DEVICE_WORDS = {"cuda": "GPU (cuda)", "cpu": "CPU"}

PHASE_WORDS = {
    "setup": "setting up",
    "train": "training steps",
    "validate": "validating on val",
    "tune": "tuning post-processing on val",
    "done": "done",
}


def progress_text(status: dict[str, Any]) -> tuple[float, str]:
    """(fraction of the run done in 0..1, one-line wording) of a :func:`glandseg_dashboard.runs.run_status` dict."""
    epochs, epoch = status.get("epochs") or 0, status.get("epoch") or 0
    steps, step = status.get("steps") or 0, status.get("step") or 0
    phase, word = status.get("phase"), status["status"]
    if word == "running" and phase in ("validate", "tune"):
        frac = (epoch / epochs) if epochs else 0.0
        text = f"epoch {epoch}/{epochs} · {PHASE_WORDS[phase]}"
        if phase == "tune":
            frac, text = 1.0, f"all {epochs} epochs trained · {PHASE_WORDS[phase]}"
    elif word in ("running", "dead") and epochs and steps:
        frac, text = (
            (max(epoch, 1) - 1 + step / steps) / epochs,
            f"epoch {epoch}/{epochs} · step {step}/{steps}",
        )
    elif word == "starting":
        frac, text = (epoch / epochs if epochs else 0.0), "starting (loading data and model)"
    else:
        frac = 1.0 if word == "finished" else epoch / epochs if epochs else 0.0
        text = f"{epoch}/{epochs or '?'} epochs done"
        if word == "stopped" and phase in PHASE_WORDS:
            text = f"{text} · stopped while {PHASE_WORDS[phase]}"
    return min(1.0, max(0.0, frac)), f"{word} · {text}"


def phase_progress(status: dict[str, Any]) -> tuple[float, str] | None:
    """(fraction, wording) of the phase in progress (``done`` of ``total`` ``unit``), or None when none runs."""
    total, done = status.get("total") or 0, status.get("done") or 0
    if status["status"] != "running" or not total or status.get("phase") not in PHASE_WORDS:
        return None
    text = f"{PHASE_WORDS[status['phase']]}: {done}/{total} {status.get('unit') or ''}".strip()
    return min(1.0, done / total), text


def duration(seconds: float | None) -> str:
    """``"about 40 s"``, ``"about 12 min"``, ``"about 3 h 20 min"``; ``"?"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"


def config_widget(spec: dict[str, Any], key: str, model: str = "") -> Any:
    """One widget for a :func:`field_specs` entry, by its kind, with its human label, unit and help line
    (:mod:`glandseg_dashboard.field_help`; "· poster" marks the poster's values of a ``model`` run); returns the widget's value."""
    name, kind, value = spec["name"], spec["kind"], spec["value"]
    model = model or str(spec.get("model", ""))
    label, help_ = field_help.label(name, value, model), field_help.help_text(name, value, model)
    if kind == "bool":
        return st.checkbox(label, value, key=key, help=help_)
    if kind == "choice":
        return st.selectbox(
            label, spec["choices"], index=spec["choices"].index(value), key=key, help=help_
        )
    if kind in ("int", "float"):
        fmt = {"step": 1} if kind == "int" else {"format": "%g"}
        return st.number_input(label, value=value, key=key, help=help_, **fmt)
    return st.text_input(label, value, key=key, help=help_)


class RunForm(NamedTuple):
    """What the run form returns: field values, workers, time budget (minutes), device (None: the trainer's
    default), and which button was clicked."""

    values: dict[str, Any]
    workers: int
    budget: float
    device: str | None
    submitted: bool
    estimate: bool


def run_form(
    preset: str, cfg: RunConfig, gpu: bool, cpus: int, *, key: str = "", estimate: bool = True
) -> RunForm:
    """The form of a new run, prefilled from ``cfg``; ``key`` prefixes its widget keys (two forms of one
    preset on a page), ``estimate`` offers the epoch-time estimate. With a GPU (``gpu``) it asks which device
    trains (cuda first), else the trainer uses the CPU."""
    with st.form(f"{key}train_form_{preset}"):
        st.caption(
            "The **?** beside a field says what it does. **· poster** marks a value copied from the poster "
            "(Mask R-CNN: ResNet-50, SGD 0.005, momentum 0.9, weight decay 0.0005, ×0.1 every 3 epochs, "
            "batch 2, 200 epochs; U-Net: 15 epochs); the help line names the poster's value where it differs."
        )
        names = groups(cfg)
        tabs = dict(zip(names, st.tabs(list(names)), strict=True))
        values = {}
        for spec in field_specs(cfg):
            with tabs[spec["group"]]:
                values[spec["name"]] = config_widget(
                    spec, f"{key}cfg_{preset}_{spec['name']}", cfg.model
                )
        device = _device_choice(gpu, f"{key}device_{preset}")
        c1, c2 = st.columns(2)
        workers = c1.number_input(
            "Augmentation workers",
            min_value=0,
            max_value=64,
            step=1,
            key=f"{key}workers_{preset}",
            value=min(6, cpus - 1) if gpu else 0,
            help="processes that build augmented batches, so a GPU is not kept waiting (0 = in the trainer)",
        )
        budget = c2.number_input(
            "Time budget (minutes, 0 = none)",
            min_value=0.0,
            step=5.0,
            format="%g",
            key=f"{key}budget_{preset}",
            help="after two epochs the run times itself and shortens its schedule to end within the budget",
        )
        c1, c2 = st.columns(2)
        submitted = c1.form_submit_button("Start training", type="primary")
        clicked = estimate and c2.form_submit_button(
            "Estimate time per epoch", help="times 2-3 training steps of these values in a child process"
        )
    return RunForm(values, int(workers), float(budget), device, submitted, bool(clicked))


def _device_choice(gpu: bool, key: str) -> str | None:
    """The device a run trains on: a choice with a GPU (cuda first), else None (the CPU, said above the form)."""
    if not gpu:
        return None
    return st.radio(
        "Train on",
        DEVICES,
        horizontal=True,
        key=key,
        format_func=DEVICE_WORDS.get,
        help="the GPU is many times faster; the CPU leaves the GPU free for something else",
    )


def confirm_replace(found: list[str], where: str, key: str) -> bool:
    """A checkbox that names what an action would replace in ``where``; True when nothing would be replaced
    or the box is ticked."""
    if not found:
        return True
    return st.checkbox(f"Replace {', '.join(found)} in {where}", key=key)


class RunFolder(NamedTuple):
    """The run folder a form will start in (None: the name was refused, the error shown) and the files of an
    earlier attempt there that the user agreed to replace."""

    path: Path | None
    replace: list[str]

    def checked(self) -> Path:
        """The folder, or ValueError when its name was refused."""
        if self.path is None:
            raise ValueError("choose a valid run folder name first")
        return self.path


def run_folder(runs_root: Path, default: str, key: str, ok_key: str, note: str = "") -> RunFolder:
    """The "Run folder name" field of a new run in ``runs_root`` (widget ``key``, prefilled with ``default``).

    A refused name shows its one-line error; a folder that holds a run (``last.pt``) shows a warning and
    replaces nothing; an earlier attempt's files there need a tick in a box (key ``ok_key`` + the name) that
    names them, with ``note`` after the folder's name.
    """
    name = st.text_input("Run folder name", default, key=key, help=f"a new folder in {runs_root}")
    try:
        path = safepaths.inside(runs_root, name, "Run folder name")
    except ValueError as e:
        st.error(str(e))
        return RunFolder(None, [])
    if (path / "last.pt").exists():
        st.warning(f"`{path.name}` holds a run already: resume it below, or choose another name.")
        return RunFolder(path, [])
    found = jobs.previous_attempt(path)
    if found and confirm_replace(found, f"{path.name}/{note}", f"{ok_key}{name}"):
        return RunFolder(path, found)
    return RunFolder(path, [])
