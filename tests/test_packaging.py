"""pyproject.toml and the requirement files agree with the tree: data files ship, pins match, the command exists."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(name: str) -> dict[str, str]:
    """package -> version of the ``==`` lines of a requirements file (``-r`` lines followed)."""
    out: dict[str, str] = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out.update(pins(line[3:].strip()))
        elif "==" in line:
            pkg, version = line.split("==")
            out[pkg.strip().lower()] = version.strip()
    return out


def test_every_data_file_of_the_package_is_package_data() -> None:
    data = set(PYPROJECT["tool"]["setuptools"]["package-data"]["glandseg_core"])
    files = {
        p.relative_to(REPO / "glandseg_core").as_posix()
        for p in (REPO / "glandseg_core").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert files <= data, f"add to [tool.setuptools.package-data]: {sorted(files - data)}"


def test_pyproject_pins_and_requirements_agree() -> None:
    runtime, app, dev = (
        pins("requirements.txt"),
        pins("requirements-app.txt"),
        pins("requirements-dev.txt"),
    )
    assert set(runtime) <= set(app) and set(runtime) <= set(dev)  # both include the runtime file
    project = PYPROJECT["project"]
    declared = {re.split(r"[=<>!~ ]", d)[0].lower(): d for d in project["dependencies"]}
    assert set(declared) == set(runtime)
    for pkg in ("torch", "torchvision"):  # pinned in both places, to the same version
        assert declared[pkg] == f"{pkg}=={runtime[pkg]}"
    extras = project["optional-dependencies"]
    assert {re.split(r"[=<>]", d)[0].lower() for d in extras["app"]} == set(app) - set(runtime)
    assert {re.split(r"[=<>]", d)[0].lower() for d in extras["dev"]} == set(dev) - set(runtime)


def test_console_script_points_at_a_main() -> None:
    target = PYPROJECT["project"]["scripts"]["glandseg"]
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert PYPROJECT["tool"]["ruff"]["line-length"] == 105


def test_version_has_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    from glandseg_core._version import __version__
    from glandseg_core.cli import main

    assert PYPROJECT["project"]["dynamic"] == ["version"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "glandseg_core._version.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert f"## [{__version__}]" in (REPO / "CHANGELOG.md").read_text()
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"glandseg {__version__}"


def test_license_covers_the_code_and_leaves_the_samples_their_terms() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "samples/" in text
    assert "research purposes only" in (REPO / "samples" / "ATTRIBUTION.md").read_text()


def test_code_passes_the_linter_and_the_formatter() -> None:
    """CI's ruff steps run in the suite too, so the README's test command catches a line ruff would lay out."""
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
