"""Whole streams to nodes, by each node's calibrated capacity."""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def assign_streams(streams: Sequence[str], capacity: Mapping[str, float],
                   load: Mapping[str, int] | None = None) -> dict[str, str]:
    """Each stream to a node, so that streams per unit of capacity stay even.

    Every stream is taken to cost the same (a stream's own rate is unknown
    before it runs); a node of twice the calibrated FPS gets twice the
    streams. ``load`` counts the streams a node runs already (a stream taken
    over from a lost node joins them). Ties go to the node named first.
    """
    if not capacity:
        raise ValueError("no node to assign streams to")
    counts = {node: int((load or {}).get(node, 0)) for node in capacity}
    placed: dict[str, str] = {}
    for stream in streams:
        node = min(capacity, key=lambda n: ((counts[n] + 1) / max(capacity[n], 1e-9), n))
        counts[node] += 1
        placed[stream] = node
    return placed
