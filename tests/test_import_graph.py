"""No import circle inside fastrnn/ (issue 19).

The graph is read from the source with ``ast``, not by importing: every ``import`` statement
counts, the lazy ones inside functions too (a lazy import only hides a circle from the
interpreter, not from the reader). An edge goes from a module to the fastrnn module it names:
``from . import x`` names ``fastrnn.x`` when that is a module, else the package ``fastrnn``;
``from .backends import Backend`` names ``fastrnn.backends``; ``import fastrnn`` names the
package. Python's implicit import of a parent package before its children is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "fastrnn"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
# Modules a build makes (the CUDA and CPU extensions, setup.py's record): no source, no imports of
# their own.
GENERATED = {"fastrnn._C", "fastrnn._cpu", "fastrnn._build_info"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str, modules: dict) -> str | None:
    """The longest prefix of ``name`` that is a fastrnn module (None: not fastrnn's)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict:
    """module -> set of fastrnn modules it imports (anywhere in its source)."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # "from base import name": name may be a submodule of base
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules.keys() | GENERATED else base
                           for alias in node.names]
            for target in targets:
                if target in GENERATED:
                    continue
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != module:
                    edges.add(resolved)
        graph[module] = edges
    return graph


def find_cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_sees_lazy_imports():
    # The reader must see imports inside functions (the way circles were hidden before).
    graph = import_graph()
    assert "fastrnn.backends" in graph["fastrnn.functional"]
    source = "def f():\n    from .cells import Cell\n"
    tree = ast.parse(source)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))


def test_find_cycles_finds_one():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_fastrnn():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import circles inside fastrnn/ (each a set of modules that import each other): " + \
        "; ".join(" <-> ".join(c) for c in cycles)
