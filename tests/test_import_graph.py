"""The package's import graph (scripts/import_graph.py): no cycle, no upward import, no streamlit or ui.

The last tests check the graph builder itself on a small package written here: imports inside functions and
under TYPE_CHECKING count, relative imports resolve, and importing a submodule runs its package's __init__.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scripts import import_graph as ig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph() -> ig.Graph:
    return ig.build_graph(REPO)


def test_glandseg_core_has_no_import_cycle(graph: ig.Graph) -> None:
    found = [" -> ".join(ig.cycle_path(graph, comp)) for comp in ig.cycles(graph)]
    assert found == []


def test_no_module_imports_a_higher_layer(graph: ig.Graph) -> None:
    ups, undeclared = ig.upward(graph)
    assert [f"{e.path}:{e.line} {e.src} imports {e.dst}" for e in ups] == []
    assert undeclared == [], "add each new top-level module of glandseg_core to LAYERS"


def test_glandseg_core_never_imports_streamlit_or_ui(graph: ig.Graph) -> None:
    assert [f"{e.path}:{e.line} {e.dst}" for e in ig.forbidden(graph)] == []
    assert any(e.dst == "numpy" for e in graph.external)  # outside imports are seen at all


def test_the_script_exits_zero_on_the_package() -> None:
    assert ig.main(["--root", str(REPO)]) == 0


# ------------------------------------------------------------------------------- the graph builder itself


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from .high import Thing
                def late():
                    from pkg.mid import helper
                    import streamlit
            """,
            "pkg/mid.py": "from . import low\n",
            "pkg/high.py": "from .sub.inner import value\nfrom .sub import exported\n",
            "pkg/sub/__init__.py": "from .inner import value as exported\n",
            "pkg/sub/inner.py": "from .. import low\nfrom ..mid import helper\nvalue = 1\n",
        },
    )
    return tmp_path


def edges(graph: ig.Graph) -> set[tuple[str, str, bool]]:
    return {(e.src, e.dst, e.implicit) for e in graph.edges}


def test_every_kind_of_import_is_an_edge(toy: Path) -> None:
    g = ig.build_graph(toy, "pkg")
    assert set(g.modules) == {"pkg", "pkg.low", "pkg.mid", "pkg.high", "pkg.sub", "pkg.sub.inner"}
    assert edges(g) == {
        ("pkg.low", "pkg.high", False),  # under TYPE_CHECKING
        ("pkg.low", "pkg.mid", False),  # inside a function, absolute
        ("pkg.mid", "pkg.low", False),  # `from . import low` is the submodule, not the package
        ("pkg.high", "pkg.sub.inner", False),
        ("pkg.high", "pkg.sub", True),  # importing pkg.sub.inner runs pkg/sub/__init__.py
        ("pkg.high", "pkg.sub", False),  # `exported` is a name defined in pkg/sub/__init__.py
        ("pkg.sub", "pkg.sub.inner", False),
        ("pkg.sub.inner", "pkg.low", False),  # two dots: up to pkg
        ("pkg.sub.inner", "pkg.mid", False),
    }
    assert [(e.src, e.dst) for e in ig.forbidden(g)] == [("pkg.low", "streamlit")]


def test_cycles_and_upward_imports_are_found(toy: Path) -> None:
    g = ig.build_graph(toy, "pkg")
    assert ig.cycles(g) == [["pkg.high", "pkg.low", "pkg.mid", "pkg.sub", "pkg.sub.inner"]]
    path = ig.cycle_path(g, ig.cycles(g)[0])
    assert path[0] == path[-1] and len(path) >= 3
    ups, undeclared = ig.upward(g, ("low", "mid", "sub", "high"))
    assert {(e.src, e.dst) for e in ups} == {("pkg.low", "pkg.high"), ("pkg.low", "pkg.mid")}
    assert undeclared == ["__init__"]
