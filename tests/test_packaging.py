"""pyproject.toml and the requirement files agree with the tree: data files ship, pins match, the command exists."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

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
