"""The package's import graph: dependencies point one way, and there are no cycles.

    core <- io <- sim <- {lab, plan, serve} <- cli

Every ``import`` in every module counts, including the ones inside functions (a lazy import is
still a dependency); only imports under ``if TYPE_CHECKING:`` are left out, because they never
run. docs/architecture.md describes the same rules; a module that breaks them fails here.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "apslab"

# What each room may import (besides itself and the leaf apslab._version).
ALLOWED = {
    "core": set(),
    "io": {"core"},
    "sim": {"core", "io"},
    "lab": {"core", "io", "sim"},
    "plan": {"core", "io", "sim"},
    "serve": {"core", "io", "sim"},
    "cli": {"core", "io", "sim", "lab", "plan", "serve"},
}
# The one door between the top rooms: the lab's small shared toolkit.
SHARED = {"apslab.lab.appkit"}
# The package's own __init__ is the public facade: it may re-export from every room.
FACADES = {"apslab", "apslab.__main__"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    parts = module.split(".")
    if module in FACADES or module == "apslab._version":
        return None
    if len(parts) >= 2 and parts[1] == "cli":
        return "cli"
    return parts[1] if len(parts) >= 2 else None


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: set[str], package_dir: Path = PACKAGE) -> set[str]:
    """The apslab modules ``path`` imports (a ``from package import submodule`` counts as the
    submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "apslab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "apslab":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_every_module_is_in_a_room():
    rooms = {room(m) for m in graph()} - {None}
    assert rooms <= set(ALLOWED), rooms - set(ALLOWED)


@pytest.mark.parametrize("module", sorted(graph()))
def test_imports_point_one_way(module):
    source_room = room(module)
    if source_room is None:
        return
    wrong = []
    for target in sorted(graph()[module]):
        target_room = room(target)
        if target_room in (None, source_room) or target_room in ALLOWED[source_room]:
            continue
        if target in SHARED and source_room in ("plan", "serve"):
            continue
        wrong.append(f"{module} ({source_room}) imports {target} ({target_room})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if target not in edges or target in FACADES:
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_checker_sees_wrong_way_and_type_checking_imports(tmp_path):
    """The check can fail: a lazy import from core into sim is found; a TYPE_CHECKING one is not."""
    package = tmp_path / "apslab"
    (package / "core").mkdir(parents=True)
    bad = package / "core" / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from ..lab import plots\n"
                   "def f():\n    from ..sim.static import simulate\n")
    found = imports_of(bad, {"apslab.sim.static", "apslab.lab.plots"}, package)
    assert found == {"apslab.sim.static"}
    assert room("apslab.sim.static") not in ALLOWED[room("apslab.core.bad")]
