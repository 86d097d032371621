"""Admission: which live stream's frame takes the next slot, and when.

    camera reader threads (one per live stream)       admission thread (one per run)
    -------------------------------------------       ------------------------------
    grab -> stamp -> pending (the stream's policy) --> in flight < target?  pick a stream:
    (never holds a slot; MJPEG stays encoded)          fresh frames first, then the one
                                                       served least (weighted by priority)
                                                       -> FREE slot -> decode into it -> publish

A live reader never takes a slot: it drains its camera's connection as fast
as frames come (so nothing queues in the socket or the decoder, and a frame
is stamped when it reached the process) and leaves what it grabbed
*pending* in its own memory. Under ``latest`` a newer frame replaces the
pending one, which is then never decoded. This thread keeps only as many
frames in the slots as the workers are about to take (``in_flight_target``:
what they hold plus what waits for them), so a frame waits for a worker in
its camera's pending place, where a fresher one can still replace it, not
in a slot where it ages.

Which stream goes next is deficit round robin over the streams with a frame
pending, each served frame costing ``1 / priority``, with freshness first:
among frames younger than ``FRESH_SERVICE_TIMES`` service times the one of
the stream served least goes. The least-served stream's older frame goes
instead when it has fallen ``MAX_LAG`` frames behind (and its frame is not
twice that old), or when no frame is fresh and a worker would otherwise
idle; while a frame still waits for the workers, a fresh one may come first. Serving least-served-first alone would pick, under overload,
the stream whose pending frame has waited longest; freshness first keeps
the age of what is served near one service time while each camera still
gets its share. A stream that joins starts level with the least-served
stream, not at zero (it would take every frame until it caught up).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aip.pipeline.pool import WorkerPool
    from aip.pipeline.targets import Targets

log = logging.getLogger("aip.pipeline")

# A pending frame younger than this many (per-frame) service times is fresh.
# Smaller keeps ages lower but gives fewer streams to choose from at each
# pick (fairness suffers below one service time: measured in a model of 20
# to 100 cameras at 1.5x capacity); larger lets older frames through.
FRESH_SERVICE_TIMES = 1.5
# How far (in frames / priority) a stream may fall behind the one served
# before its older frame goes anyway: bounds the unfairness freshness costs
# when a camera's frames keep coming just after the picks.
MAX_LAG = 2.0
# Until the first result tells the real figure.
DEFAULT_SERVICE_S = 0.05
# Weight of a new per-frame service time in its running mean.
SERVICE_EWMA = 0.1
# Longest the thread sleeps before it looks at the slots again while frames
# are pending but the workers have enough: a worker frees its slot just
# after the run loop sees its result, so the loop's nudge can come a hair
# early; this bounds what that costs.
RECHECK_S = 0.002
# Longest it sleeps with nothing pending (a new frame wakes it at once).
IDLE_S = 0.1


class _Share(Protocol):
    @property
    def priority(self) -> float: ...
    @property
    def policy(self) -> str: ...


class Stream(Protocol):
    """What the admission needs of a live stream (:class:`aip.pipeline.streams.Stream`
    is one): its pending frames, its service credit, and a way to serve one.
    A protocol, so that streams import the admission and not the reverse."""

    name: str
    pending: deque[tuple[int, Any]]  # (stream frame id, GrabbedFrame), oldest first
    credit: float
    finished: bool

    @property
    def options(self) -> _Share: ...

    def serve_grabbed(self, pool: WorkerPool, targets: Targets, ids: Iterator[int],
                      stream_frame_id: int, grabbed: Any) -> None: ...


class Admission:
    """The admission thread of one run, and the lock every pending frame is under."""

    def __init__(self, pool: WorkerPool, targets: Targets, ids: Iterator[int],
                 in_flight_target: Callable[[], int]) -> None:
        self.pool = pool
        self.targets = targets
        self.ids = ids
        self.in_flight_target = in_flight_target
        self.lock = threading.Condition()  # guards every stream's pending frames and credit
        self.service_s = DEFAULT_SERVICE_S
        self.decode_cpu_s = 0.0  # this thread's CPU: decoding (and copying) live frames
        self._streams: list[Stream] = []
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- from other threads ----------------------------------------------------------

    def add(self, stream: Stream) -> None:
        with self.lock:
            credits = [s.credit for s in self._streams if not s.finished]
            stream.credit = min(credits) if credits else 0.0
            self._streams.append(stream)

    def nudge(self) -> None:
        """Something changed: a frame is pending, or a slot may be free."""
        if not self._streams:
            return  # no live stream: nothing waits for a slot (the list is read without the lock)
        with self.lock:
            self.lock.notify_all()  # blocked readers wait on it too: the thread must hear it

    def observe_service(self, seconds: float) -> None:
        """A worker took ``seconds`` for one frame (the run loop's figure)."""
        if seconds > 0:
            self.service_s += SERVICE_EWMA * (seconds - self.service_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aip-admission", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self.lock:
            self._stop = True
            self.lock.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)

    # ---- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        cpu_start = time.thread_time()
        try:
            while True:
                with self.lock:
                    if self._stop:
                        return
                    pick = self._pick()
                    if pick is None:
                        pending = any(s.pending for s in self._streams)
                        self.lock.wait(RECHECK_S if pending else IDLE_S)
                        continue
                    stream, (stream_frame_id, grabbed) = pick
                try:
                    stream.serve_grabbed(self.pool, self.targets, self.ids, stream_frame_id, grabbed)
                except Exception:  # noqa: BLE001 - one stream's failure must not stop the others
                    log.exception("stream %s: publishing a frame failed", stream.name)
                finally:
                    self.decode_cpu_s = time.thread_time() - cpu_start
        finally:
            self.decode_cpu_s = time.thread_time() - cpu_start

    def _pick(self) -> tuple[Stream, tuple[int, Any]] | None:
        """Under the lock: the next stream's oldest pending frame, taken out,
        or None (nothing pending, or the workers have enough)."""
        if any(s.finished and not s.pending for s in self._streams):
            self._streams = [s for s in self._streams if s.pending or not s.finished]  # gone for good
        candidates = [s for s in self._streams if s.pending]
        if not candidates:
            return None
        table = self.pool.table
        if table is None:
            return None
        counts = table.counts()
        if counts["FREE"] == 0 or (counts["READY"] + counts["READING"] + counts["WRITING"]
                                   >= self.in_flight_target()):
            return None
        now = time.perf_counter_ns()
        horizon = FRESH_SERVICE_TIMES * self.service_s * 1e9
        # A stream whose reader has ended has no fresher frame to come: its
        # last ones count as fresh, so that it completes.
        fresh = [s for s in candidates if s.finished or now - s.pending[0][1].capture_ns <= horizon]
        behind = min(candidates, key=_least_served_freshest)
        if not fresh:
            if counts["READY"] + counts["WRITING"]:
                return None  # a frame still waits for the workers: a fresh one may come first
            stream = behind  # else a worker would idle: the least-served stream's older frame
        else:
            stream = min(fresh, key=_least_served_freshest)
            if (behind.credit <= stream.credit - MAX_LAG
                    and now - behind.pending[0][1].capture_ns <= 2 * horizon):
                stream = behind  # fallen behind for want of a fresh frame: its share first
        stream.credit += 1.0 / stream.options.priority
        if stream.options.policy == "block":
            self.lock.notify_all()  # its reader may wait for room in its pending frames
        return stream, stream.pending.popleft()


def _least_served_freshest(stream: Stream) -> tuple[float, int]:
    return stream.credit, -stream.pending[0][1].capture_ns
