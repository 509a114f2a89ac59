"""Tests for glandseg_core.config: presets, JSON round trip, loud failures, command-line overrides."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from glandseg_core.config import (
    PRESETS,
    check_field,
    coerce_overrides,
    config_from_dict,
    config_to_dict,
    get_preset,
    load_config,
    replace_config,
    save_config,
)
from glandseg_core.errors import ConfigError


def test_poster_maskrcnn_carries_the_poster_values_verbatim() -> None:
    cfg = PRESETS["poster-maskrcnn"]
    assert cfg.model == "maskrcnn"
    assert cfg.params.backbone == "resnet50"
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
    assert cfg.params.instance is False


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
    assert back == cfg and type(back.params) is type(cfg.params)
    if cfg.model == "maskrcnn":
        assert isinstance(back.params.anchor_sizes, tuple)
    assert json.loads(path.read_text())["name"] == name


def test_roundtrip_keeps_overridden_values(tmp_path: Path) -> None:
    cfg = replace_config(
        PRESETS["glandseg-unet"],
        unet_base=8,
        train_lr=3.5e-4,
        unet_instance=False,
    )
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg


def test_unknown_keys_fail_loudly(tmp_path: Path) -> None:
    d = config_to_dict(PRESETS["poster-unet"])
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
    kind = "maskrcnn" if field.startswith("maskrcnn_") else "unet"
    preset = {"unet": "glandseg-unet", "maskrcnn": "glandseg-maskrcnn"}[kind]
    with pytest.raises(ValueError, match=needle):
        config_from_dict({"model": kind, field: value})
    with pytest.raises(ValueError, match=needle):
        replace_config(PRESETS[preset], **{field: value})


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
    out.pop("maskrcnn_anchor_sizes")
    cfg = replace_config(PRESETS["glandseg-unet"], **out)
    assert cfg.train_epochs == 3 and cfg.params.instance is False


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"train_learning_rate": "0.1"}, "unknown config key"),
        ({"unet_instance": "yes"}, "true or false"),
        ({"train_epochs": "2.5"}, "train_epochs must be a whole number"),
        ({"train_lr": "fast"}, "train_lr must be a number in [0, 10], got 'fast'"),
        ({"maskrcnn_anchor_sizes": "8,sixteen"}, "maskrcnn_anchor_sizes needs 5 sizes"),
        ({"maskrcnn_anchor_sizes": "8,16,32,64,sixteen"}, "got [8, 16, 32, 64, 'sixteen']"),
    ],
)
def test_coerce_overrides_rejects_bad_input(overrides: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        coerce_overrides(overrides)


def test_override_to_an_invalid_value_is_caught() -> None:
    # coercion shares the config's checks, so it refuses the value at once (before: only the config did)
    with pytest.raises(ConfigError, match="train_augment must be one of"):
        coerce_overrides({"train_augment": "extreme"})
    with pytest.raises(ValueError, match="train_augment"):  # ... and so does the frozen config
        replace_config(PRESETS["glandseg-unet"], train_augment="extreme")


# ---------------------------------------------------------- issue #15 item 7: types and ranges on load


def _write_config(tmp_path: Path, **changes: Any) -> Path:
    mrcnn = any(k.startswith("maskrcnn_") for k in changes)
    d = config_to_dict(PRESETS["glandseg-maskrcnn" if mrcnn else "glandseg-unet"])
    d.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("unet_base", "16", "a whole number in [1, 256]"),
        ("unet_base", None, "a whole number in [1, 256]"),
        ("unet_base", 16.5, "a whole number in [1, 256]"),
        ("unet_base", 100000, "a whole number in [1, 256]"),  # once tried to allocate 360 GB
        ("unet_base", True, "a whole number in [1, 256]"),
        ("unet_depth", "5", "a whole number in [1, 6]"),
        ("unet_depth", 7, "a whole number in [1, 6]"),
        ("unet_scale", "0.5", "a number in [0.05, 2]"),
        ("unet_instance", "true", "true or false"),
        ("unet_instance", 1, "true or false"),
        ("train_crop_size", 100000, "a whole number in [0, 2048]"),
        ("train_batch_size", 10000, "a whole number in [1, 64]"),
        ("train_batch_size", 0, "a whole number in [1, 64]"),
        ("train_lr", "fast", "a number in [0, 10]"),
        ("train_lr", -0.1, "a number in [0, 10]"),
        ("train_lr", float("nan"), "a number in [0, 10]"),
        ("train_momentum", 1.5, "a number in [0, 1]"),
        ("train_epochs", -3, "a whole number in [1, 100000]"),
        ("maskrcnn_min_size", 100000, "a whole number in [16, 2048]"),
        ("maskrcnn_max_size", 100000, "a whole number in [16, 4096]"),
        ("maskrcnn_detections_per_img", 10**6, "a whole number in [1, 500]"),
        ("maskrcnn_box_batch_size_per_image", 10**6, "a whole number in [1, 4096]"),
        ("maskrcnn_rpn_post_nms_top_n_train", 10**7, "a whole number in [1, 10000]"),
        ("maskrcnn_box_head_dim", 10**6, "a whole number in [16, 4096]"),
        ("maskrcnn_anchor_sizes", [32, 64, 128, 256, "512"], "a whole number in [1, 2048]"),
        ("maskrcnn_anchor_sizes", [32, 64, 128, 256, 10**6], "a whole number in [1, 2048]"),
        ("maskrcnn_anchor_sizes", "32", "5 sizes"),
        ("train_augment", 3, "one of ('none', 'flip', 'strong', 'strong-mirror')"),
        ("name", None, "a string"),
        ("train_init", 0, "a string"),
    ],
)
def test_bad_config_json_gives_one_line_naming_field_value_and_allowed(
    tmp_path: Path, field: str, value: object, allowed: str
) -> None:
    """Wrong types and absurd sizes in config.json are refused on load with one line (regression: strings
    and null reached the network as tracebacks, and unet_base=100000 tried to allocate 360 GB)."""
    path = _write_config(tmp_path, **{field: value})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg and field in msg and allowed in msg, msg
    assert repr(value) in msg, msg


def test_integral_floats_are_accepted_as_whole_numbers(tmp_path: Path) -> None:
    cfg = load_config(_write_config(tmp_path, unet_base=16.0, train_epochs=3.0, train_lr=1))
    assert cfg.params.base == 16 and type(cfg.params.base) is int
    assert cfg.train_epochs == 3 and type(cfg.train_epochs) is int
    assert cfg.train_lr == 1.0 and type(cfg.train_lr) is float


def test_a_json_list_of_anchor_sizes_becomes_a_tuple() -> None:
    cfg = config_from_dict({"model": "maskrcnn", "maskrcnn_anchor_sizes": [8, 16, 32, 64, 128.0]})
    assert cfg.params.anchor_sizes == (8, 16, 32, 64, 128) and hash(cfg)


def test_unet_bottleneck_width_is_bounded() -> None:
    """Each field in range, yet together absurd: a 256 x 2**6 = 16384-channel bottleneck (~5 G parameters)."""
    with pytest.raises(ConfigError, match=r"unet_base=256 with unet_depth=6 .* at most 2048"):
        config_from_dict({"unet_base": 256, "unet_depth": 6})
    assert (
        config_from_dict({"unet_base": 64, "unet_depth": 5}).params.base == 64
    )  # 2048 channels: allowed


def test_command_line_overrides_share_the_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as from_cli:
        coerce_overrides({"unet_base": "100000"})
    with pytest.raises(ConfigError) as from_json:
        config_from_dict({"unet_base": 100000})
    assert (
        str(from_cli.value)
        == str(from_json.value)
        == "unet_base must be a whole number in [1, 256], got 100000"
    )
    assert coerce_overrides({"unet_base": "16.0"}) == {"unet_base": 16}
    with pytest.raises(
        ConfigError, match="unet_depth must be a whole number in"
    ):  # type as well as range
        coerce_overrides({"unet_depth": "five"})


def test_every_field_has_a_rule_and_every_preset_and_shipped_model_passes() -> None:
    for cfg in PRESETS.values():
        for name, value in config_to_dict(cfg).items():
            check_field(name, tuple(value) if isinstance(value, list) else value)
        assert config_from_dict(config_to_dict(cfg)) == cfg
        assert config_from_dict(dataclasses.asdict(cfg)) == cfg  # the section nested under "params"
    for path in Path(__file__).resolve().parents[1].glob("trained_models/*/config.json"):
        load_config(path)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "a\\b", "/abs", ".hidden", "..", "", "C:x", "tab\there", "x" * 101]
)
def test_a_name_must_be_a_plain_folder_name(name: str) -> None:
    """Issue #23 item 9: ``--set name=../x`` put the default run folder (runs/<name>) outside runs/."""
    with pytest.raises(ConfigError, match="name must be a plain folder name") as info:
        coerce_overrides({"name": name})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        replace_config(PRESETS["glandseg-unet"], name=name)
    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        config_from_dict({"model": "unet", "name": name})


