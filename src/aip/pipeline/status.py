"""What a run is doing right now: the snapshot behind ``Pipeline.status()``,
the live display and ``/healthz``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aip.pipeline.metrics import Metrics
    from aip.pipeline.pool import WorkerPool
    from aip.pipeline.streams import Stream

# Frames wait in slots and no result came for this long: stalled. Longer
# than any one inference on a loaded machine; shorter than a person waits.
STALLED_AFTER_S = 5.0


def snapshot(pool: WorkerPool, metrics: Metrics, streams: Sequence[Stream], running: bool) -> dict[str, Any]:
    """A live snapshot for progress displays and health checks.

    ``state`` is ``idle`` (no run), ``ready`` (frames flow),
    ``starved`` (workers wait for input: no frame in a slot, the streams
    give none), ``backpressure`` (input waits for the workers: no free
    slot) or ``stalled`` (frames wait in slots, no result for
    ``STALLED_AFTER_S``). Safe to call from another thread.
    """
    named = {s.name: s for s in streams}
    found: dict[str, Any] = {
        "state": "idle",
        "fps": metrics.fps_now(),
        "frames_ordered": metrics.frames_ordered,
        "frames_dropped": metrics.frames_dropped,
        "frames_late": metrics.frames_late,
        "slots": None,
        "workers": [
            {"label": w.label, "device": w.device, "alive": w.alive, "left_out": w.retired,
             "frames": metrics.backends[w.label].frames if w.label in metrics.backends else 0}
            for w in pool.workers
        ],
        "streams": {name: s.metrics.to_dict() for name, s in named.items()},
    }
    table = pool.table
    if not running or table is None:
        return found
    counts = table.counts()
    found["slots"] = counts
    busy = counts["READY"] + counts["READING"]
    since_result = metrics.seconds_since_last_result()
    if busy and since_result is not None and since_result > STALLED_AFTER_S:
        found["state"] = "stalled"
    elif counts["FREE"] == 0:
        found["state"] = "backpressure"
    elif busy == 0:
        found["state"] = "starved"
    else:
        found["state"] = "ready"
    return found
