"""Old module paths, kept importable with a DeprecationWarning.

The package was regrouped by what each part is for (see :mod:`aip`); a
user's ``import aip.sources`` or ``from aip.manager import Pipeline`` goes on
working, warns, and gets the module at its new path. One table, one import
hook: nothing in aip itself imports an old path.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

# old path -> new path
MOVED: dict[str, str] = {
    "aip.manager": "aip.pipeline",
    "aip.worker": "aip.pipeline.worker",
    "aip.scheduler": "aip.pipeline.scheduler",
    "aip.reorder": "aip.pipeline.reorder",
    "aip.metrics": "aip.pipeline.metrics",
    "aip.calibrate": "aip.pipeline.calibration_cache",
    "aip.pipeline.frames": "aip.pipeline.protocol",
    "aip.models": "aip.vision.models",
    "aip.preprocess": "aip.vision.preprocess",
    "aip.postprocess": "aip.vision.postprocess",
    "aip.sources": "aip.io.sources",
    "aip.sinks": "aip.io.sinks",
    "aip.samples": "aip.io.samples",
    "aip.credentials": "aip.io.credentials",
    "aip.cli": "aip.app.cli",
    "aip.config": "aip.app.config",
    "aip.doctor": "aip.app.doctor",
    "aip.observe": "aip.app.observe",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}: import it from there",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at its new path is already executed."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return None if new is None else importlib.machinery.ModuleSpec(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
