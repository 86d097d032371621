"""What the pipeline hands out per frame, in frame order.

A processed frame is a :class:`FrameResult`; a frame that has no result
(dropped under backpressure, or lost with a dead worker) comes out as an
:class:`Gap` in its place. Sinks take both. With tracking on, a result
carries its track ids and the :class:`TrackEvent` s (zone entries and
exits, line crossings) its frame caused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EVENT_KINDS", "FrameResult", "Gap", "TrackEvent"]

EVENT_KINDS = ("enter", "exit", "cross")


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One tracked object entering or leaving a zone, or crossing a line.

    Attributes:
        kind: ``"enter"`` or ``"exit"`` (a zone), ``"cross"`` (a line).
        stream: the stream's name.
        region: the zone's or line's name.
        track_id: the tracker's id of the object (per stream).
        class_id: its class; ``class_name`` the model's name for it, if known.
        frame_id: the frame (its position in the stream) that showed it.
        capture_ns: that frame's capture time (``time.perf_counter_ns()``).
        timestamp: the same instant as UNIX time (seconds), for consumers elsewhere.
        direction: for ``cross``, ``"in"`` or ``"out"`` (the line's sides, see
            :class:`aip.track.Line`); else ``None``.
        dwell_s: for ``exit``, how long the object was inside; else ``None``.
    """

    kind: str
    stream: str
    region: str
    track_id: int
    class_id: int
    class_name: str | None
    frame_id: int
    capture_ns: int
    timestamp: float
    direction: str | None = None
    dwell_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the JSONL, MQTT and webhook sinks send)."""
        record: dict[str, Any] = {
            "kind": self.kind, "stream": self.stream, "region": self.region,
            "track_id": self.track_id, "class_id": self.class_id, "class_name": self.class_name,
            "frame_id": self.frame_id, "timestamp": round(self.timestamp, 6),
        }
        if self.direction is not None:
            record["direction"] = self.direction
        if self.dwell_s is not None:
            record["dwell_s"] = round(self.dwell_s, 3)
        return record


@dataclass(frozen=True, slots=True)
class Gap:
    """Stands in the output for a frame that has no result.

    ``reason`` is what the caller passed to :meth:`aip.pipeline.reorder.ReorderBuffer.mark_gap`
    (e.g. ``"dropped"``), ``"overflow"`` when the buffer gave up waiting for
    the frame, or ``"lost"`` when ``ReorderBuffer.flush`` found it missing.
    ``stream`` names the stream it belongs to (the buffer's ``stream``).
    """

    frame_id: int
    reason: str
    stream: str = ""


@dataclass(frozen=True, slots=True)
class FrameResult:
    """The detections of one frame, and when each stage touched it.

    Timestamps are ``time.perf_counter_ns()`` values: a monotonic clock
    shared by every process of the machine, so stages in different
    processes compare.

    Attributes:
        frame_id: the frame's position in its stream, from 0.
        backend: display name of the backend that ran it (``"onnx"``, ...).
        worker: id of the worker process that ran it.
        detections: ``(K, 6)`` float32 ``[x1, y1, x2, y2, score, class]`` in
            frame pixels, best first.
        t_capture_ns: the source produced the frame.
        t_ingest_ns: the manager put it in the frame ring.
        t_infer_start_ns, t_infer_end_ns: around ``Backend.infer``.
        t_done_ns: the result left the reorder buffer.
        frame: the BGR frame itself, when the run keeps frames (annotated video).
        stream: the name of the stream the frame came from.
        track_ids: with tracking on, ``(K,)`` int64 track ids, one per row of
            ``detections`` (which then holds only the tracked objects, as
            ultralytics' ``model.track`` gives them); else ``None``.
        events: the zone and line events this frame caused (tracking on).
        class_names: the model's class names, when it has them (index = class).
    """

    frame_id: int
    backend: str
    worker: int
    detections: np.ndarray
    t_capture_ns: int
    t_ingest_ns: int
    t_infer_start_ns: int
    t_infer_end_ns: int
    t_done_ns: int
    frame: np.ndarray | None = None
    stream: str = ""
    track_ids: np.ndarray | None = None
    events: tuple[TrackEvent, ...] = ()
    class_names: tuple[str, ...] | None = None

    def class_name(self, class_id: int) -> str:
        """The model's name for ``class_id``, or the number as text."""
        names = self.class_names
        return names[class_id] if names is not None and 0 <= class_id < len(names) else str(class_id)

    @property
    def inference_ms(self) -> float:
        """Time inside the backend's ``infer``."""
        return (self.t_infer_end_ns - self.t_infer_start_ns) / 1e6

    @property
    def end_to_end_ms(self) -> float:
        """From capture to the ordered result."""
        return (self.t_done_ns - self.t_capture_ns) / 1e6
