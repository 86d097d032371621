"""Streams: one reader thread per source.

Each stream has its own frame ids, order, FPS cap, on-full policy,
``max_age_ms`` and priority. The manager's loop never touches a source, so
a slow decode or a reconnect back-off of several seconds stalls nothing but
its own stream. Two kinds of reader:

- A live source (a camera, an RTSP/HTTP stream: one with ``grab_frame``)
  never holds a slot while it waits for its camera. Its reader drains the
  connection into its own memory (an MJPEG frame stays encoded) and leaves
  the frame *pending*; the run's admission thread
  (:mod:`aip.pipeline.admission`) decides, across every live stream, whose
  frame is decoded into a slot next, and only when a worker can take it soon.
  The policy acts on the pending frames: ``latest`` keeps only the newest
  (the others are dropped undecoded), ``drop-oldest`` / ``drop-newest`` keep
  up to ``PENDING_LIMIT``, ``block`` stops reading while that many wait.
- Any other source (a file, a folder, frames from Python) is read on
  demand: its reader takes a free slot, decodes the next frame into it
  (OpenCV writes into the slot's memory: each frame is written once),
  writes the frame's header and publishes it to the worker the scheduler
  picked. When no slot is free, the stream's policy decides:

    block        wait for one (files: lose nothing)
    drop-newest  read the frame anyway (a live source keeps going) and drop it
    drop-oldest  drop this stream's oldest frame no worker took yet, reuse its slot
    latest       like drop-oldest, and at most one frame of the stream ever
                 waits: publishing a frame takes back the older waiting ones
                 (a camera preview: always the freshest frame)

Dropped and late frames come out as gaps in their stream's order. A stream
that fails (or, for a live source, gives no frame for ``stream_timeout_s``)
is reopened with back-off when it can be (it was given as a spec: a path,
URL or camera index): one policy for the first open and every reopen,
``max_reconnects`` attempts in a row (None: forever), then it is evicted
with an event, and the other streams never notice. A stream has at most
one connection to its camera at any time: a new reader opens only once the
one before it has closed its source.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aip.errors import EXIT_SOURCE, AipError
from aip.io.credentials import redact
from aip.pipeline.metrics import StreamMetrics
from aip.pipeline.reorder import ReorderBuffer
from aip.results import FrameResult
from aip.pipeline.targets import Targets
from aip.io.sources import close_quietly

if TYPE_CHECKING:
    from aip.pipeline.admission import Admission
    from aip.pipeline.pool import WorkerPool
    from aip.io.sources import GrabbedFrame
    from aip.track.zones import Line, Zone

log = logging.getLogger("aip.pipeline")

POLICIES = ("block", "drop-oldest", "drop-newest", "latest")
# Frames a live stream keeps pending under block / drop-oldest / drop-newest
# (latest keeps one): enough to ride out a burst, few enough to stay fresh.
PENDING_LIMIT = 4

# Longest a reader waits in one call for a free slot (block policy) before it
# looks at its stop flag again.
SLOT_WAIT_S = 0.1
# A capture time further in the past than this (or in the future) is from
# another clock: it is replaced by the time the frame was published.
CLOCK_SKEW_LIMIT_NS = 24 * 3600 * 10**9


@dataclass(frozen=True)
class StreamEvent:
    """Something that happened to a stream: ``started``, ``ended``,
    ``reconnecting``, ``evicted`` or ``removed``."""

    stream: str
    kind: str
    message: str
    t_ns: int = field(default_factory=time.perf_counter_ns)


class StreamError(AipError, RuntimeError):
    """Streams were evicted during the run; raised once every result of
    every stream has been delivered. ``events`` are their eviction events."""

    exit_code = EXIT_SOURCE

    def __init__(self, events: list[StreamEvent]) -> None:
        self.events = events
        super().__init__("; ".join(f"stream {redact(e.stream)}: {e.message}" for e in events))


def default_policy(live: bool) -> str:
    """A live source (camera, stream) serves its freshest frame; a file loses nothing."""
    return "latest" if live else "block"


@dataclass(frozen=True)
class StreamOptions:
    fps: float | None = None  # cap: frames are read no faster (files) / thinned (live: skipped)
    policy: str = "block"
    max_age_ms: float | None = None  # older than this when a worker would claim it: late
    max_frames: int | None = None
    priority: float = 1.0  # a live stream's share under overload, against the others'
    latency_budget_ms: float | None = None  # capture -> result; a frame that cannot make it: late
    track: str | None = None  # tracker config (bytetrack.yaml, botsort.yaml, a file); None: none
    zones: tuple[Zone, ...] = ()  # polygons: counts, enter/exit events (they need tracks)
    lines: tuple[Line, ...] = ()  # lines: crossings (they need tracks)

    def __post_init__(self) -> None:
        if self.latency_budget_ms is not None and not self.latency_budget_ms > 0:
            raise ValueError("latency_budget_ms must be > 0")
        if not self.priority > 0:
            raise ValueError(f"priority must be > 0, got {self.priority}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError("fps must be > 0")
        if self.max_age_ms is not None and self.max_age_ms <= 0:
            raise ValueError("max_age_ms must be > 0")


@dataclass(frozen=True)
class ReaderPolicy:
    """How every stream's reader treats its source: one policy for the first
    open and every reopen."""

    keep_frames: bool = False  # keep each frame beside its result (annotated video)
    max_reconnects: int | None = 3  # failures in a row before eviction; None: never evicted
    reconnect_backoff_s: float = 0.5  # doubles with each failure in a row
    stream_timeout_s: float = 10.0  # a live read that gives nothing this long has failed

    def __post_init__(self) -> None:
        if self.max_reconnects is not None and self.max_reconnects < 0:
            raise ValueError("max_reconnects must be >= 0, or None to retry forever")


def reconnect_delay(backoff_s: float, failures: int) -> float:
    """The wait before reopening after ``failures`` failures in a row:
    ``backoff_s``, doubling each time, at most 30 s."""
    return float(min(backoff_s * 2 ** min(max(failures - 1, 0), 16), 30.0))


def is_live(source: Any) -> bool:
    """A camera or network stream: grabbed as it comes, never read on demand."""
    return callable(getattr(source, "grab_frame", None))


def _frames_of(source: Any) -> Iterator[tuple[np.ndarray, int]]:
    """``(frame, capture_ns)`` pairs from a source of frames or of pairs."""
    for item in source:
        if isinstance(item, tuple):
            frame, capture_ns = item
            yield frame, int(capture_ns)
        else:
            yield item, time.perf_counter_ns()


class Stream:
    """One source's state, its reader thread and its reorder buffer.

    The reader thread writes ``issued`` (ids handed out: published or
    dropped) and the counters in ``metrics`` it owns; the run loop owns the
    reorder buffer and reads the rest. Gaps cross over through ``gaps``,
    queued before the id that follows them is published, so the loop, which
    drains gaps before results, keeps each stream's order.
    """

    def __init__(
        self,
        name: str,
        index: int,
        source: Any,
        options: StreamOptions,
        *,
        spec: str | int | Path | None,
        opener: Callable[[Any], Any] | None,
        first: tuple[np.ndarray, int] | None,
        reader: ReaderPolicy,
    ) -> None:
        self.name = name
        self.index = index
        self.options = options
        self.source = source
        self.spec = spec
        self._opener = opener
        self._first = first
        self.reader = reader
        self.live = is_live(source) or (source is None and spec is not None)
        self.metrics = StreamMetrics()
        self.reorder: ReorderBuffer[FrameResult] = ReorderBuffer(
            first_frame_id=0, capacity=1 << 16, on_overflow="gap", stream=name)
        self.issued = 0
        self.gaps: deque[tuple[int, str]] = deque()
        self.events: deque[StreamEvent] = deque()
        self.kept: dict[int, np.ndarray] = {}
        self.finished = False  # the reader is done: no id will be issued any more
        self.failure: StreamEvent | None = None
        self.reading_since: float | None = None  # monotonic, while blocked in a read
        self.missing_since: float | None = None  # the loop's: waiting on frames no slot holds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0  # of the current reader thread; a stuck one is left behind
        self._failures = 0  # in a row: a frame read resets it
        self._context: tuple[WorkerPool, Targets, Iterator[int]] | None = None
        self._feed: _FileFeed | _LiveFeed | None = None  # the reader's part, for the current connection
        self._admission: Admission | None = None  # of the run, for a live stream
        # A live stream's frames grabbed but not in a slot yet: (stream frame id,
        # GrabbedFrame), under the admission's lock; ``credit`` is its service
        # so far, in frames / priority (the admission's deficit round robin).
        self.pending: deque[tuple[int, Any]] = deque()
        self.credit = 0.0
        # Held by the reader that has the source open: one connection per camera.
        self._connection = threading.Lock()
        self._connection_owner = 0  # the generation holding it

    # ---- control (from the loop's thread) ---------------------------------------

    def start(self, pool: WorkerPool, targets: Targets, ids: Iterator[int],
              admission: Admission | None = None) -> None:
        self._context = (pool, targets, ids)
        if self.live:
            if admission is None:
                raise ValueError(f"stream {self.name}: a live source needs the run's admission")
            self._admission = admission
            admission.add(self)
        what = self.spec if self.spec is not None else type(self.source).__name__
        self._event("started", f"{what}, policy {self.options.policy}"
                    + (f", priority {self.options.priority:g}" if self.options.priority != 1 else ""))
        source, self.source = self.source, None
        self._spawn_reader(source)

    def _spawn_reader(self, source: Any) -> None:
        self._generation += 1
        self._thread = threading.Thread(
            target=self._run, args=(self._generation, source),
            name=f"aip-stream-{redact(self.name)}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the reader to stop after the frame in hand; it closes the source."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def frame_shape(self) -> tuple[int, ...] | None:
        """The size of its frames as far as known before it starts (for the slots)."""
        if self._first is not None:
            return tuple(self._first[0].shape)
        shape = getattr(self.source, "shape", None)
        return tuple(shape) if shape is not None else None

    @property
    def complete(self) -> bool:
        """The reader is done and every id it issued has left the reorder buffer."""
        return self.finished and self.reorder.next_frame_id >= self.issued

    def stalled_for(self, now: float) -> float:
        """Seconds the reader has been blocked in one read (0 when it is not).

        A live source's reads time out on their own after ``stream_timeout_s``
        (and its reader then reconnects): it counts only half as fast, so the
        watchdog steps in only for a read that outlives its own timeout.
        """
        since = self.reading_since
        if since is None or self.finished:
            return 0.0
        return (now - since) / (2 if self.live else 1)

    def _attempts(self) -> str:
        return (f"attempt {self._failures}, retrying forever" if self.reader.max_reconnects is None
                else f"attempt {self._failures} of {self.reader.max_reconnects}")

    def _out_of_attempts(self) -> bool:
        return self._opener is None or (self.reader.max_reconnects is not None
                                        and self._failures > self.reader.max_reconnects)

    def restart_stalled(self, waited_s: float) -> None:
        """The reader has hung in a read: leave it behind (it exits when the
        read returns) and go on with a fresh source, or evict the stream."""
        self.reading_since = None
        self._failures += 1
        message = f"no frame for {waited_s:.1f} s"
        if self._out_of_attempts():
            self._generation += 1  # the stuck reader exits when its read returns
            self._evict(message if self._opener is not None
                        else f"{message} (given as an open source: cannot reopen)")
            self.finished = True
            return
        self.metrics.reconnects += 1
        self._event("reconnecting", f"{message}; reopening ({self._attempts()}) once the "
                    "stuck read lets go of the connection")
        self._spawn_reader(None)

    # ---- the reader thread ----------------------------------------------------------

    def _run(self, generation: int, source: Any) -> None:
        assert self._context is not None
        pool, targets, ids = self._context
        connected = False
        feed = _LiveFeed(self) if self.live else _FileFeed(self, pool, targets, ids)
        self._feed = feed  # the reader's state, for the tests that watch it
        try:
            while not self._stop.is_set() and generation == self._generation:
                try:
                    if not connected:
                        connected = self._connect(generation)
                        if not connected:
                            return  # stopped, or left behind, while it waited
                    if source is None:
                        assert self._opener is not None
                        source = self._opener(self.spec)
                    feed.pump(source, generation)
                    if not self._stop.is_set() and generation == self._generation:
                        self._event("ended", f"{self.metrics.frames_read} frames read")
                        self.metrics.state = "ended"
                    return
                except _Stopped:
                    return
                except Exception as exc:  # noqa: BLE001 - a source's failure is its stream's only
                    if generation != self._generation or self._stop.is_set():
                        return  # left behind by a newer reader, or stopped (the pipeline closing)
                    self._failures += 1
                    message = f"{type(exc).__name__}: {exc}"
                    close_quietly(source)
                    source = None
                    if self._out_of_attempts():
                        self._evict(message if self._opener is not None
                                    else f"{message} (given as an open source: cannot reopen)")
                        return
                    self.metrics.reconnects += 1
                    delay = reconnect_delay(self.reader.reconnect_backoff_s, self._failures)
                    self._event("reconnecting", f"{message}; reopening in {delay:.1f} s "
                                f"({self._attempts()})")
                    if self._stop.wait(delay):
                        return
        finally:
            close_quietly(source)
            if connected:
                self._connection.release()
            if generation == self._generation:
                if self._stop.is_set():
                    self._discard_pending()  # stopped: nothing more goes in (an evicted
                    # or ended stream's last frames were read well: they are served)
                self.finished = True
                if self._admission is not None:
                    self._admission.nudge()  # its last pending frames may go now

    def _connect(self, generation: int) -> bool:
        """Wait until no older reader of this stream holds a connection.

        A reader left behind in a hung read closes its source once the read
        returns; the new one waits for that (never two connections to one
        camera), and a wait past ``stream_timeout_s`` counts as a failed
        attempt, like a read that gives nothing.
        """
        waited = 0.0
        while not self._stop.is_set() and generation == self._generation:
            if self._connection.acquire(timeout=min(0.1, self.reader.stream_timeout_s)):
                self._connection_owner = generation
                return True
            waited += 0.1
            if waited >= self.reader.stream_timeout_s:
                raise TimeoutError(f"the previous connection did not close in "
                                   f"{self.reader.stream_timeout_s:g} s")
        return False

    def _discard_pending(self) -> None:
        admission = self._admission
        if admission is None:
            return
        with admission.lock:
            while self.pending:
                old_id, _ = self.pending.popleft()
                self._gap(old_id, "dropped")
                self.metrics.decodes_skipped += 1

    def serve_grabbed(self, pool: WorkerPool, targets: Targets, ids: Iterator[int], stream_frame_id: int,
                      grabbed: GrabbedFrame) -> None:
        """The admission thread's part: decode a pending frame into a free
        slot and publish it (see :func:`_serve_grabbed`)."""
        _serve_grabbed(self, pool, targets, ids, stream_frame_id, grabbed)

    def _evict(self, message: str) -> None:
        self.metrics.state = "evicted"
        self.failure = self._event("evicted", message)
        log.warning("stream %s evicted: %s", redact(self.name), redact(message))

    def _event(self, kind: str, message: str) -> StreamEvent:
        event = StreamEvent(self.name, kind, redact(message))  # events leave the process
        self.events.append(event)
        return event

    def _checked_capture(self, capture_ns: int) -> int:
        """``capture_ns``, or now when it is from another clock."""
        now = time.perf_counter_ns()
        if now - CLOCK_SKEW_LIMIT_NS <= capture_ns <= now:
            return capture_ns
        # Stamped with another clock (a caller's time.time_ns()) or in the
        # future: its latency and deadline would be nonsense.
        self.metrics.clock_clamped += 1
        if self.metrics.clock_clamped == 1:
            log.warning("stream %s: capture times are not time.perf_counter_ns() stamps (one "
                        "was %.1f s off): timing frames from when they were read instead",
                        redact(self.name), (capture_ns - now) / 1e9)
        return now

    def _route(self, targets: Targets, frame_id: int, capture_ns: int) -> tuple[int, int] | None:
        """``(worker, latest start)`` for the frame, or None when its latency
        budget cannot be met by any worker."""
        budget = self.options.latency_budget_ms
        return targets.target_for(frame_id, capture_ns + int(budget * 1e6) if budget else 0)

    def _publish_slot(self, pool: WorkerPool, stream_frame_id: int, slot: int, image: np.ndarray,
                      height: int, width: int, capture_ns: int, frame_id: int,
                      route: tuple[int, int]) -> int:
        """Write the frame's header and publish it as ``frame_id`` to the
        route's worker; its generation. A worker that claims it after the
        route's latest start (or past ``max_age_ms``) skips it: late."""
        target, latest_start = route
        assert pool.frames is not None  # a started pool's
        header = pool.frames.headers[slot]
        header["stream"] = self.index
        header["height"] = height
        header["width"] = width
        header["stream_frame_id"] = stream_frame_id
        header["t_capture_ns"] = capture_ns
        max_age = self.options.max_age_ms
        deadlines = [d for d in (capture_ns + int(max_age * 1e6) if max_age else 0, latest_start) if d]
        header["deadline_ns"] = min(deadlines) if deadlines else 0
        header["attempts"] = 0
        if self.reader.keep_frames:
            self.kept[stream_frame_id] = image.copy()
        generation = int(pool.table.publish(slot, frame_id, target))
        self.metrics.frames_published += 1
        return generation

    def _next_id(self) -> int:
        stream_frame_id = self.issued
        self.issued += 1
        return stream_frame_id

    def _gap(self, stream_frame_id: int, reason: str) -> None:
        self.gaps.append((stream_frame_id, reason))  # the loop counts it when it takes it


