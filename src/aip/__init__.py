"""aip: the Adaptive Inference Pipeline.

Real-time YOLO11 detection across every compute unit of one server. The fast
shared-memory core is usable on its own through :mod:`aip.ring`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from aip.models import export

__version__ = "0.1.0"


def get_include() -> str:
    """Directory of aip's C headers, for Cython modules that ``cimport aip._core``."""
    return str(Path(__file__).parent / "_core" / "include")


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import aip`` stays light for users of aip.ring.
    if name in ("Pipeline", "StreamEvent", "StreamError"):
        from aip import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'aip' has no attribute {name!r}")


__all__ = ["Pipeline", "StreamError", "StreamEvent", "__version__", "export", "get_include"]
