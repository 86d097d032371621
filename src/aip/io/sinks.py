"""Where ordered results go: JSON Lines, an annotated video, or a Python callback.

Every sink takes :meth:`write` once per frame, in frame order, with either a
:class:`aip.results.FrameResult` or a :class:`aip.results.Gap` (a frame
dropped or lost), and :meth:`close` at the end; each is a context manager.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from aip.io.credentials import redact
from aip.results import FrameResult, Gap

__all__ = ["AnnotatedVideoSink", "CallbackSink", "JsonLinesSink", "Sink", "annotate_result"]


class Sink(Protocol):
    """Consumes ordered results."""

    def write(self, result: FrameResult | Gap) -> None: ...

    def close(self) -> None: ...


class _SinkBase:
    def write(self, result: FrameResult | Gap) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what the sink holds."""

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class JsonLinesSink(_SinkBase):
    """One JSON object per line and frame.

    A result: ``{"stream", "frame_id" (its position in the stream), "backend",
    "worker", "latency_ms" (capture to
    ordered result), "inference_ms", "detections": [[x1, y1, x2, y2, score,
    class], ...]}``, plus ``"names"`` (one per detection) when
    ``class_names`` is given. Coordinates and scores are the float32 values
    exactly (they read back bit for bit). A gap: ``{"stream", "frame_id",
    "dropped": reason}`` (reason: dropped, late, lost, ...). A tracked stream's
    result adds ``"track_ids"`` (one per detection) and, when its frame caused
    any, ``"events"`` (:meth:`aip.results.TrackEvent.to_dict`); ``"names"``
    come from ``class_names``, else from the result's (the model's).

    Lines are flushed as written, so a crash loses at most the line in progress.
    The stream's name is written redacted (:func:`aip.io.credentials.redact`): a
    stream named by its URL writes ``rtsp://***@host/...``, never a password.
    """

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.class_names = list(class_names) if class_names is not None else None
        self._file = self.path.open("w", encoding="utf-8", buffering=1)

    def write(self, result: FrameResult | Gap) -> None:
        record = result_record(result, self.class_names)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def result_record(result: FrameResult | Gap, class_names: Sequence[str] | None = None, *,
                  events: bool = True) -> dict[str, Any]:
    """The JSON record of a result or a gap (:class:`JsonLinesSink` says what
    it holds); the MQTT and webhook sinks send the same. Stream names redacted."""
    if isinstance(result, Gap):
        return {"stream": redact(result.stream), "frame_id": result.frame_id, "dropped": result.reason}
    detections = result.detections.tolist()
    for row in detections:
        row[5] = int(row[5])
    record: dict[str, Any] = {
        "stream": redact(result.stream),
        "frame_id": result.frame_id,
        "backend": result.backend,
        "worker": result.worker,
        "latency_ms": round(result.end_to_end_ms, 3),
        "inference_ms": round(result.inference_ms, 3),
        "detections": detections,
    }
    names = class_names if class_names is not None else result.class_names
    if names is not None:
        record["names"] = [names[row[5]] if row[5] < len(names) else str(row[5]) for row in detections]
    if result.track_ids is not None:
        record["track_ids"] = result.track_ids.tolist()
    if events and result.events:
        record["events"] = event_records(result)
    return record


def event_records(result: FrameResult) -> list[dict[str, Any]]:
    """``result``'s events as JSON records, their stream names redacted."""
    return [{**event.to_dict(), "stream": redact(event.stream)} for event in result.events]