class _FileFeed:
    """The reader's part for a file, folder or iterator: each frame read
    straight into a slot (or a scratch frame when none is free), and
    published. One per reader thread: what it keeps (``waiting``: its
    published frames no worker took yet; ``place``: the claim-order place a
    refreshed frame inherits) ends with the connection."""

    def __init__(self, stream: Stream, pool: WorkerPool, targets: Targets, ids: Iterator[int]) -> None:
        self.stream = stream
        self.pool = pool
        self.targets = targets
        self.ids = ids
        # Published frames that may still wait: (slot, frame id, stream id, generation).
        self.waiting: deque[tuple[int, int, int, int]] = deque()
        self.place: int | None = None
        self.scratch: np.ndarray | None = None  # a frame read while no slot was free

    def pump(self, source: Any, generation: int) -> None:
        """Read frames until the source ends, the stream stops or max_frames."""
        stream = self.stream
        read_into = getattr(source, "read_into", None)
        iterator = None if read_into is not None else _frames_of(source)
        shape = getattr(source, "shape", None) if read_into is not None else None
        period_ns = int(1e9 / stream.options.fps) if stream.options.fps else 0
        started_ns = time.perf_counter_ns()
        paced = 0
        while not stream._stop.is_set():
            if stream.options.max_frames is not None and stream.issued >= stream.options.max_frames:
                return
            if period_ns:  # the FPS cap: not before this frame's due time
                due = started_ns + paced * period_ns - time.perf_counter_ns()
                if due > 0 and stream._stop.wait(due / 1e9):
                    return
                paced += 1
            # A frame of a known size goes straight into a slot; one of
            # unknown size (a plain iterator's) is read first, then copied.
            frame: np.ndarray | None = None
            capture_ns = 0
            size = shape
            if iterator is not None or shape is None:
                item = self._next_plain(iterator)
                if item is None or generation != stream._generation:
                    return  # ended, or left behind while it read
                frame, capture_ns = item
                size = frame.shape
            assert size is not None  # the source's shape, or the plain frame's
            height, width = self._checked_size(size, frame)
            if not self._into_slot(read_into, frame, capture_ns, height, width, generation):
                return

    def _checked_size(self, shape: tuple[int, ...], frame: np.ndarray | None) -> tuple[int, int]:
        assert self.pool.max_frame_shape is not None  # a started pool's
        max_h, max_w, _ = self.pool.max_frame_shape
        if frame is not None and (frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8):
            raise ValueError(f"frames must be HxWx3 uint8 (BGR), got {frame.shape} {frame.dtype}")
        height, width = int(shape[0]), int(shape[1])
        if height > max_h or width > max_w:
            raise ValueError(
                f"frames are {width}x{height}, larger than the pipeline's slots "
                f"({max_w}x{max_h}): pass max_frame_shape=(H, W, 3) big enough for every stream")
        return height, width

    def _into_slot(self, read_into: Any, frame: np.ndarray | None, capture_ns: int, height: int,
                   width: int, generation: int) -> bool:
        """Put one frame in a slot (read straight into it when ``frame`` is
        None) and publish it, or drop it as the policy says. False: the
        source ended or this reader was left behind."""
        stream, table, frames = self.stream, self.pool.table, self.pool.frames
        assert frames is not None  # a started pool's
        slot = self._slot_for_policy(table)
        if slot is None:  # no slot now: read into scratch, then the policy decides
            if frame is None:
                if self.scratch is None or self.scratch.shape != (height, width, 3):
                    self.scratch = np.empty((height, width, 3), np.uint8)
                read_ns = self._read_into(read_into, self.scratch)
                if read_ns is None or generation != stream._generation:
                    return False
                frame, capture_ns = self.scratch, read_ns
            slot = self._make_room(table)
            if slot is None:
                stream._gap(stream._next_id(), "dropped")
                return True
        try:
            image = frames.image(slot, height, width)
            if frame is None:
                read_ns = self._read_into(read_into, image)
                if read_ns is None or generation != stream._generation:
                    table.abort(slot)
                    return False
                capture_ns = read_ns
            else:
                np.copyto(image, frame)
            self._publish(slot, image, height, width, capture_ns)
        except BaseException:
            _abort_quietly(table, slot)
            raise
        return True

    def _next_plain(self, iterator: Iterator[tuple[np.ndarray, int]] | None) -> tuple[np.ndarray, int] | None:
        stream = self.stream
        if stream._first is not None:
            frame, capture_ns = stream._first
            # A frame peeked (for its size) before the run began is stamped
            # now: its wait for the workers to start is not the stream's latency.
            item: tuple[np.ndarray, int] | None = (frame, capture_ns or time.perf_counter_ns())
            stream._first = None
        else:
            assert iterator is not None
            stream.reading_since = time.monotonic()
            try:
                item = next(iterator, None)
            finally:
                stream.reading_since = None
        if item is not None:
            stream.metrics.frames_read += 1
            stream._failures = 0
        return item

    def _read_into(self, read_into: Any, out: np.ndarray) -> int | None:
        stream = self.stream
        stream.reading_since = time.monotonic()
        try:
            capture_ns = read_into(out)
        finally:
            stream.reading_since = None
        if capture_ns is not None:
            stream.metrics.frames_read += 1
            stream._failures = 0
        return None if capture_ns is None else int(capture_ns)

    def _slot_for_policy(self, table: Any) -> int | None:
        """A free slot, waiting for one under ``block``; None when none is free."""
        stream = self.stream
        try:
            return int(table.acquire_free(timeout=0))
        except TimeoutError:
            pass
        if stream.options.policy != "block":
            return None
        stream.metrics.buffer_full_waits += 1
        while not stream._stop.is_set():
            try:
                return int(table.acquire_free(timeout=SLOT_WAIT_S))
            except TimeoutError:
                continue
        raise _Stopped

    def _make_room(self, table: Any) -> int | None:
        """drop-oldest / latest: take back this stream's oldest frame nobody
        claimed yet and drop it; its slot takes the new frame."""
        stream = self.stream
        if stream.options.policy not in ("drop-oldest", "latest"):
            return None
        while self.waiting:
            slot, frame_id, stream_frame_id, generation = self.waiting.popleft()
            if table.take_back(slot, frame_id, generation):
                stream._gap(stream_frame_id, "dropped")
                if stream.options.policy == "latest":
                    self.place = frame_id  # the new frame keeps the stream's place in line
                return slot
        return None

    def _publish(self, slot: int, image: np.ndarray, height: int, width: int, capture_ns: int) -> None:
        stream = self.stream
        stream_frame_id = stream._next_id()
        try:
            self._publish_as(stream_frame_id, slot, image, height, width, capture_ns)
        except BaseException:
            stream._gap(stream_frame_id, "failed")  # every id issued comes out, as a result or a gap
            raise

    def _publish_as(self, stream_frame_id: int, slot: int, image: np.ndarray, height: int, width: int,
                    capture_ns: int) -> None:
        stream, pool = self.stream, self.pool
        frame_id, self.place = self.place, None
        if stream.options.policy == "latest":
            # Only the freshest frame waits: the older ones nobody took yet
            # go, and this one takes their place in the claim order. Claims
            # take the lowest frame id; a fresh id on every refresh would send
            # the stream to the back of the line each time, and the stream
            # whose frames happen to come a little earlier would win them all.
            while self.waiting:
                old_slot, old_frame_id, old_id, old_generation = self.waiting.popleft()
                if pool.table.take_back(old_slot, old_frame_id, old_generation):
                    stream._gap(old_id, "dropped")
                    pool.table.abort(old_slot)
                    frame_id = old_frame_id if frame_id is None else min(frame_id, old_frame_id)
        elif self.waiting:
            self._forget_claimed(pool.table)
        if frame_id is None:
            frame_id = next(self.ids)
        capture_ns = stream._checked_capture(capture_ns)
        route = stream._route(self.targets, frame_id, capture_ns)
        if route is None:  # no worker can finish it within its budget
            pool.table.abort(slot)
            stream._gap(stream_frame_id, "late")
            return
        generation = stream._publish_slot(pool, stream_frame_id, slot, image, height, width,
                                        capture_ns, frame_id, route)
        if stream.options.policy in ("drop-oldest", "latest"):
            # With its generation: a frame claimed by a worker that died after
            # putting its result is READY again with a newer one, and must not
            # be dropped (it has a result).
            self.waiting.append((slot, frame_id, stream_frame_id, generation))

    def _forget_claimed(self, table: Any) -> None:
        """drop-oldest: forget the frames workers have taken (claims go oldest
        first), so that ``_waiting`` never holds more than the slots do."""
        from aip._core.slot_table import READY

        while self.waiting:
            slot, frame_id, _, _ = self.waiting[0]
            if table.state(slot) == READY and table.frame_id(slot) == frame_id:
                break
            self.waiting.popleft()
        while len(self.waiting) > table.n_slots:
            self.waiting.popleft()



