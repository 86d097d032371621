"""Names users could have imported before the package was regrouped keep
working, with a DeprecationWarning that says where they went."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import aip
import aip.ring
from aip._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_the_new_module(old: str) -> None:
    # a fresh interpreter: the alias must work as a user's first import
    code = (f"import warnings; warnings.simplefilter('error')\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"{old} moved to {MOVED[old]}" in out


def test_the_alias_is_the_module_itself() -> None:
    with pytest.warns(DeprecationWarning, match="aip.reorder moved to aip.pipeline.reorder"):
        old = importlib.import_module("aip.reorder")
    assert old is importlib.import_module("aip.pipeline.reorder")
    with pytest.warns(DeprecationWarning):
        from aip.manager import Pipeline  # noqa: F401  (the oldest name of the facade)
    assert Pipeline is aip.Pipeline


def test_every_new_path_exists() -> None:
    for new in MOVED.values():
        importlib.import_module(new)


def test_hint_any_is_any_workers_older_name() -> None:
    with pytest.warns(DeprecationWarning, match="use ANY_WORKER"):
        old = aip.ring.HINT_ANY
    assert old == aip.ring.ANY_WORKER
    with pytest.raises(AttributeError):
        aip.ring.NO_SUCH_NAME  # noqa: B018
