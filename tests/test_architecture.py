"""The rooms of lib/ (docs ARCHITECTURE): config stays in lib/core and lib/engine, and no import cycle.

Every import statement counts, function-local ones included (the whole AST is walked), relative imports are resolved,
and ``from package import name`` counts as importing ``package.name`` when that is a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lib.core.config import REPO_ROOT

# Rooms that take ready paths and values: they may not import the config layer or the engine.
LOWER_ROOMS = ("data", "models", "solver", "kinematics", "io")
CONFIG_ROOMS = ("core", "engine")


def module_names(root: Path, package: str = "lib") -> dict[str, Path]:
    """Dotted module name -> file for every .py under ``root`` (the directory of ``package``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = "lib") -> list[tuple[str, int]]:
    """(imported module of ``package``, line) for every import anywhere in the file."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target != package and not target.startswith(package + "."):
                continue
            while target not in modules and "." in target:  # 'lib.core.config.REPO_ROOT' -> 'lib.core.config'
                target = target.rsplit(".", 1)[0]
            if target != module:
                found.append((target, node.lineno))
    return found


def import_graph(root: Path, package: str = "lib") -> dict[str, list[tuple[str, int]]]:
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def room_violations(graph: dict[str, list[tuple[str, int]]], package: str = "lib") -> list[str]:
    """'lib.data.db:447 imports lib.core.config' for each lower-room module importing core or engine."""

    def room(name: str) -> str:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 else ""

    return [
        f"{source}:{line} imports {target}"
        for source, edges in graph.items()
        if room(source) in LOWER_ROOMS
        for target, line in edges
        if room(target) in CONFIG_ROOMS
    ]


def import_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Import cycles (lists of modules, first == last) found by a depth-first search, one per back edge; empty when
    there is none."""
    edges = {name: sorted({target for target, _ in targets}) for name, targets in graph.items()}
    cycles, done = [], set()
    for start in sorted(edges):
        if start in done:
            continue
        stack, on_path, path = [(start, iter(edges.get(start, [])))], {start}, [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                path.pop()
                done.add(node)
            elif child in on_path:
                cycles.append(path[path.index(child) :] + [child])
            elif child not in done:
                stack.append((child, iter(edges.get(child, []))))
                on_path.add(child)
                path.append(child)
    return cycles


def test_lower_rooms_do_not_import_config_or_engine():
    violations = room_violations(import_graph(REPO_ROOT / "lib"))
    assert not violations, "config stays in lib/core and lib/engine:\n" + "\n".join(violations)


def test_lib_has_no_import_cycle():
    cycles = import_cycles(import_graph(REPO_ROOT / "lib"))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


# ------------------------------------------------------------------------------------- the checks can fail
@pytest.fixture
def bad_package(tmp_path):
    """A package with a hidden (function-local, relative) cycle between two data modules and a lower room
    importing the config."""
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/config.py": "X = 1\n",
        "data/__init__.py": "",
        "data/db.py": "def f():\n    from . import synthetic\n    return synthetic\n",
        "data/synthetic.py": "import os\n\ndef g():\n    from lib.data.db import f\n    return f\n",
        "models/__init__.py": "",
        "models/checkpoint.py": "from ..core.config import X\n",
        "solver/__init__.py": "",
        "solver/ok.py": "from lib.models import checkpoint\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_find_a_hidden_cycle_and_a_config_import(bad_package):
    graph = import_graph(bad_package)
    assert ("lib.models.checkpoint", 1) in graph["lib.solver.ok"]
    assert room_violations(graph) == ["lib.models.checkpoint:1 imports lib.core.config"]
    cycles = import_cycles(graph)
    assert len(cycles) == 1 and set(cycles[0]) == {"lib.data.db", "lib.data.synthetic"}
