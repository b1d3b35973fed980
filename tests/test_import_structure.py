"""Import structure: ``nerf`` and ``keypoint`` import ``geo_rs``, never each other; ``geo_rs`` imports
neither; no import cycle between modules, counting imports inside functions (lazy ones) too.

Read from the source with ``ast`` (nothing is imported), so a cycle that only closes at run time is
found before it bites. A module importing its own package's ``__init__`` is not an edge: the
packages' ``__init__`` files only re-export lazily.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geo_rs", "nerf", "keypoint")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imported(name: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against this module's package
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [mod] + [f"{mod}.{a.name}" for a in node.names]


def import_graph() -> nx.DiGraph:
    mods = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(name, path, node):
                while target and target not in mods:  # `from pkg.mod import func` → pkg.mod
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def test_the_graph_sees_known_edges():  # not vacuous: lazy and relative imports are both read
    graph = import_graph()
    assert graph.number_of_nodes() > 100
    assert graph.has_edge("keypoint.verify.api", "keypoint.verify.wrappers")  # relative
    assert graph.has_edge("keypoint.verify.float_margin", "keypoint.verify.wrappers")  # inside a function
    assert any(t.startswith("geo_rs") for t in graph.successors("nerf.cli"))


def test_imports_point_one_way():
    graph = import_graph()
    top = {p: p.split(".")[0] for p in graph}
    wrong = sorted(f"{a} -> {b}" for a, b in graph.edges
                   if (top[a], top[b]) in {("geo_rs", "nerf"), ("geo_rs", "keypoint"),
                                            ("nerf", "keypoint"), ("keypoint", "nerf")})
    assert not wrong, wrong


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, cycles
