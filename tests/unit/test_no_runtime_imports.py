"""tests/unit never imports torch, torchvision or ultralytics: read from the source.

Every module of tests/unit, and every helper module of tests/ that one of them
imports, is parsed; an ``import`` of a runtime anywhere in it (at the top, in a
function, in a fixture) or a ``pytest.importorskip`` of one fails. The autouse
fixture of conftest.py catches the imports the source does not show.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

RUNTIMES = {"torch", "torchvision", "ultralytics"}
UNIT = Path(__file__).resolve().parent
TESTS = UNIT.parent


def imported_names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of each import statement and each importorskip / import_module of a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if called in ("importorskip", "import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def checked_files() -> list[Path]:
    """tests/unit/*.py and the helper modules of tests/ (detection_checks, ...) they import."""
    files = sorted(UNIT.glob("*.py"))
    helpers = {path.stem: path for path in TESTS.glob("*.py") if path.name != "conftest.py"}
    used = {name.partition(".")[0] for path in files
            for _, name in imported_names(ast.parse(path.read_text(), str(path)))}
    return files + [helpers[name] for name in sorted(used & helpers.keys())]


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each runtime the file imports, in line order."""
    tree = ast.parse(path.read_text(), str(path))
    return sorted((line, name) for line, name in imported_names(tree) if name.partition(".")[0] in RUNTIMES)


@pytest.mark.parametrize("path", checked_files(), ids=lambda path: path.name)
def test_no_runtime_is_imported(path: Path) -> None:
    found = [f"{path.relative_to(TESTS)}:{line}: {name}" for line, name in runtime_imports(path)]
    assert not found, "tests/unit imports a deep-learning runtime (move the test to tests/integration):\n" + \
        "\n".join(found)


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import torch\n"
        "import numpy, torchvision.ops as ops\n"
        "from ultralytics.utils import ASSETS\n"
        "def fixture():\n"
        "    import importlib\n"
        "    importlib.import_module('torch.cuda')\n"
        "    pytest.importorskip('ultralytics')\n"
        "from . import torch\n"  # a sibling module named torch is not the runtime
        "import torchaudio_like\n"
    )
    assert [name for _, name in runtime_imports(sample)] == [
        "torch", "torchvision.ops", "ultralytics.utils", "torch.cuda", "ultralytics"]
