"""The pipeline: many streams in, ordered detections out, across every backend.

  stream A reader --decode into slot--\\
  stream B reader --decode into slot---> SlotTable --claim--> workers --> ResultRing
  stream C reader (reconnecting) ...--/     ^  target = scheduler's pick     |
                                            |                                 v
                            Pipeline (facade) -- RunLoop: gaps, collect, reorder per stream,
                                                 release, health (WorkerPool, streams)

Three parts, each readable alone, the way CPython keeps the executor, its
manager thread and the worker function apart in concurrent/futures:

- :class:`~aip.pipeline.pool.WorkerPool`: the shared memory and the worker
  processes, their start, health, stalls and reclaimed frames;
- :class:`~aip.pipeline.streams.Stream`: a reader thread per source with its
  own ids, order, FPS cap, on-full policy, max age, reconnects and eviction;
- :class:`~aip.pipeline.loop.RunLoop`: collect, reorder per stream, release,
  health. Calibration drives the pool through the same loop.

:class:`Pipeline` is the small facade over them.

The package is the manager side and the worker side of one contract
(:mod:`aip.pipeline.protocol`: the frame header and the result record). A
worker process imports :mod:`aip.pipeline.worker` and, through it, only the
protocol, the backends and the vision code: this ``__init__`` imports
nothing, and the facade's names load on first use.

May import: :mod:`aip.errors`, the shared-memory modules (:mod:`aip.ring`,
:mod:`aip.segments`, :mod:`aip._core`), :mod:`aip.results`,
:mod:`aip.cache`, :mod:`aip.vision`, :mod:`aip.io` and :mod:`aip.backends`.
Never :mod:`aip.cluster`, :mod:`aip.app` or :mod:`aip.bench`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aip.backends.base import BackendUnavailable
    from aip.pipeline.facade import Pipeline
    from aip.pipeline.pool import WorkerError
    from aip.pipeline.streams import POLICIES, StreamError, StreamEvent

# name -> the module that defines it, imported on first use
_LAZY = {
    "Pipeline": "aip.pipeline.facade",
    "POLICIES": "aip.pipeline.streams",
    "StreamError": "aip.pipeline.streams",
    "StreamEvent": "aip.pipeline.streams",
    "WorkerError": "aip.pipeline.pool",
    "BackendUnavailable": "aip.backends.base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aip.pipeline' has no attribute {name!r}")


__all__ = ["POLICIES", "BackendUnavailable", "Pipeline", "StreamError", "StreamEvent", "WorkerError"]
