"""Tests for glandseg_core.config: presets, JSON round trip, loud failures, command-line overrides."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from glandseg_core.config import (
    PRESETS,
    RunConfig,
    coerce_overrides,
    config_from_dict,
    get_preset,
    load_config,
    save_config,
)


def test_poster_maskrcnn_carries_the_poster_values_verbatim() -> None:
    cfg = PRESETS["poster-maskrcnn"]
    assert cfg.model == "maskrcnn"
    assert cfg.maskrcnn_backbone == "resnet50"
    assert cfg.train_optimizer == "sgd"
    assert cfg.train_lr == 0.005
    assert cfg.train_momentum == 0.9
    assert cfg.train_weight_decay == 0.0005
    assert cfg.train_lr_schedule == "step"
    assert cfg.train_lr_step_epochs == 3
    assert cfg.train_lr_gamma == 0.1
    assert cfg.train_batch_size == 2
    assert cfg.train_epochs == 200


def test_poster_unet_is_semantic_and_15_epochs() -> None:
    cfg = PRESETS["poster-unet"]
    assert cfg.model == "unet"
    assert cfg.train_epochs == 15
    assert cfg.unet_instance is False


def test_our_presets_sit_beside_the_poster_ones() -> None:
    assert {"poster-maskrcnn", "poster-unet"} <= set(PRESETS)
    for name, cfg in PRESETS.items():
        assert cfg.name == name
    # The tuned Mask R-CNN recipe derives from the poster's without changing it.
    assert PRESETS["glandseg-maskrcnn"] != PRESETS["poster-maskrcnn"]
    assert PRESETS["poster-maskrcnn"].train_optimizer == "sgd"


def test_get_preset_unknown_lists_the_valid_names() -> None:
    with pytest.raises(KeyError) as e:
        get_preset("poster-vit")
    assert "poster-maskrcnn" in str(e.value) and "poster-unet" in str(e.value)
    assert get_preset("poster-unet") is PRESETS["poster-unet"]


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["poster-unet"].train_epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_save_load_roundtrip(tmp_path: Path, name: str) -> None:
    cfg = PRESETS[name]
    path = tmp_path / "config.json"
    save_config(cfg, path)
    back = load_config(path)
    assert back == cfg
    assert isinstance(back.maskrcnn_anchor_sizes, tuple)
    assert json.loads(path.read_text())["name"] == name


def test_roundtrip_keeps_overridden_values(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        PRESETS["glandseg-unet"],
        unet_base=8,
        train_lr=3.5e-4,
        unet_instance=False,
        maskrcnn_anchor_sizes=(8, 16, 32, 64, 128),
    )
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg


def test_unknown_keys_fail_loudly(tmp_path: Path) -> None:
    d = dataclasses.asdict(PRESETS["poster-unet"])
    d["train_learnig_rate"] = 0.1  # a typo must not be silently ignored
    with pytest.raises(ValueError, match="train_learnig_rate"):
        config_from_dict(d)
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="train_learnig_rate"):
        load_config(tmp_path / "config.json")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_unreadable_config_raises_value_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="config"):
        load_config(path)


def test_missing_config_file_raises_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("model", "vit", "model must be one of"),
        ("train_augment", "extreme", "train_augment"),
        ("train_lr_schedule", "linear", "train_lr_schedule"),
        ("train_optimizer", "adam", "train_optimizer"),
        ("maskrcnn_backbone", "resnet101", "maskrcnn_backbone"),
        ("maskrcnn_anchor_sizes", (32, 64, 128), "5 sizes"),
        ("train_epochs", 0, "train_epochs"),
        ("train_batch_size", 0, "train_batch_size"),
        ("unet_scale", 0.0, "unet_scale"),
        ("unet_scale", 3.0, "unet_scale"),
    ],
)
def test_invalid_values_raise(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RunConfig(**{field: value})
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(PRESETS["glandseg-unet"], **{field: value})


def test_coerce_overrides_types() -> None:
    out = coerce_overrides(
        {
            "train_lr": "0.01",
            "train_epochs": "3",
            "unet_instance": "false",
            "train_amp": "1",
            "maskrcnn_anchor_sizes": "8,16,32,64,128",
            "train_augment": "none",
            "unet_scale": "1",
        }
    )
    assert out == {
        "train_lr": 0.01,
        "train_epochs": 3,
        "unet_instance": False,
        "train_amp": True,
        "maskrcnn_anchor_sizes": (8, 16, 32, 64, 128),
        "train_augment": "none",
        "unet_scale": 1.0,
    }
    assert (
        type(out["train_epochs"]) is int
        and type(out["train_lr"]) is float
        and type(out["unet_scale"]) is float
    )
    cfg = dataclasses.replace(PRESETS["glandseg-unet"], **out)
    assert cfg.train_epochs == 3 and cfg.unet_instance is False


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"train_learning_rate": "0.1"}, "unknown config key"),
        ({"unet_instance": "yes"}, "true or false"),
        ({"train_epochs": "2.5"}, "invalid literal"),
        ({"train_lr": "fast"}, "could not convert"),
        ({"maskrcnn_anchor_sizes": "8,sixteen"}, "invalid literal"),
    ],
)
def test_coerce_overrides_rejects_bad_input(overrides: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        coerce_overrides(overrides)


def test_override_to_an_invalid_value_is_caught_by_the_config() -> None:
    out = coerce_overrides({"train_augment": "extreme"})  # a string: coercion accepts it ...
    with pytest.raises(ValueError, match="train_augment"):  # ... the frozen config refuses it
        dataclasses.replace(PRESETS["glandseg-unet"], **out)
