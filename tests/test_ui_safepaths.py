"""Tests for glandseg_dashboard.safepaths and glandseg_dashboard.settings: typed names and folders stay inside their roots (issue #15, item 1)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from glandseg_dashboard import safepaths, settings
from tests.helpers import REPO


@pytest.mark.parametrize(
    "name",
    ["../escaped", "..", ".", "/tmp/abs", "a/b", "~root", "", " ", "-rf", ".hidden", "x" * 101, "a\nb"],
)
def test_bad_output_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Model folder name"):
        safepaths.inside(tmp_path, name, "Model folder name")


def test_good_names_stay_directly_below_the_root(tmp_path: Path) -> None:
    assert (
        safepaths.inside(tmp_path / "models", " unet-v2.1_b ", "x")
        == (tmp_path / "models").resolve() / "unet-v2.1_b"
    )
    assert safepaths.output_file(tmp_path, "testA_1.png", ".png", "File name").name == "testA_1.png"
    assert safepaths.output_file(tmp_path, "testA_1", ".png", "File name").name == "testA_1.png"
    with pytest.raises(ValueError, match="File name"):
        safepaths.output_file(tmp_path, "../../etc/x.png", ".png", "File name")


def test_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "models"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        safepaths.inside(root, "link", "Model folder name")


def test_data_folders_stay_inside_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "glas").mkdir(parents=True)
    monkeypatch.setenv("GLANDSEG_DATA_ROOT", str(root))
    monkeypatch.delenv("GLANDSEG_ALLOW_ANY_PATH", raising=False)
    assert safepaths.data_folder("glas") == (root / "glas").resolve()
    assert safepaths.data_folder(str(root / "glas")) == (root / "glas").resolve()
    for outside in ("/etc", "../../..", str(tmp_path)):
        with pytest.raises(ValueError, match="lies outside"):
            safepaths.data_folder(outside)
    with pytest.raises(ValueError, match="Enter the GlaS folder"):
        safepaths.data_folder("  ")
    monkeypatch.setenv("GLANDSEG_ALLOW_ANY_PATH", "1")  # the deployment allows data anywhere
    assert safepaths.data_folder("/etc") == Path("/etc").resolve()


def test_the_data_root_defaults_to_glandseg_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GLANDSEG_DATA_ROOT", raising=False)
    monkeypatch.setenv("GLANDSEG_DATA", str(tmp_path))
    assert settings.data_root() == tmp_path
    monkeypatch.delenv("GLANDSEG_DATA")
    assert settings.data_root() == settings.APP_DIR / "data"


def test_existing_names_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "predictions").mkdir()
    (tmp_path / "config.json").write_text("{}")
    assert safepaths.existing(tmp_path, ["weights.pt", "config.json", "predictions"]) == [
        "config.json",
        "predictions/",
    ]


def test_flags_and_the_one_mtime_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLANDSEG_READONLY", "1")
    assert settings.read_only()
    monkeypatch.setenv("GLANDSEG_READONLY", "0")
    assert not settings.read_only()
    assert settings.mtime(tmp_path / "missing") == settings.MISSING_MTIME == -1.0
    (tmp_path / "f").write_text("x")
    assert settings.mtime(tmp_path / "f") > 0


def test_the_server_binds_to_this_machine_only_by_default() -> None:
    """#15 item 1: Streamlit listens on all interfaces unless told otherwise; our config says localhost."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] in ("localhost", "127.0.0.1")
