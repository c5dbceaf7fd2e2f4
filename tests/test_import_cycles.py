"""No import cycles between Triptych's modules.

The graph is read from the source with ``ast``, not by importing: an edge
``a -> b`` means module ``a`` imports ``b`` (``import b``, ``from b import x``,
or ``from package import b`` where ``b`` is a module). Imports under
``if TYPE_CHECKING:`` never run and are left out.

Two kinds of edge:

- *load-time*: at module level (also inside ``try``/``if``/``with`` there):
  they run while the module is being imported. A cycle of these means one of
  the modules is used half-initialised.
- *deferred*: inside a function or method; they run when it is called.

A cycle is reported when it consists of load-time edges, or when a deferred
edge ``a -> b`` meets a load-time path from ``b`` back to ``a`` (``b`` needs
``a`` as soon as it is loaded, so the deferral only hides the knot).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "tui"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(package: Path) -> dict[str, Path]:
    return {module_name(path, package.parent): path for path in sorted(package.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(load-time, deferred) imports of one module, restricted to ``known`` modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    load: set[str] = set()
    deferred: set[str] = set()

    def targets(node: ast.Import | ast.ImportFrom) -> set[str]:
        found: set[str] = set()
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b.c`` loads a, a.b and a.b.c.
                parts = alias.name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        else:
            base = _resolve(module, is_package, node)
            parts = base.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            for alias in node.names:
                found.add(f"{base}.{alias.name}")  # ``from package import module``
        return (found & known) - {module}

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            (deferred if in_function else load).update(targets(node))
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, in_function=False)
    return load, deferred - load


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(load-time, deferred) imports of every module in ``package``."""
    modules = all_modules(package)
    known = set(modules)
    load: dict[str, set[str]] = {}
    deferred: dict[str, set[str]] = {}
    for name, path in modules.items():
        load[name], deferred[name] = imports_of(name, path, known)
    # Importing a.b first imports its package a: the package's own imports
    # run then, so a.b depends on a.
    for name in modules:
        parent = name.rpartition(".")[0]
        if parent in known:
            load[name].add(parent)
    return load, deferred


def path_between(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A shortest path start -> ... -> goal in graph (breadth first), or None."""
    previous: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ())):
            if nxt in previous:
                continue
            previous[nxt] = node
            if nxt == goal:
                path = [nxt]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            queue.append(nxt)
    return None


def cycles(load: dict[str, set[str]], deferred: dict[str, set[str]]) -> list[str]:
    """Each cycle as 'a -> b -> a' (load-time) or 'a ~> b -> ... -> a' (deferred first)."""
    found: set[str] = set()
    for module, targets in load.items():
        for target in targets:
            back = path_between(load, target, module)
            if back:
                ring = [module, *back]
                # One spelling per cycle: start it at its smallest module.
                body = ring[:-1]
                i = body.index(min(body))
                body = body[i:] + body[:i]
                found.add(" -> ".join([*body, body[0]]))
    for module, targets in deferred.items():
        for target in targets:
            back = path_between(load, target, module)
            if back:
                found.add(f"{module} ~> " + " -> ".join(back))
    return sorted(found)


def test_no_import_cycles() -> None:
    load, deferred = import_graph()
    assert cycles(load, deferred) == []


def test_no_screen_imports_the_app_at_run_time() -> None:
    load, deferred = import_graph()
    for module in load:
        if module.startswith("tui.screens.") or module.startswith("tui.widgets."):
            assert "tui.app" not in load[module] | deferred[module], module


@pytest.mark.parametrize(
    "sources,expected",
    [
        # a plain load-time cycle
        ({"a": "import tui.b\n", "b": "from tui import a\n"}, ["tui.a -> tui.b -> tui.a"]),
        # a deferred import of a module that imports back at load time
        (
            {"a": "def f():\n    import tui.b\n", "b": "import tui.a\n"},
            ["tui.a ~> tui.b -> tui.a"],
        ),
        # TYPE_CHECKING imports never run: no cycle
        (
            {
                "a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tui.b\n",
                "b": "import tui.a\n",
            },
            [],
        ),
        # both sides deferred: each runs after the other is loaded, no cycle
        ({"a": "def f():\n    import tui.b\n", "b": "def g():\n    from tui import a\n"}, []),
    ],
)
def test_the_check_finds_cycles(
    tmp_path: Path, sources: dict[str, str], expected: list[str]
) -> None:
    """Guard against a vacuous pass: the graph builder sees each kind of import."""
    package = tmp_path / "tui"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in sources.items():
        (package / f"{name}.py").write_text(text)
    load, deferred = import_graph(package)
    assert cycles(load, deferred) == expected
