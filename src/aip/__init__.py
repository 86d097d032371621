"""aip: the Adaptive Inference Pipeline.

Real-time YOLO11 detection across every compute unit of one server. The fast
shared-memory core is usable on its own through :mod:`aip.ring`.

The package, by what each part is for (lowest first; each imports only
from the parts above it in this list):

- :mod:`aip.errors`: ``AipError`` and the exit codes; imports nothing of aip;
- shared memory and contracts: :mod:`aip._core` (compiled), :mod:`aip.ring`,
  :mod:`aip.segments`, :mod:`aip.results`, :mod:`aip.cache`;
- :mod:`aip.vision`: the model, preprocessing, postprocessing;
- :mod:`aip.io`: sources, sinks (files, MQTT, webhooks), the sample video, credentials;
- :mod:`aip.track`: trackers, zones and lines, per stream;
- :mod:`aip.backends`: one module per runtime;
- :mod:`aip.pipeline`: the manager and the worker processes;
- :mod:`aip.cluster`: many servers over Dask;
- :mod:`aip.bench`: ``python -m aip.bench``;
- :mod:`aip.app`: the ``aip`` command (``aip bench`` too), config, doctor,
  live view, the web page and REST API.

``tests/unit/test_import_graph.py`` holds the package to this order.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aip import _moved

if TYPE_CHECKING:
    from aip.pipeline import Pipeline, StreamError, StreamEvent
    from aip.vision.models import export

__version__ = "0.1.0"

_moved.install()


def get_include() -> str:
    """Directory of aip's C headers, for Cython modules that ``cimport aip._core``."""
    return str(Path(__file__).parent / "_core" / "include")


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import aip`` stays light for users of aip.ring,
    # and a worker process loads no manager code.
    if name in ("Pipeline", "StreamEvent", "StreamError"):
        from aip import pipeline

        return getattr(pipeline, name)
    if name == "export":
        from aip.vision.models import export

        return export
    raise AttributeError(f"module 'aip' has no attribute {name!r}")


__all__ = ["Pipeline", "StreamError", "StreamEvent", "__version__", "export", "get_include"]