def test_plain_names_with_spaces_dots_and_unicode_pass() -> None:
    for name in ("my run 2", "unet.v2", "glandseg-unet_gpu", "Drüsen", "x" * 100):
        assert replace_config(PRESETS["glandseg-unet"], name=name).name == name
    names = [cfg.name for cfg in PRESETS.values()]
    shipped = Path(__file__).resolve().parents[1].glob("trained_models/*/config.json")
    names += [json.loads(p.read_text())["name"] for p in shipped]
    assert len(names) >= 8 and all(check_field("name", n) == n for n in names)


def test_the_cli_refuses_a_name_outside_runs_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from glandseg_core import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--set", "name=../x", "--data", str(tmp_path / "glas"), "--no-bar"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: name must be a plain folder name")
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "x").exists()


def test_old_flat_config_with_both_kinds_fields_loads(tmp_path: Path) -> None:
    """config.json files written before sections carry every kind's fields; the other kind's are ignored."""
    old = json.loads(
        (Path(__file__).resolve().parents[1] / "trained_models" / "unet" / "config.json").read_text()
    )
    assert "maskrcnn_backbone" in old and "unet_base" in old
    cfg = config_from_dict(old)
    assert cfg.model == "unet" and cfg.params.base == old["unet_base"]
    assert "maskrcnn_backbone" not in config_to_dict(cfg)


def test_replace_config_refuses_another_kinds_field() -> None:
    with pytest.raises(ConfigError, match="maskrcnn_backbone"):
        replace_config(PRESETS["glandseg-unet"], maskrcnn_backbone="resnet18")
    switched = replace_config(PRESETS["glandseg-unet"], model="maskrcnn", maskrcnn_backbone="resnet18")
    assert (
        switched.params.backbone == "resnet18" and switched.train_lr == PRESETS["glandseg-unet"].train_lr
    )
