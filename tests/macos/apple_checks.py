"""Helpers of the macOS test set."""
from __future__ import annotations

import pytest

from aip.backends.base import BackendSpec, BackendUnavailable, check_available


def require(spec: BackendSpec) -> None:
    """Fail (never skip) when a backend a Mac should have is not available."""
    try:
        check_available(spec)
    except BackendUnavailable as error:
        pytest.fail(f"{spec.name} should run on this Mac and does not: {error}")
