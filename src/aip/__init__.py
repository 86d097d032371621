"""aip: the Adaptive Inference Pipeline.

Real-time YOLO11 detection across every compute unit of one server. The fast
shared-memory core is usable on its own through :mod:`aip.ring`.
"""
from __future__ import annotations

from pathlib import Path

from aip.models import export

__version__ = "0.1.0"


def get_include() -> str:
    """Directory of aip's C headers, for Cython modules that ``cimport aip._core``."""
    return str(Path(__file__).parent / "_core" / "include")


__all__ = ["__version__", "export", "get_include"]
