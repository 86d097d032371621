"""Where aip keeps what it computes once: exported models, the sample video,
calibrations.

``$AIP_CACHE_DIR`` when set (the tests point it at a temporary folder, so
they never touch a user's cache), else ``~/.cache/aip``. Resolved at each
call, never at import.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """aip's cache folder: ``$AIP_CACHE_DIR``, else ``~/.cache/aip``."""
    configured = os.environ.get("AIP_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "aip"
