"""A run's streams at the client, and their results put back in order.

Both modes hand every result or gap a node sends to
:meth:`OrderedDelivery.deliver`, which re-orders it into its stream, counts
it in the run's metrics, and lets each frame out once: a frame answered by
a lost node and again by the node that took its work over comes out once.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aip.pipeline.metrics import Metrics, StreamMetrics
from aip.pipeline.reorder import DuplicateFrameError, Gap, ReorderBuffer
from aip.results import FrameResult

# Results a stream may hold out of order before the run fails: far more
# than the frames in flight over every node.
REORDER_CAPACITY = 1 << 16


@dataclass
class ClientStream:
    """One source of a run, as the client numbers it (``s0``, ``s1``, ...)."""

    name: str
    source: Any
    max_frames: int | None
    reorder: ReorderBuffer[FrameResult] = field(init=False)
    metrics: StreamMetrics = field(default_factory=StreamMetrics)
    node: str | None = None  # streams mode: where it runs
    done: bool = False  # streams mode: its node said so
    exhausted: bool = False  # frames mode: no frame left to send
    issued: int = 0  # frames mode: ids handed out
    iterator: Iterator[tuple[np.ndarray, int]] | None = None  # frames mode: the frames it reads
    capture_ns: dict[int, int] = field(default_factory=dict)  # frames mode, in flight

    def __post_init__(self) -> None:
        self.reorder = ReorderBuffer(capacity=REORDER_CAPACITY, on_overflow="raise", stream=self.name)

    @property
    def complete(self) -> bool:
        """Every result of the stream was let out."""
        if self.iterator is not None or self.exhausted:
            return self.exhausted and self.reorder.next_frame_id >= self.issued
        return self.done


class OrderedDelivery:
    """The results of one run, each stream's in order, counted in ``metrics``."""

    def __init__(self, metrics: Metrics, start_ns: int) -> None:
        self.metrics = metrics
        self.start_ns = start_ns

    def deliver(self, stream: ClientStream, item: FrameResult | Gap,
                node: str) -> Iterator[FrameResult | Gap]:
        """Take ``node``'s answer for one of ``stream``'s frames; whatever is now in order."""
        if item.frame_id < stream.reorder.next_frame_id or not self._accept(stream, item, node):
            return  # delivered already (a node lost after sending it): never twice
        for ready in stream.reorder.release_ready():
            if isinstance(ready, FrameResult):
                ready = self._record(stream, ready)
            else:
                stream.capture_ns.pop(ready.frame_id, None)
            yield ready

    def _accept(self, stream: ClientStream, item: FrameResult | Gap, node: str) -> bool:
        """Into the stream's order; False: a duplicate."""
        metrics = self.metrics
        if isinstance(item, Gap):
            try:
                stream.reorder.mark_gap(item.frame_id, item.reason)
            except DuplicateFrameError:
                return False
            if item.reason == "late":
                stream.metrics.frames_late += 1
                metrics.frames_late += 1
            else:
                stream.metrics.frames_dropped += 1
                metrics.frames_dropped += 1
            return True
        item = dataclasses.replace(item, backend=f"{node}/{item.backend}")  # node_a/onnx#0
        try:
            stream.reorder.push(item.frame_id, item)
        except DuplicateFrameError:
            return False
        metrics.record_processed(item.backend, (item.t_infer_end_ns - item.t_infer_start_ns) / 1e9)
        return True

    def _record(self, stream: ClientStream, result: FrameResult) -> FrameResult:
        now = time.perf_counter_ns()
        captured = stream.capture_ns.pop(result.frame_id, None)
        if captured is not None:  # frames mode: the client's own clock, both ends
            result = dataclasses.replace(result, t_capture_ns=captured, t_done_ns=now)
        end_to_end = max(result.t_done_ns - result.t_capture_ns, 0) / 1e9
        self.metrics.record_ordered(result.backend, end_to_end, (now - self.start_ns) / 1e9)
        stream.metrics.frames_ordered += 1
        stream.metrics.end_to_end.record(end_to_end)
        stream.metrics.first_ns = stream.metrics.first_ns or now
        stream.metrics.last_ns = now
        return result


__all__ = ["ClientStream", "OrderedDelivery"]
