"""One stream's tracking (tracker, then zones and lines), and the loop of a
tracking process that runs it for a group of streams.

The manager (:mod:`aip.pipeline.tracking`) runs a stream here in its own
process, or in a tracking process over a pipe: ultralytics' trackers cost
about a millisecond a frame in Python, which a manager serving hundreds of
frames a second cannot spend on its own loop. A stream's messages go to one
process, in frame order, and its replies come back in that order.

Messages to the process (tuples, pickled by the pipe):

    ("open", stream, TrackerConfig, zones, lines, class_names)
    ("frame", stream, frame_id, capture_ns, timestamp, detections)  -> a reply
    ("gap", stream, frame_id)                                       (no reply)
    ("forget", stream)                                              (no reply)
    ("ping", None)                                                  -> ("pong",)

Replies: ``("frame", detections, track_ids, events, counts or None)`` for
every frame, in order; ``counts`` (the stream's zone and line counts) only
when they changed. The process exits when the pipe closes: its manager is
gone or done.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from aip.results import FrameResult, TrackEvent
from aip.track.tracker import StreamTracker, TrackerConfig
from aip.track.zones import Line, RegionCounter, Zone

__all__ = ["TrackedStream", "serve"]


class TrackedStream:
    """A stream's tracker and its zones and lines, fed in frame order."""

    def __init__(self, name: str, config: TrackerConfig, zones: Sequence[Zone] = (),
                 lines: Sequence[Line] = (), class_names: Sequence[str] | None = None) -> None:
        self.name = name
        self.tracker = StreamTracker(config)
        self.regions = RegionCounter(name, zones, lines) if zones or lines else None
        self.class_names = tuple(class_names) if class_names is not None else None
        self._pending: list[TrackEvent] = []  # a gap's events go out with the next result

    def update(self, result: FrameResult, timestamp: float) -> FrameResult:
        """``result`` tracked, with the events of its frame (and of the gaps before it)."""
        tracked = self.tracker.update(result)
        if self.regions is None:
            return tracked
        assert tracked.track_ids is not None
        events = self._pending + self.regions.update(
            tracked.frame_id, tracked.t_capture_ns, timestamp, tracked.detections[:, :4],
            tracked.track_ids, tracked.detections[:, 5].astype(np.int64), self.class_names)
        self._pending = []
        return dataclasses.replace(tracked, events=tuple(events)) if events else tracked

    def skip(self, frame_id: int) -> None:
        """A frame with no result: time passes for the tracker and the regions."""
        self.tracker.skip()
        if self.regions is not None:
            self._pending += self.regions.skip(frame_id)

    def counts(self) -> dict[str, Any] | None:
        return self.regions.counts() if self.regions is not None else None


def serve(conn: Any) -> None:
    """A tracking process: serve the messages of the module docstring until the pipe closes."""
    streams: dict[str, TrackedStream] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the manager closed the pipe, or is gone
        kind, name = message[0], message[1]
        if kind == "frame":
            _, _, frame_id, capture_ns, timestamp, detections = message
            stream = streams[name]
            result = FrameResult(frame_id, "", 0, detections, capture_ns, 0, 0, 0, 0, stream=name)
            tracked = stream.update(result, timestamp)
            counts = stream.counts() if tracked.events else None
            conn.send(("frame", tracked.detections, tracked.track_ids, tracked.events, counts))
        elif kind == "gap":
            streams[name].skip(message[2])
        elif kind == "open":
            _, _, config, zones, lines, class_names = message
            streams[name] = TrackedStream(name, config, zones, lines, class_names)
        elif kind == "forget":
            streams.pop(name, None)
        elif kind == "ping":  # every message before it is done: the streams are ready
            conn.send(("pong",))
