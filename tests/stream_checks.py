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