class _LiveFeed:
    """The reader's part for a camera or network stream: drain the
    connection into the stream's pending frames (encoded, undecoded); the
    run's admission thread decodes the ones it serves into slots."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def pump(self, source: Any, generation: int) -> None:
        """Drain a live source into pending frames until it ends or the stream stops."""
        stream = self.stream
        admission = stream._admission
        assert admission is not None  # start() gave a live stream the run's
        period_ns = int(1e9 / stream.options.fps) if stream.options.fps else 0
        next_due = 0
        on_this_connection = 0
        while not stream._stop.is_set():
            if stream.options.max_frames is not None and stream.issued >= stream.options.max_frames:
                return
            stream.reading_since = time.monotonic()
            try:
                grabbed = source.grab_frame()
            finally:
                stream.reading_since = None
            if generation != stream._generation:
                return  # left behind while it read
            if grabbed is None:
                return
            stream.metrics.frames_read += 1
            on_this_connection += 1
            if on_this_connection > 1:
                # Not on the first: that one was read as the source opened,
                # and a camera that has ended may still hand out its last
                # frame to each new connection: that is no recovery.
                stream._failures = 0
            if period_ns:  # the FPS cap: a live camera is thinned, never slowed down
                if grabbed.capture_ns < next_due:
                    continue
                # One frame a period; a frame up to half a period early is
                # on time (camera jitter), a late one moves the schedule on.
                next_due = max(next_due + period_ns, grabbed.capture_ns + period_ns // 2)
            self._offer(admission, grabbed)

    def _offer(self, admission: Admission, grabbed: GrabbedFrame) -> None:
        """Leave a grabbed frame pending, as the stream's policy says."""
        stream = self.stream
        policy = stream.options.policy
        limit = 1 if policy == "latest" else PENDING_LIMIT
        with admission.lock:
            if policy == "block":
                while len(stream.pending) >= limit:
                    if stream._stop.is_set():
                        raise _Stopped
                    stream.metrics.buffer_full_waits += 1
                    admission.lock.wait(SLOT_WAIT_S)
            elif policy == "drop-newest" and len(stream.pending) >= limit:
                stream._gap(stream._next_id(), "dropped")
                stream.metrics.decodes_skipped += 1
                return
            while len(stream.pending) >= limit:  # latest, drop-oldest: the oldest go, undecoded
                old_id, _ = stream.pending.popleft()
                stream._gap(old_id, "dropped")
                stream.metrics.decodes_skipped += 1
            stream.pending.append((stream._next_id(), grabbed))
            # All: a blocked reader may wait on the same condition as the admission thread.
            admission.lock.notify_all()


