"""What the page shows of the frames: each stream's latest frame, drawn and
encoded only when someone looks.

    run loop (the caller's thread)            web thread (uvicorn) and its workers
        |  write(result): O(1), no encode         |  tile(stream): draw + downscale + JPEG,
        v                                         v  at most once per frame, TILE_FPS a stream
    LiveView: latest FrameResult per stream --> Tile cache (stream -> last encoded tile)
              recent TrackEvents (deque)   --> events()
              results per second (deque)   --> fps_history()

The run loop never waits on a viewer: ``write`` keeps references and counts,
under a lock held for a few dict and deque operations. Everything that costs
(drawing the boxes, scaling, JPEG) happens in the web thread, when a viewer
asks, and is shared by every viewer of the same frame.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aip.io.sinks import annotate_result
from aip.results import FrameResult, Gap, TrackEvent

__all__ = ["EVENTS_KEPT", "FPS_HISTORY_S", "JPEG_QUALITY", "TILE_FPS", "TILE_WIDTH", "LiveView", "Tile"]

# Tiles are made at most this many times a second per stream, whatever the
# number of viewers (and the page asks no faster). 5 FPS shows motion well
# enough to see that a camera is live and what the boxes follow; each step
# up costs one more draw + JPEG a second per stream in the manager process
# (a few ms of one core at 480 px), which the workers' results wait behind
# when they share a core with it.
TILE_FPS = 5.0
# A tile's width in pixels (frames narrower than this are not enlarged).
# 480 px keeps a label readable in a grid of tiles; a JPEG of it is 20-60 kB.
TILE_WIDTH = 480
# OpenCV's JPEG quality, 0-100: 70 is half the bytes of 95 and looks the
# same at tile size.
JPEG_QUALITY = 70
# Track events kept for the page (zone entries and exits, line crossings).
EVENTS_KEPT = 200
# Seconds of delivered-FPS history: one sample a second, five minutes.
FPS_HISTORY_S = 300
# A stream's recent FPS is taken over its last this many results (at most
# FPS_WINDOW_S): short enough to follow a change within seconds.
_STAMPS_KEPT = 64
FPS_WINDOW_S = 3.0


@dataclass(frozen=True)
class Tile:
    """One encoded view of a stream: its latest frame, drawn, scaled, JPEG."""

    stream: str
    frame_id: int
    jpeg: bytes
    width: int
    height: int
    serial: int  # unique per encode: the ETag
    made_at: float  # monotonic seconds
    result: FrameResult = dataclasses.field(repr=False, compare=False)

    @property
    def etag(self) -> str:
        return f'"t{self.serial}"'


class LiveView:
    """A sink that keeps what a live page needs of a run (see the module).

    Feed it every ordered result (``write``), as any sink; the run must keep
    frames (``Pipeline(keep_frames=True)``) for tiles to exist. Read it from
    other threads: ``tile``, ``events``, ``fps_history``, ``stream_fps``.
    """

    def __init__(self, *, tile_width: int = TILE_WIDTH, tile_fps: float = TILE_FPS,
                 jpeg_quality: int = JPEG_QUALITY, events_kept: int = EVENTS_KEPT,
                 history_s: int = FPS_HISTORY_S, clock: Callable[[], float] = time.monotonic) -> None:
        if tile_width < 16 or tile_fps <= 0 or not 0 <= jpeg_quality <= 100:
            raise ValueError("tile_width must be >= 16, tile_fps > 0 and jpeg_quality 0-100")
        self.tile_width = tile_width
        self.tile_fps = tile_fps
        self.jpeg_quality = jpeg_quality
        self.history_s = history_s
        self.clock = clock
        self.closed = False
        self.encoded = 0  # tiles made: at most one per frame and stream, TILE_FPS a stream
        self._lock = threading.Lock()  # held by write for O(1) work only
        self._latest: dict[str, FrameResult] = {}
        self._stamps: dict[str, deque[float]] = {}
        self._events: deque[TrackEvent] = deque(maxlen=events_kept)
        self._history: deque[tuple[int, int]] = deque(maxlen=history_s)  # (second, results)
        self._second: int | None = None
        self._in_second = 0
        self._first_second: int | None = None
        self._tiles: dict[str, Tile] = {}
        self._encoding: dict[str, threading.Lock] = {}
        self._serials = itertools.count(1)

    # ---- the sink side: the run loop's thread ------------------------------------------------

    def write(self, result: FrameResult | Gap) -> None:
        """Keep ``result`` if it has a frame; count it. O(1); never encodes."""
        if isinstance(result, Gap):
            return
        now = self.clock()
        second = int(now)
        with self._lock:
            if result.frame is not None:
                self._latest[result.stream] = result
            stamps = self._stamps.get(result.stream)
            if stamps is None:
                stamps = self._stamps[result.stream] = deque(maxlen=_STAMPS_KEPT)
            stamps.append(now)
            if result.events:
                self._events.extend(result.events)
            if second != self._second:
                if self._second is not None:
                    self._history.append((self._second, self._in_second))
                else:
                    self._first_second = second
                self._second, self._in_second = second, 0
            self._in_second += 1

    def close(self) -> None:
        """The run ended: what was kept stays readable."""
        self.closed = True

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def forget(self, stream: str) -> None:
        """Drop a stream's frame and tile (it was removed)."""
        with self._lock:
            self._latest.pop(stream, None)
            self._stamps.pop(stream, None)
            self._tiles.pop(stream, None)

    # ---- the viewer side: the web thread -------------------------------------------------------

    def streams(self) -> list[str]:
        """The streams that have a frame to show."""
        with self._lock:
            return list(self._latest)

    def latest_frame_id(self, stream: str) -> int | None:
        result = self._latest.get(stream)
        return None if result is None else result.frame_id

    def cached_tile(self, stream: str) -> Tile | None:
        """The tile made last, if it is still the one to serve (see :meth:`tile`); else None.
        Cheap: for the event loop, before it hands :meth:`tile` to a thread."""
        latest = self._latest.get(stream)
        made = self._tiles.get(stream)
        return made if latest is not None and made is not None and self._fresh(made, latest) else None

    def tile(self, stream: str) -> Tile | None:
        """The stream's latest frame as a :class:`Tile`; None before its first.

        Made at most once per frame, and at most ``tile_fps`` times a second
        per stream: a viewer asking sooner gets the tile made last. Two
        viewers asking at once make it once (the second waits for the first).
        Call it from a worker thread: it draws and encodes (OpenCV lets go of
        the GIL meanwhile)."""
        latest = self._latest.get(stream)
        if latest is None:
            return None
        made = self._tiles.get(stream)
        if made is not None and self._fresh(made, latest):
            return made
        with self._lock:
            encoding = self._encoding.setdefault(stream, threading.Lock())
        with encoding:
            latest = self._latest.get(stream, latest)
            made = self._tiles.get(stream)
            if made is not None and self._fresh(made, latest):
                return made  # another viewer made it meanwhile
            tile = self._encode(stream, latest)
            with self._lock:
                if stream in self._latest:  # not forgotten meanwhile
                    self._tiles[stream] = tile
            return tile

    def _fresh(self, made: Tile, latest: FrameResult) -> bool:
        return made.result is latest or self.clock() - made.made_at < 1.0 / self.tile_fps

    def _encode(self, stream: str, result: FrameResult) -> Tile:
        import cv2

        assert result.frame is not None  # only results with a frame are kept
        frame = result.frame
        height, width = frame.shape[:2]
        if width > self.tile_width:
            scale = self.tile_width / width
            size = (self.tile_width, max(1, round(height * scale)))
            # Linear down to half size (a fifth of INTER_AREA's time at 640 -> 480); area below
            # half, where linear would alias (and area's integer ratios are fast).
            small = cv2.resize(np.asarray(frame), size,
                               interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)
            detections = result.detections.copy()
            detections[:, :4] *= scale
            # Drawn after scaling: labels keep their size in pixels, and the
            # boxes are drawn on 480 px rather than on the full frame.
            result = dataclasses.replace(result, frame=small, detections=detections)
        image = annotate_result(result)
        ok, encoded = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode stream {stream!r}'s frame as JPEG")
        self.encoded += 1
        return Tile(stream, result.frame_id, encoded.tobytes(), image.shape[1], image.shape[0],
                    next(self._serials), self.clock(), result)

    def events(self, limit: int | None = None) -> list[TrackEvent]:
        """The recent track events, oldest first (the last ``limit``)."""
        with self._lock:
            events = list(self._events)
        return events[-limit:] if limit else events

    def fps_history(self) -> list[int]:
        """Results delivered in each whole second, oldest first: from the
        first result (or ``history_s`` ago) to the last whole second."""
        now_second = int(self.clock())
        with self._lock:
            samples = dict(self._history)
            if self._second is not None and self._second < now_second:
                samples[self._second] = self._in_second
            first = self._first_second
        if first is None:
            return []
        start = max(first, now_second - self.history_s)
        return [samples.get(second, 0) for second in range(start, now_second)]

    def stream_fps(self, stream: str) -> float:
        """The stream's delivered FPS over its last results (``FPS_WINDOW_S`` at most); 0 when none came lately."""
        now = self.clock()
        with self._lock:
            stamps = [t for t in self._stamps.get(stream, ()) if now - t <= FPS_WINDOW_S]
        if len(stamps) < 2:
            return 0.0
        span = stamps[-1] - stamps[0]
        return (len(stamps) - 1) / span if span > 0 else 0.0
