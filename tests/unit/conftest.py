"""tests/unit runs without the deep-learning runtimes: nothing here may import
torch, torchvision or ultralytics (a test that needs them belongs in
tests/integration). test_no_runtime_imports.py reads the source for import
statements; the fixture below catches what the source does not show: an aip
function, or a fixture, that imports them while a unit test runs.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

RUNTIMES = ("torch", "torchvision", "ultralytics")

_LOADED_AT_SETUP = pytest.StashKey[frozenset[str]]()


def loaded_runtimes() -> frozenset[str]:
    return frozenset(name for name in RUNTIMES if name in sys.modules)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Taken before any fixture of the test is set up, so that a module- or
    # session-scoped fixture that a unit test pulls in is caught too.
    item.stash[_LOADED_AT_SETUP] = loaded_runtimes()


@pytest.fixture(autouse=True)
def no_runtime_imports(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a unit test during which torch, torchvision or ultralytics was first imported.

    A runtime that an earlier test outside tests/unit loaded (one pytest run over
    several folders) is already in ``sys.modules``: it cannot be noticed again, and
    is not blamed on this test.
    """
    yield
    before = request.node.stash.get(_LOADED_AT_SETUP, frozenset())
    pulled = loaded_runtimes() - before
    assert not pulled, (f"a unit test imported {sorted(pulled)}: move it to tests/integration, "
                        "or keep the runtime out of what it calls")
