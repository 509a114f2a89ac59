"""Words for the Train page's form: a human label, a unit and a help line for every RunConfig field, and the
poster's values, which each model kind declares (``ModelKind.poster_values``; ``poster-*`` presets copy them).

A field missing here still gets a readable label (its name without prefix), so a new config field never shows
as a bare identifier; ``tests/test_ui_forms.py`` checks that every field has an entry. No streamlit here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

from glandseg_core.config import COMMON_FIELDS, RunConfig
from glandseg_core.errors import ConfigError
from glandseg_core.models.pretrained import cache_file, start_kind, weights_for
from glandseg_core.registry import all_kinds, get_kind, kind_names


class FieldWords(NamedTuple):
    label: str
    unit: str  # "" when the value has no unit
    help: str


FIELDS: dict[str, FieldWords] = {
    "name": FieldWords("Recipe name", "", "Saved in config.json and shown in the Runs table and the model card."),
    "model": FieldWords("Model", "", "The kind of network: unet (semantic U-Net with a contour head), maskrcnn (Mask R-CNN instances), or a plugin's."),
    "data_mpp": FieldWords("Pixel size of the training images", "µm/px",
                           "GlaS is 20x, 0.62 µm per pixel. Other images are rescaled to this size before segmenting."),
    "train_epochs": FieldWords("Epochs", "epochs", "How many epochs to train; a run can be stopped and resumed."),
    "train_batch_size": FieldWords("Batch size", "images per step", "Images (or crops) per optimizer step."),
    "train_steps_per_epoch": FieldWords("Steps per epoch", "steps", "0 = one pass over the training images."),
    "train_crop_size": FieldWords("Training crop side", "px",
                                  "U-Net: random square crops of this side at the U-Net's scale; 0 = whole images."),
    "train_optimizer": FieldWords("Optimizer", "", "sgd: SGD with momentum (the poster's); adamw: AdamW."),
    "train_lr": FieldWords("Learning rate", "", "The initial learning rate (after warm-up)."),
    "train_momentum": FieldWords("Momentum", "", "SGD only."),
    "train_weight_decay": FieldWords("Weight decay", "", "L2 penalty on the weights."),
    "train_lr_schedule": FieldWords("Learning-rate schedule", "",
                                    "step: multiply by the decay factor every N epochs (staircase); cosine: smooth decay to 1 %."),
    "train_lr_step_epochs": FieldWords("Decay every", "epochs", "step schedule only: epochs between decays."),
    "train_lr_gamma": FieldWords("Decay factor", "×", "step schedule only: the rate is multiplied by this at each decay."),
    "train_warmup_steps": FieldWords("Warm-up", "steps", "The learning rate rises linearly from 0 over these steps."),
    "train_grad_clip": FieldWords("Gradient clipping", "norm", "Gradients are scaled down to at most this norm; 0 = off."),
    "train_augment": FieldWords("Augmentation", "",
                                "none; flip: random flips; strong: flips, rotations, colour and elastic changes; "
                                "strong-mirror: strong, with the image mirrored where a crop reaches past its edge."),
    "train_amp": FieldWords("Mixed precision", "", "bf16 on CPUs with AMX and on CUDA: faster, same accuracy."),
    "train_seed": FieldWords("Random seed", "", "Same seed, same data: the same run."),
    "train_val_every": FieldWords("Validate every", "epochs", "Score on val every N epochs (and after the last)."),
    "train_max_images": FieldWords("Training images used at most", "images", "0 = all; a small number for a quick test."),
    "train_init": FieldWords("Start from weights file", "path",
                             "A run's best.pt/last.pt or a model's weights.pt; empty = the pretrained start below."),
    "pretrained": FieldWords("Pretrained start", "",
                             "none: random weights; coco / coco-v2: Mask R-CNN R50-FPN trained on COCO; imagenet: an "
                             "ImageNet backbone; or a path to a local file. Read from the torch cache (TORCH_HOME)."),
}  # fmt: skip


def _kind_words() -> dict[str, FieldWords]:
    """Every registered model kind's words for its own section fields (``unet_base``, ...)."""
    return {k: FieldWords(*w) for kind in all_kinds() for k, w in kind.field_words().items()}


def words(name: str) -> FieldWords:
    """The words of field ``name`` (a readable fallback for a field not listed)."""
    found = FIELDS.get(name) or _kind_words().get(name)
    if found:
        return found
    prefixes = ("train", *kind_names())
    bare = name.split("_", 1)[1] if name.split("_", 1)[0] in prefixes and "_" in name else name
    return FieldWords(bare.replace("_", " ").capitalize(), "", f"config field {name}")


def poster_value(name: str, model: str) -> tuple[Any, str] | None:
    """(the poster's value, its words) for field ``name`` of a ``model`` run, or None when the poster gives none."""
    try:
        return get_kind(model).poster_values().get(name)
    except KeyError:
        return None


def is_poster_value(name: str, value: Any, model: str) -> bool:
    """Whether ``value`` is the poster's own value for field ``name``."""
    poster = poster_value(name, model)
    if poster is None:
        return False
    if isinstance(poster[0], float) and isinstance(value, (int, float)):
        return abs(float(value) - poster[0]) <= 1e-12 * max(1.0, abs(poster[0]))
    return value == poster[0]


def label(name: str, value: Any, model: str) -> str:
    """The widget label: human words, the unit in brackets, and "· poster" when the value is the poster's."""
    w = words(name)
    text = f"{w.label} ({w.unit})" if w.unit else w.label
    return f"{text} · poster" if is_poster_value(name, value, model) else text


def help_text(name: str, value: Any, model: str) -> str:
    """The widget's help line: what the field does, and what the poster used (quoted) where it says."""
    w = words(name)
    text = f"{w.help}  \nConfig field `{name}`."
    poster = poster_value(name, model)
    if poster is not None:
        mark = (
            "this is the poster's value"
            if is_poster_value(name, value, model)
            else f"the poster used {poster[0]!r}"
        )
        text += f"  \nPoster: “{poster[1]}” ({mark})."
    return text


def missing_fields() -> list[str]:
    """Config fields without words, here or in their kind (the tests keep this empty)."""
    names = [n for n in COMMON_FIELDS]
    for kind in all_kinds():
        names += [f"{kind.name}_{f.name}" for f in dataclasses.fields(kind.params_type)]
    known = {**FIELDS, **_kind_words()}
    return [n for n in names if n not in known]


def start_words(cfg: RunConfig) -> tuple[bool, str]:
    """(whether ``cfg.pretrained`` can be loaded now without a download, what it is in plain words): for a
    missing file, which file and the folder it is looked for in (torch's cache, ``TORCH_HOME``); no
    command-line syntax (issue #22)."""
    kind = start_kind(cfg)
    if kind == "none":
        return True, "random weights: the network trains from scratch"
    try:
        weights = weights_for(cfg)
    except ConfigError as e:
        return False, f"does not fit this model ({e})"
    if weights is None:
        path = Path(cfg.pretrained).expanduser()
        if path.is_file():
            return True, f"the weights in {path}"
        return False, f"the weights file {path} does not exist"
    path = cache_file(weights)
    if path.is_file():
        return True, f"found on this computer: {path}"
    mb = weights.meta.get("_file_size")
    size = f" ({mb:.0f} MB)" if mb else ""
    return False, (
        f"the weights file **{path.name}**{size} is not on this computer. It is looked for in the folder "
        f"**{path.parent}** (torch's download cache; the TORCH_HOME environment variable moves it). Starting "
        f"downloads it from {weights.url} when this computer is online; offline, copy the file into that "
        "folder first, or train from scratch instead."
    )
