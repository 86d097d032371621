"""The package's architecture, held: no import cycles, and each part imports
only from the parts below it (the order in ``aip/__init__.py``).

Every import counts: at module level, inside functions and under
``TYPE_CHECKING`` alike, because each is a dependency a reader has to follow.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aip

PACKAGE = Path(aip.__file__).parent
SOURCES = Path(__file__).parents[2] / "src" / "aip"
ROOT = SOURCES if SOURCES.is_dir() else PACKAGE

# Lowest first. A module may import its own layer and the layers before it.
LAYERS: list[tuple[str, ...]] = [
    ("aip.errors",),
    ("aip._core", "aip.ring", "aip.segments", "aip.results", "aip.cache"),
    ("aip.vision",),
    ("aip.io",),
    ("aip.track",),
    ("aip.backends",),
    ("aip.pipeline",),
    ("aip.cluster",),
    ("aip.bench",),
    ("aip.app",),
]
# The package's front door and the old-path aliases may reach anything; and
# anything may read the front door's ``__version__``.
ABOVE_ALL = ("aip", "aip.__main__", "aip._moved")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            yield stem
            yield from (f"{stem}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """aip module -> the aip modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path):
            while name and name not in modules:  # `from aip.x import Name` -> aip.x
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int | None:
    for rank, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    return None


def test_the_graph_is_read_from_the_sources() -> None:
    graph = import_graph()
    assert len(graph) > 50
    assert "aip.pipeline.protocol" in graph["aip.pipeline.worker"]
    assert "aip.errors" in graph["aip.backends.base"]


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in import_graph() if m not in ABOVE_ALL and layer_of(m) is None]
    assert unplaced == [], "add new packages to LAYERS (and to the list in aip/__init__.py)"


def test_each_part_imports_only_from_below() -> None:
    upward = []
    for module, targets in import_graph().items():
        rank = layer_of(module)
        if rank is None:
            continue
        for target in targets:
            target_rank = layer_of(target)
            if target != "aip" and (target_rank is None or target_rank > rank):
                upward.append(f"{module} -> {target}")
    assert sorted(upward) == []


def test_errors_import_nothing_of_aip() -> None:
    assert import_graph()["aip.errors"] == set()


def test_a_worker_process_loads_no_manager_code() -> None:
    # What a spawned worker imports to unpickle its target and run it.
    code = ("import sys, aip.pipeline.worker; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('aip', 'torch', 'ultralytics')))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert loaded <= {"aip", "aip._moved", "aip.errors", "aip.backends", "aip.backends.base",
                      "aip.pipeline", "aip.pipeline.protocol", "aip.pipeline.worker"}, loaded
