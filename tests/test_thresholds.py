"""Tests for glandseg_core.thresholds: post-processing settings, their JSON round trip and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glandseg_core.config import PRESETS
from glandseg_core.errors import ConfigError
from glandseg_core.thresholds import (
    MaskRCNNPost,
    UNetPost,
    default_post,
    load_post,
    post_from_dict,
    save_post,
)


def test_post_settings_roundtrip(tmp_path: Path) -> None:
    for kind, post in (
        ("unet", UNetPost(fg_thresh=0.4, instance=False)),
        ("maskrcnn", MaskRCNNPost(min_visible=0.3)),
    ):
        save_post(post, tmp_path / "postprocess.json")
        assert post_from_dict(kind, json.loads((tmp_path / "postprocess.json").read_text())) == post
        assert load_post(tmp_path / "postprocess.json", kind) == post
    assert not list(tmp_path.glob("*.tmp"))


def test_post_unknown_keys_raise() -> None:
    with pytest.raises(ValueError, match="score_thresh"):
        post_from_dict("unet", {"score_thresh": 0.5})
    with pytest.raises(ConfigError, match="score_thresh"):
        post_from_dict("unet", {"score_thresh": 0.5})


def test_unknown_kind_and_non_object() -> None:
    with pytest.raises(ConfigError, match="'vit'"):
        post_from_dict("vit", {})
    with pytest.raises(ConfigError, match="JSON object"):
        post_from_dict("unet", [0.5])  # type: ignore[arg-type]


def test_default_post_follows_the_config() -> None:
    assert default_post(PRESETS["glandseg-unet"]) == UNetPost(
        instance=PRESETS["glandseg-unet"].params.instance
    )
    assert default_post(PRESETS["glandseg-maskrcnn-cpu"]) == MaskRCNNPost()


def test_integral_floats_and_ints_are_accepted() -> None:
    post = post_from_dict("unet", {"min_area": 150.0, "fg_thresh": 1, "contour_thresh": 0})
    assert post == UNetPost(min_area=150, fg_thresh=1.0, contour_thresh=0.0)
    assert type(post.min_area) is int and type(post.fg_thresh) is float


# Issue #15 item 7: wrong types or ranges in postprocess.json give one line naming the field.
BAD = [
    ("unet", "fg_thresh", "0.5", "a number"),  # a string threshold
    ("unet", "contour_thresh", None, "a number"),
    ("unet", "min_area", -5, "whole number"),  # a negative area
    ("unet", "min_marker_area", 2.5, "whole number"),
    ("unet", "min_area", 10**12, "whole number"),
    ("unet", "fg_thresh", 1.5, r"\[0, 1\]"),  # 1.5 as a fraction
    ("unet", "fg_thresh", -0.1, r"\[0, 1\]"),
    ("unet", "instance", "yes", "true or false"),
    ("unet", "instance", 1, "true or false"),
    ("unet", "min_area", True, "a number"),
    ("maskrcnn", "score_thresh", "high", "a number"),
    ("maskrcnn", "mask_thresh", None, "a number"),
    ("maskrcnn", "min_visible", 1.5, r"\[0, 1\]"),
    ("maskrcnn", "min_area", -1, "whole number"),
    ("maskrcnn", "score_thresh", [0.5], "a number"),
]


@pytest.mark.parametrize(("kind", "field", "value", "allowed"), BAD)
def test_wrong_types_and_ranges_name_the_field(
    kind: str, field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ConfigError, match=allowed) as e:
        post_from_dict(kind, {field: value})
    msg = str(e.value)
    assert "\n" not in msg and repr(field) in msg and repr(value) in msg


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_non_finite_numbers_are_refused(tmp_path: Path, value: str) -> None:
    path = tmp_path / "postprocess.json"
    path.write_text(f'{{"fg_thresh": {value}}}')  # Python's json reads these
    with pytest.raises(ConfigError, match="fg_thresh"):
        load_post(path, "unet")


@pytest.mark.parametrize(("kind", "field", "value", "allowed"), BAD[:6])
def test_load_post_names_the_file_and_the_field(
    tmp_path: Path, kind: str, field: str, value: object, allowed: str
) -> None:
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps({field: value}))
    with pytest.raises(ConfigError, match=allowed) as e:
        load_post(path, kind)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and repr(field) in msg


@pytest.mark.parametrize("content", ["", "{", "not json", "\xff"])
def test_unreadable_file_is_one_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "postprocess.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_post(path, "unet")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_post(tmp_path / "absent.json", "unet")
