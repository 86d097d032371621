"""What the stream tests check of a run's output, shared by them."""
from __future__ import annotations

from collections import defaultdict
from typing import Any


def by_stream(out: list[Any]) -> dict[str, list[Any]]:
    """A run's results and gaps, per stream, in the order they came."""
    streams: dict[str, list[Any]] = defaultdict(list)
    for item in out:
        streams[item.stream].append(item)
    return streams


def assert_in_order(items: list[Any], count: int) -> None:
    """One stream's output: every frame id from 0, once each, in order."""
    assert [item.frame_id for item in items] == list(range(count))


# An upper bound for polling on a loaded machine, never a measurement.
PATIENCE_S = 60.0


def wait_for(condition: Any, timeout_s: float = PATIENCE_S) -> Any:
    """Poll ``condition()`` until it gives something true; that value."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("the condition never held")
