"""The macOS test set: Apple backends, the macOS wait path, page-rounded segments.

Skipped, with the reason, anywhere but macOS. On a Mac nothing here skips:
a backend that should exist and does not (coremltools missing, no MPS) is a
failure that says why, because this set exists to prove the Mac side.
``benchmarks/mac_check.sh`` runs it together with the ring stress tests.
"""
from __future__ import annotations

import sys

import pytest

NOT_A_MAC = (f"macOS test set: needs a Mac (this machine runs {sys.platform}); "
             "run benchmarks/mac_check.sh on one")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if sys.platform == "darwin":
        return
    skip = pytest.mark.skip(reason=NOT_A_MAC)
    for item in items:
        if item.path.parent.name == "macos":
            item.add_marker(skip)