# How many past centres a track's trail shows in the annotated video: about
# half a second at 30 FPS; longer trails clutter a busy scene.
TRAIL_POINTS = 16
# Box colours (BGR), one per class modulo the palette: ultralytics' palette.
_PALETTE = [
    (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
    (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
    (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
    (200, 149, 255), (199, 55, 255),
]  # fmt: skip


class AnnotatedVideoSink(_SinkBase):
    """Writes each frame with its boxes and labels drawn into a video file (OpenCV, ``mp4v``).

    Needs the frames: results must carry ``FrameResult.frame``. Gaps are
    skipped (counted in :attr:`skipped`), so the video holds the frames
    that have results.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        size: tuple[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        codec: str = "mp4v",
    ) -> None:
        """``size`` is the video's ``(width, height)``, as OpenCV takes it; default the first frame's.

        Frames of another size are scaled to it after drawing.
        """
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.size = size
        self.class_names = list(class_names) if class_names is not None else None
        self.codec = codec
        self.written = 0
        self.skipped = 0
        self._writer: Any = None
        self._trails: dict[int, deque[tuple[int, int]]] = {}

    def _open(self, size: tuple[int, int]) -> Any:
        import cv2

        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*self.codec), self.fps, size)
        if not writer.isOpened():
            raise ValueError(f"cannot write video {self.path} with codec {self.codec!r} at {size[0]}x{size[1]}")
        return writer

    def write(self, result: FrameResult | Gap) -> None:
        import cv2

        if isinstance(result, Gap):
            self.skipped += 1
            return
        if result.frame is None:
            raise ValueError(f"frame {result.frame_id} came without its image: AnnotatedVideoSink needs frames kept")
        image = self.draw(result.frame, result.detections, self.class_names or result.class_names,
                          result.track_ids)
        if result.track_ids is not None:
            self._draw_trails(image, result)
        if self._writer is None:
            self.size = self.size or (image.shape[1], image.shape[0])
            self._writer = self._open(self.size)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.written += 1

    def _draw_trails(self, image: np.ndarray, result: FrameResult) -> None:
        """Each track's last ``TRAIL_POINTS`` box centres, as a line behind it."""
        import cv2

        assert result.track_ids is not None
        seen = set()
        for (x1, y1, x2, y2, _, label), track_id in zip(result.detections.tolist(), result.track_ids.tolist()):
            trail = self._trails.setdefault(track_id, deque(maxlen=TRAIL_POINTS))
            trail.append((int((x1 + x2) / 2), int((y1 + y2) / 2)))
            seen.add(track_id)
            if len(trail) > 1:
                color = _PALETTE[int(label) % len(_PALETTE)]
                cv2.polylines(image, [np.array(trail, np.int32)], False, color, 2, cv2.LINE_AA)
        for gone in [track_id for track_id in self._trails if track_id not in seen]:
            del self._trails[gone]  # a track not in this frame starts a new trail when it is back

    def annotate(self, frame: np.ndarray, detections: np.ndarray) -> np.ndarray:
        """A copy of ``frame`` with ``detections`` ((K, 6), frame pixels) drawn on it."""
        return self.draw(frame, detections, self.class_names)

    @staticmethod
    def draw(frame: np.ndarray, detections: np.ndarray, class_names: Sequence[str] | None = None,
             track_ids: np.ndarray | None = None) -> np.ndarray:
        """A copy of ``frame`` with boxes and labels (``#id`` first when tracked) drawn on it."""
        import cv2

        image = np.array(frame, dtype=np.uint8, copy=True)  # frames may be read-only ring views
        thickness = max(1, round(sum(image.shape[:2]) / 600))
        ids = track_ids.tolist() if track_ids is not None else [None] * len(detections)
        for (x1, y1, x2, y2, score, label), track_id in zip(detections.tolist(), ids):
            cls = int(label)
            color = _PALETTE[cls % len(_PALETTE)]
            name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
            top_left = (int(x1), int(y1))
            cv2.rectangle(image, top_left, (int(x2), int(y2)), color, thickness, cv2.LINE_AA)
            text = f"{name} {score:.2g}" if track_id is None else f"#{track_id} {name} {score:.2g}"
            (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            text_top = max(top_left[1] - text_h - baseline, 0)  # above the box, inside the image
            cv2.rectangle(
                image, (top_left[0], text_top), (top_left[0] + text_w, text_top + text_h + baseline), color, -1
            )
            cv2.putText(
                image,
                text,
                (top_left[0], text_top + text_h),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
        return image

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def annotate_result(result: FrameResult, class_names: Sequence[str] | None = None) -> np.ndarray:
    """A copy of ``result.frame`` with its boxes, labels (and track ids, when tracked) drawn.

    Needs the frame: the run must keep frames (``Pipeline(keep_frames=True)``).
    """
    if result.frame is None:
        raise ValueError(f"frame {result.frame_id} came without its image: keep frames to draw it")
    names = class_names if class_names is not None else result.class_names
    return AnnotatedVideoSink.draw(result.frame, result.detections, names, result.track_ids)


class CallbackSink(_SinkBase):
    """Calls ``callback(result)`` for every result and gap, in frame order."""

    def __init__(self, callback: Callable[[FrameResult | Gap], object]) -> None:
        self.callback = callback

    def write(self, result: FrameResult | Gap) -> None:
        self.callback(result)
