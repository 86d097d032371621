from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SHM_DIR = Path("/dev/shm")


def aip_segments() -> set[str]:
    """Names of aip's shared-memory segments that exist now (Linux)."""
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("aip_")}


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Every test must leave no aip segment behind."""
    before = aip_segments()
    yield
    leaked = aip_segments() - before
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
