"""The import graph of glandseg_core: cycles, upward imports against the declared layers, forbidden imports.

Every import statement counts: at module level, inside functions and classes, and under ``if TYPE_CHECKING:``
(read with ``ast``, nothing is imported). Relative imports are resolved, ``from pkg import name`` is an import of
the submodule ``pkg.name`` when there is one (else of the package), and importing ``pkg.sub.mod`` also runs
``pkg/__init__.py`` and ``pkg/sub/__init__.py``, so it depends on those packages as well (unless the importer
lives inside them: a package's own modules do not depend on its ``__init__`` by being inside it).

A module's layer is that of its top-level part (``glandseg_core.segmenters.tiling`` is in ``segment``). A module
may import its own layer and those before it in ``LAYERS``; importing a later layer is an upward import. Inside
one layer only cycles are errors. ``glandseg_core`` must never import ``streamlit`` or the ``glandseg_dashboard`` package.

Usage (from the repository root):
    python -m scripts.import_graph            # report; exit status 1 on any cycle, upward or forbidden import
    python -m scripts.import_graph --layers   # also print which layers import which
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "glandseg_core"
#: Bottom to top. Each layer may import only itself and the layers before it.
LAYERS: tuple[str, ...] = (
    "_version",  # the package version (imports nothing)
    "errors",  # every exception; imports nothing of ours
    "files",  # atomic writes, OS error messages
    "progress",  # the one progress type (Step, ProgressFn)
    "registry",  # the model-kind registry (imports nothing of ours but errors)
    "rules",  # typed config fields: Rule, check_value, Section (a kind's config section)
    "config",  # RunConfig, presets, the one string->field coercion
    "thresholds",  # post-processing settings
    "imaging",  # decoded pixels, images and label maps in and out, TIFF formats, input files for predict
    "datasets",  # data set adapters (Dataset, Item, in-memory pairs); GlaS discovery, release checks, pack
    "transforms",  # joint augmentation
    "device",  # device choice, autocast, threads
    "distributed",  # multi-process setup
    "models",  # network builders and their config sections
    "checkpoints",  # read, load weights, export a model folder
    "engines",  # optional inference engines (OpenVINO, ONNX Runtime) for a loaded network, their disk cache
    "metrics",  # pure numpy GlaS metrics (imports nothing of ours outside its package)
    "stats",  # result tables, paired comparisons (pandas, on metrics' F1)
    "outputs",  # coloured overlays of label maps, gland tables and GeoJSON
    "segmenters",  # segmenters: image -> raw output -> label map; TTA, tiling
    "memory",  # the memory estimate of a segmentation (after resampling) or a training step, the budget
    "kinds",  # the built-in model kinds (one object each), registered on import
    "slides",  # whole-slide prediction
    "batch",  # predict over many inputs, writing outputs
    "evaluation",  # score a segmenter or a folder of label maps
    "train",  # fit, tune, locks
    "modelcard",  # the model card writer
    "api",  # the public Python API (import glandseg_core as gs)
    "cli",  # the `glandseg` command
    "__main__",  # python -m glandseg_core
    "__init__",  # the root package: may re-export anything (no module imports it by name)
)
FORBIDDEN = ("streamlit", "glandseg_dashboard")  # top-level packages glandseg_core must never import


@dataclass(frozen=True)
class Edge:
    """``src`` imports ``dst`` at ``path:line`` (``implicit``: a parent package's __init__ runs first)."""

    src: str
    dst: str
    path: str
    line: int
    implicit: bool = False


@dataclass
class Graph:
    """Modules of the package, edges between them, and imports of outside top-level packages."""

    modules: dict[str, Path]
    edges: list[Edge] = field(default_factory=list)
    external: list[Edge] = field(default_factory=list)

    def successors(self) -> dict[str, set[str]]:
        """Module -> the modules it imports."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for e in self.edges:
            out[e.src].add(e.dst)
        return out


def module_name(path: Path, root: Path) -> str:
    """``glandseg_core/segment/tiling.py`` -> ``glandseg_core.segmenters.tiling``; a package is its __init__."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` under ``root`` (the folder that holds the package)."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool
) -> list[tuple[str, list[str]]]:
    """(absolute prefix, ``prefix.name`` candidates) per imported thing of one import statement."""
    if isinstance(node, ast.Import):
        return [(alias.name, []) for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    return [(prefix, [f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*"])]


def _targets(prefix: str, candidates: list[str], modules: dict[str, Path]) -> set[str]:
    """The package modules an import loads: each ``prefix.name`` that is a submodule, and the longest known
    prefix when some name is not a submodule (``from pkg.mod import func`` -> ``pkg.mod``)."""
    found = {c for c in candidates if c in modules}
    if len(found) < len(candidates) or not candidates:
        name = prefix
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def _parents(target: str, importer: str, package: str) -> list[str]:
    """Packages whose __init__ runs when ``target`` is imported, except the root and those holding importer."""
    parts = target.split(".")
    out = []
    for k in range(2, len(parts)):
        pkg = ".".join(parts[:k])
        if pkg != package and not (importer == pkg or importer.startswith(pkg + ".")):
            out.append(pkg)
    return out


def build_graph(root: Path, package: str = PACKAGE) -> Graph:
    """Parse every module of ``package`` under ``root`` and collect its imports (see the module docstring)."""
    modules = find_modules(root, package)
    graph = Graph(modules)
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = str(path.relative_to(root))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for prefix, candidates in _imported(node, mod, path.name == "__init__.py"):
                top = prefix.split(".")[0]
                if top != package:
                    if top:
                        graph.external.append(Edge(mod, prefix, rel, node.lineno))
                    continue
                for dst in _targets(prefix, candidates, modules):
                    if dst != mod:
                        graph.edges.append(Edge(mod, dst, rel, node.lineno))
                    for pkg in _parents(dst, mod, package):
                        graph.edges.append(Edge(mod, pkg, rel, node.lineno, implicit=True))
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    succ = graph.successors()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(succ) + 100))
    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_path(graph: Graph, component: list[str]) -> list[str]:
    """One concrete cycle through a component, as [a, b, ..., a], for the report."""
    succ = graph.successors()
    members = set(component)
    start = component[0]
    parent: dict[str, str] = {}
    queue, seen = [start], {start}
    while queue:
        v = queue.pop(0)
        for w in sorted(succ[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), v, start] if v != start else [start, start]
            if w not in seen:
                seen.add(w)
                parent[w] = v
                queue.append(w)
    return component


def layer_of(module: str, package: str = PACKAGE) -> str:
    """The top-level part of a module name (``__init__`` for the root package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward(graph: Graph, layers: tuple[str, ...] = LAYERS) -> tuple[list[Edge], list[str]]:
    """(imports of a later layer, modules whose layer is not declared in ``layers``)."""
    rank = {name: k for k, name in enumerate(layers)}
    undeclared = sorted({layer_of(m) for m in graph.modules if layer_of(m) not in rank})
    bad = [
        e
        for e in graph.edges
        if layer_of(e.src) in rank
        and layer_of(e.dst) in rank
        and rank[layer_of(e.dst)] > rank[layer_of(e.src)]
    ]
    return bad, undeclared


def forbidden(graph: Graph, names: tuple[str, ...] = FORBIDDEN) -> list[Edge]:
    """Imports of the forbidden top-level packages (streamlit, glandseg_dashboard)."""
    return [e for e in graph.external if e.dst.split(".")[0] in names]


def report(graph: Graph, show_layers: bool = False) -> tuple[list[str], int]:
    """(lines to print, number of problems)."""
    lines: list[str] = []
    comps = cycles(graph)
    ups, undeclared = upward(graph)
    bad = forbidden(graph)
    for comp in comps:
        lines.append(
            f"cycle: {' -> '.join(cycle_path(graph, comp))}  ({len(comp)} modules: {', '.join(comp)})"
        )
    for e in sorted(ups, key=lambda e: (e.path, e.line)):
        how = " (its package __init__ runs)" if e.implicit else ""
        lines.append(f"upward: {e.path}:{e.line} {e.src} ({layer_of(e.src)}) imports {e.dst}{how}")
    for e in bad:
        lines.append(f"forbidden: {e.path}:{e.line} {e.src} imports {e.dst}")
    for name in undeclared:
        lines.append(f"undeclared layer: {PACKAGE}.{name} is not in LAYERS (scripts/import_graph.py)")
    if show_layers:
        pairs = sorted(
            {
                (layer_of(e.src), layer_of(e.dst))
                for e in graph.edges
                if layer_of(e.src) != layer_of(e.dst)
            }
        )
        for src in sorted({p[0] for p in pairs}, key=lambda n: LAYERS.index(n) if n in LAYERS else 99):
            lines.append(f"{src} imports: {', '.join(d for s, d in pairs if s == src)}")
    n_edges = len({(e.src, e.dst) for e in graph.edges})
    problems = len(comps) + len(ups) + len(bad) + len(undeclared)
    lines.append(
        f"{len(graph.modules)} modules, {n_edges} import edges: {len(comps)} cycle(s), {len(ups)} upward, "
        f"{len(bad)} forbidden, {len(undeclared)} undeclared layer(s)"
    )
    return lines, problems


def main(argv: list[str] | None = None) -> int:
    """Print the report; 1 when there is any problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root"
    )
    parser.add_argument("--layers", action="store_true", help="also print which layers import which")
    args = parser.parse_args(argv)
    lines, problems = report(build_graph(args.root), show_layers=args.layers)
    print("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