def _serve_grabbed(stream: Stream, pool: WorkerPool, targets: Targets, ids: Iterator[int],
               stream_frame_id: int, grabbed: GrabbedFrame) -> None:
    """Decode a pending frame of a live stream into a free
    slot and publish it (a frame that cannot be decoded is a failed gap;
    one no worker can finish within its latency budget a late gap, never
    decoded)."""
    table = pool.table
    capture_ns = stream._checked_capture(grabbed.capture_ns)
    frame_id = next(ids)
    route = stream._route(targets, frame_id, capture_ns)
    if route is None:
        stream._gap(stream_frame_id, "late")
        stream.metrics.decodes_skipped += 1
        return
    try:
        slot = int(table.acquire_free(timeout=SLOT_WAIT_S))
    except TimeoutError:  # files took every slot meanwhile: this frame is lost
        stream._gap(stream_frame_id, "dropped")
        return
    try:
        height, width = int(grabbed.shape[0]), int(grabbed.shape[1])
        assert pool.max_frame_shape is not None and pool.frames is not None  # started
        max_h, max_w, _ = pool.max_frame_shape
        if height > max_h or width > max_w:
            raise ValueError(f"frames are {width}x{height}, larger than the pipeline's slots "
                             f"({max_w}x{max_h}): pass max_frame_shape=(H, W, 3) big enough "
                             "for every stream")
        image = pool.frames.image(slot, height, width)
        grabbed.write_into(image)
        if grabbed.needs_decode:
            stream.metrics.frames_decoded += 1
        stream._publish_slot(pool, stream_frame_id, slot, image, height, width, capture_ns,
                           frame_id, route)
    except BaseException as error:
        _abort_quietly(table, slot)
        stream._gap(stream_frame_id, "failed")
        log.warning("stream %s: frame %d failed: %s", redact(stream.name), stream_frame_id,
                    redact(str(error)))


class _Stopped(Exception):
    """The stream was stopped while its reader waited for a slot."""



def _abort_quietly(table: Any, slot: int) -> None:
    from aip.ring import RingError

    try:
        table.abort(slot)
    except RingError:
        pass  # published after all: the frame goes on


def new_frame_ids(start: int) -> Iterator[int]:
    """Frame ids unique over the pipeline's life, shared by every reader
    (``next`` on an itertools.count is atomic under the GIL)."""
    return itertools.count(start)
