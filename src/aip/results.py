"""What the pipeline hands out per frame, in frame order.

A processed frame is a :class:`FrameResult`; a frame that has no result
(dropped under backpressure, or lost with a dead worker) comes out as an
:class:`Gap` in its place. Sinks take both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FrameResult", "Gap"]


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

    @property
    def inference_ms(self) -> float:
        """Time inside the backend's ``infer``."""
        return (self.t_infer_end_ns - self.t_infer_start_ns) / 1e6

    @property
    def end_to_end_ms(self) -> float:
        """From capture to the ordered result."""
        return (self.t_done_ns - self.t_capture_ns) / 1e6
