"""``frames`` mode: the client reads every source and spreads its frames over the nodes.

Frames go out in calls of up to ``frames_per_call``, at most
``max_in_flight`` calls in flight per node, the node with fewest first: each
node keeps its own window full, so a faster node simply takes more. The
streams take turns, one frame each. A lost node's frames in flight are sent
again, first, to the other nodes; whatever the lost actor still answers is
dropped (see :mod:`aip.cluster.membership`).
"""
from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aip.cluster.membership import Membership, NodeHandle, Reply, describe
from aip.cluster.options import FramesOptions
from aip.cluster.ordering import ClientStream, OrderedDelivery
from aip.cluster.wire import encode_frame
from aip.pipeline.reorder import Gap
from aip.results import FrameResult

log = logging.getLogger("aip.cluster")

# (client stream, frame id, payload): one frame on its way to a node.
Work = tuple[str, int, Any]


class FramesMode:
    """One run of ``frames``: sources are specs the client opens, or iterables
    of frames (arrays, or ``(array, capture_ns)`` pairs)."""

    def __init__(self, membership: Membership, streams: dict[str, ClientStream],
                 delivery: OrderedDelivery, options: FramesOptions) -> None:
        from aip.io.sources import open_source

        for stream in streams.values():
            if isinstance(stream.source, (str, Path, int)):
                stream.source = open_source(stream.source)
            stream.iterator = _frames_of(stream.source)
        self._membership = membership
        self._streams = streams
        self._delivery = delivery
        self._options = options
        self._retry: deque[Work] = deque()  # frames of lost nodes, sent again first
        self._turns = itertools.cycle(list(streams.values()))
        self._calls: dict[str, int] = {}  # node -> its calls in flight
        self._in_flight: dict[str, dict[tuple[str, int], Any]] = {}  # node -> its frames' payloads

    def results(self) -> Iterator[FrameResult | Gap]:
        """Every stream's results, in order per stream, until every frame is answered."""
        membership = self._membership
        membership.on_lost = self._on_lost
        while not all(stream.complete for stream in self._streams.values()):
            self._send()
            if not membership.live() and self._work_left():
                membership.wait_for_a_node()
            for reply in membership.replies():
                yield from self._answered(reply)

    def _work_left(self) -> bool:
        return bool(self._retry) or any(self._in_flight.values()) or not all(
            stream.exhausted for stream in self._streams.values())

    def _send(self) -> None:
        """Fill every live node's calls, the one with fewest in flight first."""
        options = self._options
        while True:
            free = sorted((self._calls.get(node.name, 0), node.name) for node in self._membership.live()
                          if self._calls.get(node.name, 0) < options.max_in_flight)
            if not free:
                return
            batch: list[Work] = []
            while len(batch) < options.frames_per_call and (work := self._next_frame()) is not None:
                batch.append(work)
            if not batch:
                return
            node = self._membership.nodes[free[0][1]]
            in_flight = self._in_flight.setdefault(node.name, {})
            for stream_name, frame_id, payload in batch:
                in_flight[(stream_name, frame_id)] = payload
                self._streams[stream_name].metrics.frames_published += 1
            self._calls[node.name] = self._calls.get(node.name, 0) + 1
            if not self._membership.call(node, [(s, i) for s, i, _ in batch], "infer", batch):
                return  # its reply (an error) hands the batch over

    def _next_frame(self) -> Work | None:
        """A lost node's frame, else the next stream's next frame; None: none left now."""
        if self._retry:
            return self._retry.popleft()
        for _ in range(len(self._streams)):
            stream = next(self._turns)
            if stream.exhausted:
                continue
            if stream.max_frames is not None and stream.issued >= stream.max_frames:
                item = None
            else:
                assert stream.iterator is not None
                item = next(stream.iterator, None)
            if item is None:
                stream.exhausted = True
                stream.metrics.state = "ended"
                continue
            frame, captured = item
            frame_id = stream.issued
            stream.issued += 1
            stream.metrics.frames_read += 1
            stream.capture_ns[frame_id] = captured
            return stream.name, frame_id, encode_frame(frame, self._options.encoding)
        return None

    def _answered(self, reply: Reply) -> Iterator[FrameResult | Gap]:
        node = reply.node
        self._calls[node] = self._calls.get(node, 0) - 1
        if reply.error is not None:
            log.warning("%d frames failed on node %s: %s", len(reply.key), node, describe(reply.error))
        answers = reply.value if reply.error is None else [
            Gap(frame_id, "failed", stream) for stream, frame_id in reply.key]
        in_flight = self._in_flight.setdefault(node, {})
        for key, item in zip(reply.key, answers):
            if in_flight.pop(key, None) is None:
                continue  # resent after a loss and answered already
            yield from self._delivery.deliver(self._streams[key[0]], item, node)

    def _on_lost(self, node: NodeHandle) -> None:
        in_flight = self._in_flight.pop(node.name, {})
        self._calls.pop(node.name, None)
        self._retry.extendleft(sorted(((stream, frame_id, payload) for (stream, frame_id), payload
                                       in in_flight.items()), reverse=True))
        if in_flight:
            self._membership.event(f"{len(in_flight)} frames in flight on node {node.name} go to "
                                   "the other nodes")


def _frames_of(source: Any) -> Iterator[tuple[np.ndarray, int]]:
    """``(frame, capture_ns)`` pairs of a source, stamped now where it has no time of its own."""
    for item in source:
        if isinstance(item, tuple):
            yield item[0], int(item[1]) or time.perf_counter_ns()
        else:
            yield item, time.perf_counter_ns()


__all__ = ["FramesMode"]
